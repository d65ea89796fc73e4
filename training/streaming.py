"""Training data read from disk on demand, for datasets too large to hold in memory (e.g. all of reBEN).

The bundled tiles train from memory (``common.load_pool`` + ``common.sample_batch``): that path
is what reproduces the shipped GAC-mini weights and is left as it is. Streaming is used for a
reBEN folder (one with ``metadata.parquet``, found by itself) or, with ``--stream``, for a
pair-folder dataset:

- :class:`StreamingPairs` is a map-style dataset: each access reads one pair from its GeoTIFFs
  (and, for stages 2 and 3, the pair's stored ``opt_v1`` or ``opt_v2``: one file per pair, see
  :func:`stored_file`) and crops, turns and flips them together with :func:`common.augment`,
  from a generator seeded by the sample's key, so the augmentation does not depend on which
  worker or rank reads it;
- :func:`batches` draws the keys with a ``DistributedSampler`` (each ``torchrun`` rank a disjoint
  share of every epoch) and reads them with ``DataLoader`` workers, endlessly, starting at any
  batch number so that ``--resume`` continues exactly where the run stopped.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from gac_pipeline.data import PairDataset, RebenDataset, biome_index, list_pairs, reben_metadata
from training import common

MEAN_SAMPLE = 64  # pairs read to estimate the training-mean image a model starts from


def stored_file(directory: str | Path, name: str, pair: str) -> Path:
    """Where one pair's stored stage output lives: ``<directory>/<name>/<pair>.safetensors``.

    ``directory`` is what ``--opt-v1``/``--opt-v2`` name (``training.precompute_stage1``'s
    ``--out``); the file holds one (12, H, W) float32 DN tensor called ``name``.
    """
    return Path(directory) / name / f"{pair}.safetensors"


def write_stored(directory: str | Path, name: str, pair: str, image: torch.Tensor) -> None:
    """Store one pair's output (:func:`stored_file`), through a temporary file: a killed run
    leaves no partial file behind for a resumed one to take as done."""
    path = stored_file(directory, name, pair)
    tmp = path.with_suffix(".tmp")
    save_file({name: image.float().contiguous()}, tmp)
    tmp.replace(path)


def read_stored(directory: str | Path, name: str, pair: str) -> torch.Tensor:
    """One pair's stored output (:func:`stored_file`).

    Raises:
        FileNotFoundError: None is stored for the pair.
    """
    path = stored_file(directory, name, pair)
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no stored {name} for pair {pair} "
                                f"(write it with training.precompute_stage1)")
    return load_file(path)[name]


def stored_producer(directory: str | Path, name: str) -> str:
    """What produced the stored outputs, from their manifest (``<directory>/<name>_manifest.json``)."""
    path = Path(directory) / f"{name}_manifest.json"
    return json.loads(path.read_text()).get("producer", "unknown") if path.is_file() else "unknown"


class StreamingPairs(Dataset):
    """Pairs of a map-style dataset, augmented per access; nothing is kept between accesses.

    Args:
        source: ``PairDataset`` or ``RebenDataset`` (items with ``s1``, ``s2``, ``month``, ``biome``, ``name``).
        crop: Side of the random crop (None: the whole tile).
        seed: Run seed; with the key it seeds each sample's augmentation.
        stored: Stored stage outputs to attach, name (e.g. ``opt_v1``) -> directory holding one
            file per pair (:func:`stored_file`); each is cropped and turned with its pair.

    Keys are ``epoch * len(source) + index`` (see :class:`EpochSampler`); an item is a dict of
    ``s1`` (2, crop, crop), ``s2`` (12, crop, crop), one (12, crop, crop) entry per stored
    output, ``month``, ``biome`` and ``uniform`` (2,) draws: the per-sample fields of
    :func:`common.sample_batch`.

    Raises:
        FileNotFoundError: A stored output's folder does not exist.
    """

    def __init__(self, source: Dataset, crop: int | None, seed: int, stored: dict[str, Path] | None = None):
        self.source, self.crop, self.seed, self.stored = source, crop, seed, dict(stored or {})
        for name, directory in self.stored.items():
            if not (Path(directory) / name).is_dir():
                raise FileNotFoundError(f"{Path(directory) / name}: no folder of stored {name}, one file per pair "
                                        "(training.precompute_stage1 writes it for a reBEN folder or with --stream)")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int) -> dict:
        item = self.source[key % len(self.source)]
        extras = {name: read_stored(directory, name, item["name"]) for name, directory in self.stored.items()}
        for name, image in extras.items():
            if image.shape != item["s2"].shape:
                raise ValueError(f"{self.stored[name]}: stored {name} of pair {item['name']} is "
                                 f"{tuple(image.shape)}, its pair {tuple(item['s2'].shape)}")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + key)
        s1, s2, *turned = common.augment([item["s1"], item["s2"], *extras.values()], self.crop, generator)
        return {"s1": s1.contiguous(), "s2": s2.contiguous(),
                **{name: image.contiguous() for name, image in zip(extras, turned, strict=True)},
                "month": item["month"], "biome": item["biome"], "uniform": torch.rand(2, generator=generator)}

    @property
    def month(self) -> torch.Tensor:
        """(N,) acquisition month of every pair (0: unknown), as ``TileSet.month``; from the listing,
        reading a pair folder only where the listing has none."""
        if isinstance(self.source, RebenDataset):
            return torch.from_numpy(self.source.months)
        return torch.tensor([info.month or self.source[i]["month"] for i, info in enumerate(self.source.pairs)])

    @property
    def biome(self) -> torch.Tensor:
        """(N,) biome index of every pair, as ``TileSet.biome``, from the listing."""
        if isinstance(self.source, RebenDataset):
            return torch.from_numpy(self.source.biomes)
        return torch.tensor([biome_index(info.biome) for info in self.source.pairs])

    def s2_mean(self, count: int = MEAN_SAMPLE) -> torch.Tensor:
        """Per-band mean DN (12,) of ``count`` evenly spaced whole tiles: the training-mean estimate."""
        step = max(len(self) // count, 1)
        return torch.stack([self.source[i]["s2"].mean(dim=(1, 2)) for i in range(0, len(self), step)]).mean(dim=0)


def wanted(args) -> bool:
    """Whether a script streams its data: a reBEN folder, or ``--stream``."""
    return args.stream or reben_metadata(args.data) is not None


def open_source(root: str | Path, *, clear_only: bool = True) -> PairDataset | RebenDataset:
    """Every pair training may read (train and validation splits), unaugmented, sorted by name.

    Args:
        root: A reBEN folder (``metadata.parquet`` or ``metadata.csv``) or a pair-folder dataset.
        clear_only: Keep only cloud- and snow-free pairs.

    Raises:
        ValueError: No such pairs.
    """
    if reben_metadata(root) is not None:
        source = RebenDataset(root, common.TRAINING_SPLITS, clear_only=clear_only)
    else:
        pairs = [p for split in common.TRAINING_SPLITS for p in list_pairs(root, split, clear_only=clear_only)]
        source = PairDataset(sorted(pairs, key=lambda p: p.name))
    if not len(source):
        raise ValueError(f"{root}: no {'clear ' if clear_only else ''}train or validation pairs")
    return source


def pair_names(source: PairDataset | RebenDataset) -> list[str]:
    """The name of every pair of :func:`open_source` (the key of its stored outputs), without reading any."""
    if isinstance(source, RebenDataset):
        return source.patch_ids.tolist()
    return [info.name for info in source.pairs]


def open_pool(root: str | Path, *, crop: int | None, seed: int, clear_only: bool = True,
              stored: dict[str, Path] | None = None) -> StreamingPairs:
    """:func:`open_source` as :class:`StreamingPairs` (``crop``, ``seed``, ``stored`` as there)."""
    return StreamingPairs(open_source(root, clear_only=clear_only), crop, seed, stored)


def open_training_data(args, stored: dict[str, Path] | None = None) -> StreamingPairs:
    """:func:`open_pool` for a training script's options (``--data``, ``--crop``, ``--seed``, ``--all-tiles``).

    Raises:
        ValueError: ``--fold``: cross-validation folds hold their tiles in memory and do not stream.
    """
    if args.fold is not None:
        raise ValueError("--fold: cross-validation runs on tiles in memory; streaming trains on the whole pool")
    return open_pool(args.data, crop=args.crop, seed=args.seed, clear_only=not args.all_tiles, stored=stored)


class EpochSampler(DistributedSampler):
    """A ``DistributedSampler`` whose keys carry the epoch (``epoch * N + index``) and which can
    start part-way through an epoch (``skip`` samples of this rank's share)."""

    skip = 0

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * len(self.dataset)
        return (offset + index for index in itertools.islice(super().__iter__(), self.skip, None))

    def __len__(self) -> int:
        return super().__len__() - self.skip


def batches(data: StreamingPairs, *, batch_size: int, workers: int, rank: int, world_size: int, seed: int,
            start: int = 0) -> Iterator[dict]:
    """Endless batches for this rank, from batch number ``start`` on (0 for a fresh run).

    Each epoch is reshuffled (same order on every rank, each rank its own share); incomplete
    batches at an epoch's end are dropped, so every rank takes the same number of steps.

    Raises:
        ValueError: Fewer pairs than one batch per rank.
    """
    sampler = EpochSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    per_epoch = len(sampler) // batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(data)} pairs cannot make one batch of {batch_size} on each of {world_size} processes")
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    epoch, done = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        sampler.skip = done * batch_size
        yield from loader
        epoch, done = epoch + 1, 0
