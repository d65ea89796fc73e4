"""Helpers shared by the stage training scripts: data in memory, augmentation, logging, checkpoints.

Kept small on purpose: the bundled dataset is a few dozen 120-px tiles, so everything lives in
memory as tensors and a training step is "sample tiles, crop, flip, forward, backward".
The test split is never loaded here: it is for the final report only.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from gac_pipeline.bands import S2L2A_BANDS
from gac_pipeline.data import PairDataset, list_pairs, scene_clusters
from gac_pipeline.metrics import psnr, sar_edge_agreement, ssim
from gac_pipeline.tiling import crop_pads, pad_to_multiple

TRAINING_SPLITS = ("train", "validation")  # the only splits a training script may read
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.csv"


def data_folder(text: str) -> Path:
    """The ``--data`` option's type: an existing folder, else one line from argparse before any work."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return Path(text)


def seed_all(seed: int, *, deterministic: bool = True) -> torch.Generator:
    """Seed ``random``, numpy and torch, and return a dedicated torch generator for sampling.

    A separate generator for batch sampling/augmentation keeps the data order independent of
    whatever else draws random numbers (model init, dropout), and its state is a plain tensor
    that a checkpoint can store and restore.

    Args:
        seed: The seed.
        deterministic: Ask torch for deterministic kernels (warn only where none exists).

    Returns:
        A ``torch.Generator`` seeded with ``seed``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


@dataclass
class TileSet:
    """Tiles of one split held in memory.

    Attributes:
        s1: (N, 2, H, W) float32 SAR in dB.
        s2: (N, 12, H, W) float32 S2L2A digital numbers.
        month: (N,) int64 acquisition month, 0 when unknown.
        biome: (N,) int64 index into ``gac_pipeline.data.BIOMES``.
        names: Pair folder names.
    """

    s1: torch.Tensor
    s2: torch.Tensor
    month: torch.Tensor
    biome: torch.Tensor
    names: list[str]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. opt_v1 (N, 12, H, W), augmented alike

    def __len__(self) -> int:
        return len(self.names)

    def s2_mean(self) -> torch.Tensor:
        """Per-band mean DN (12,) over every tile: the training-mean image a model starts from."""
        return self.s2.mean(dim=(0, 2, 3))

    def subset(self, index: list[int]) -> TileSet:
        """The tiles at ``index``, in that order."""
        return TileSet(self.s1[index], self.s2[index], self.month[index], self.biome[index],
                       [self.names[i] for i in index], {k: v[index] for k, v in self.extras.items()})

    def with_extra(self, name: str, values: torch.Tensor) -> TileSet:
        """A copy with one more per-tile tensor (same N, H, W as the tiles)."""
        if values.shape[0] != len(self) or values.shape[-2:] != self.s2.shape[-2:]:
            raise ValueError(f"{name}: shape {tuple(values.shape)} does not match {len(self)} tiles of "
                             f"{tuple(self.s2.shape[-2:])}")
        return TileSet(self.s1, self.s2, self.month, self.biome, self.names, {**self.extras, name: values})


def load_split(root: str | Path, split: str, *, clear_only: bool = True) -> TileSet:
    """Read every pair of a training split into memory.

    Args:
        root: Dataset folder with pair folders and an ``index.csv`` giving the splits.
        split: "train" or "validation" ("val" accepted). "test" is refused.
        clear_only: Keep only pairs the index marks ``clear_land`` (no cloud, snow or open water); a
            cloudy target teaches SAR -> cloud, which SAR cannot see.

    Returns:
        The split as a :class:`TileSet`.

    Raises:
        ValueError: The split is test (or unknown), or it has no pairs in ``root``.
    """
    wanted = {"val": "validation"}.get(split, split)
    if wanted not in TRAINING_SPLITS:
        raise ValueError(f"training reads only {' and '.join(TRAINING_SPLITS)}, not {split!r}")
    pairs = list_pairs(root, wanted, clear_only=clear_only)
    if not pairs:
        raise ValueError(f"{root}: no {'clear ' if clear_only else ''}{wanted} pairs (is there an index.csv?)")
    items = [item for item in PairDataset(pairs)]
    return TileSet(
        s1=torch.stack([item["s1"] for item in items]).float(),
        s2=torch.stack([item["s2"] for item in items]).float(),
        month=torch.tensor([item["month"] for item in items], dtype=torch.long),
        biome=torch.tensor([item["biome"] for item in items], dtype=torch.long),
        names=[item["name"] for item in items],
    )


def load_pool(root: str | Path, *, clear_only: bool = True) -> TileSet:
    """Every pair training may read (train and validation splits), sorted by name.

    Cross-validation deals these into folds grouped by scene (``training.cv``); the final fit
    trains on all of them. The test split is never read.
    """
    train, validation = (load_split(root, split, clear_only=clear_only) for split in TRAINING_SPLITS)
    both = TileSet(torch.cat([train.s1, validation.s1]), torch.cat([train.s2, validation.s2]),
                   torch.cat([train.month, validation.month]), torch.cat([train.biome, validation.biome]),
                   train.names + validation.names)
    return both.subset(sorted(range(len(both)), key=lambda i: both.names[i]))


def save_outputs(directory: str | Path, name: str, images: dict[str, torch.Tensor], manifest: dict) -> Path:
    """Store per-tile model outputs (e.g. out-of-fold ``opt_v1``) for a later stage to train on.

    Writes ``<directory>/<name>.safetensors`` (one (12, H, W) DN tensor per tile name) and
    ``<directory>/<name>_manifest.json`` (which model produced each tile, and what was left out).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in images.items()}, directory / f"{name}.safetensors")
    (directory / f"{name}_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory / f"{name}.safetensors"


def attach(tiles: TileSet, directory: str | Path, name: str) -> TileSet:
    """The tiles with stored outputs (:func:`save_outputs`) as the ``name`` extra; error if any is missing."""
    path = Path(directory) / f"{name}.safetensors"
    if not path.is_file():
        per_pair = f"; {Path(directory) / name} holds one file per pair: add --stream" if (
            Path(directory) / name).is_dir() else ""
        raise FileNotFoundError(f"{path}: no stored {name} (written by training.train_mini's cross-validation "
                                f"or training.precompute_stage1){per_pair}")
    stored = load_file(path)
    missing = [n for n in tiles.names if n not in stored]
    if missing:
        raise ValueError(f"{path}: no {name} for {len(missing)} tiles (e.g. {missing[0]})")
    return tiles.with_extra(name, torch.stack([stored[n] for n in tiles.names]))


def augment(tensors: list[torch.Tensor], crop: int | None, generator: torch.Generator) -> list[torch.Tensor]:
    """Apply the same random crop, rot90 and flip to every (C, H, W) tensor of one sample.

    SAR and optical must move together, or the model learns from misaligned pairs.

    Args:
        tensors: Tensors sharing H and W (e.g. SAR and the optical target).
        crop: Side of the square random crop, or None for the full tile.
        generator: Source of randomness.

    Returns:
        The augmented tensors, in the same order.
    """
    height, width = tensors[0].shape[-2:]
    if crop is not None:
        if crop > min(height, width):
            raise ValueError(f"crop {crop} is larger than the tile ({height}x{width})")
        top = int(torch.randint(0, height - crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - crop + 1, (1,), generator=generator))
        tensors = [t[..., top : top + crop, left : left + crop] for t in tensors]
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    out = []
    for t in tensors:
        t = torch.rot90(t, turns, dims=(-2, -1))
        out.append(torch.flip(t, dims=(-1,)) if flip else t)
    return out


def sample_batch(tiles: TileSet, batch_size: int, crop: int | None, generator: torch.Generator) -> dict:
    """Draw ``batch_size`` random tiles (with replacement) and augment each independently.

    Returns:
        {"s1": (B, 2, crop, crop), "s2": (B, 12, crop, crop), "month": (B,), "biome": (B,),
        "uniform": (B, 2) uniform draws} plus one entry per extra tensor of the tile set, cropped
        and turned with its tile.
    """
    index = torch.randint(0, len(tiles), (batch_size,), generator=generator)
    keys = ["s1", "s2", *tiles.extras]
    sources = [tiles.s1, tiles.s2, *tiles.extras.values()]
    samples = [augment([source[i] for source in sources], crop, generator) for i in index.tolist()]
    # contiguous: rot90/flip return views with odd strides, slower in the convolutions
    batch = {key: torch.stack([sample[k] for sample in samples]).contiguous() for k, key in enumerate(keys)}
    # Per-sample draws for a script's own random choices (e.g. conditioning dropout), from the same
    # per-step generator, so a resumed run makes the same choices.
    uniform = torch.rand(batch_size, 2, generator=generator)
    return {**batch, "month": tiles.month[index], "biome": tiles.biome[index], "uniform": uniform}


def paste_blobs(batch: dict, chance: float, generator: torch.Generator, donor: dict | None = None) -> dict:
    """Paired copy-paste: per sample, with probability ``chance``, an ellipse of a donor crop replaces
    the same pixels in every image of the sample (SAR, optical and extras together, so the pair stays
    consistent).

    The ellipse has a uniform centre, semi-axes of 12-37% of the crop side and a random angle. New
    shapes and boundaries the tiles alone rarely show (a lake's shore across a field) teach the model
    to follow the SAR's edges instead of painting the scene's average.

    Args:
        batch: From :func:`sample_batch`; image entries are (B, C, H, W).
        chance: Probability per sample (0 leaves the batch and the generator untouched).
        generator: Source of randomness.
        donor: A batch of the same shape to take the ellipses from (e.g. crops of :func:`calm_water`
            tiles); default: the batch itself, each sample taking from the next one.

    Returns:
        A new batch dict; entries that are not images (month, biome, uniform) are unchanged.
    """
    if not chance:
        return batch
    images = [key for key, value in batch.items() if value.ndim == 4]
    size, height, width = len(batch["s1"]), *batch["s1"].shape[-2:]
    draws = torch.rand(size, 6, generator=generator)
    rows = torch.arange(height).view(-1, 1) + 0.5
    cols = torch.arange(width).view(1, -1) + 0.5
    masks = []
    for apply, centre_y, centre_x, axis_a, axis_b, angle in draws.tolist():
        cos, sin = np.cos(np.pi * angle), np.sin(np.pi * angle)
        dy, dx = rows - centre_y * height, cols - centre_x * width
        along, across = dx * cos + dy * sin, -dx * sin + dy * cos
        a, b = min(height, width) * (0.12 + 0.25 * axis_a), min(height, width) * (0.12 + 0.25 * axis_b)
        masks.append((apply < chance) & ((along / a) ** 2 + (across / b) ** 2 <= 1))
    mask = torch.stack(masks).unsqueeze(1)  # (B, 1, H, W)
    source = donor if donor is not None else {key: batch[key].roll(-1, dims=0) for key in images}
    return {**batch, **{key: torch.where(mask, source[key], batch[key]) for key in images}}


def calm_water(tiles: TileSet, *, min_water: float = 0.9, max_vv_db: float = -20.0) -> TileSet:
    """The tiles that are open water (NDWI > 0 on at least ``min_water`` of the pixels) with SAR as dark
    as calm water (VV median below ``max_vv_db``): donors for :func:`paste_blobs`.

    Wind-roughened sea is bright in VV (-12..-17 dB on the bundled tiles): pasted over land it would
    teach "bright SAR is water", the opposite of what a lake looks like.
    """
    green, nir = tiles.s2[:, S2L2A_BANDS.index("B03")], tiles.s2[:, S2L2A_BANDS.index("B08")]
    water = ((green - nir) / (green + nir).clamp(min=1e-6) > 0).float().mean(dim=(1, 2))
    vv = tiles.s1[:, 0].flatten(1).median(dim=1).values
    return tiles.subset([i for i in range(len(tiles)) if water[i] >= min_water and vv[i] < max_vv_db])


def water_donors(root: str | Path, held_out: TileSet | None = None) -> TileSet:
    """The :func:`calm_water` tiles of the pool (clear_land or not), less any that share a scene
    cluster with ``held_out`` (a fold run's held-out tiles), so no fold trains on its held-out scenes."""
    donors = calm_water(load_pool(root, clear_only=False))
    if held_out is None:
        return donors
    clusters = scene_clusters(held_out.names + donors.names)
    held = set(clusters[: len(held_out)])
    return donors.subset([i for i, c in enumerate(clusters[len(held_out):]) if c not in held])


@torch.no_grad()
def predict_tiles(predict: Callable[..., torch.Tensor], *images: torch.Tensor, batch_size: int = 8,
                  device: torch.device | str = "cpu", **per_tile: torch.Tensor) -> torch.Tensor:
    """Run a model on full tiles: pad symmetrically to a multiple of 16, crop the same pixels back.

    Args:
        predict: Maps padded (B, C, H', W') image batches (positional, in the order given) and the
            per-tile keyword tensors to (B, 12, H', W') DN.
        images: (N, C, H, W) image inputs at tile size, all with the same H, W.
        batch_size: Tiles per forward pass.
        device: Where the model runs; results come back on the CPU.
        per_tile: (N,) tensors passed by keyword (e.g. month, biome).

    Returns:
        (N, 12, H, W) predictions.
    """
    outputs = []
    for start in range(0, len(images[0]), batch_size):
        window = slice(start, start + batch_size)
        padded = [pad_to_multiple(image[window].to(device)) for image in images]
        kwargs = {k: v[window].to(device) for k, v in per_tile.items()}
        prediction = predict(*[p for p, _ in padded], **kwargs)
        outputs.append(crop_pads(prediction, padded[0][1]).float().cpu())
    return torch.cat(outputs)


def score(pred_dn: torch.Tensor, target_dn: torch.Tensor, s1_db: torch.Tensor | None = None) -> dict[str, float]:
    """PSNR (one pooled MSE) and mean SSIM on the four 10 m bands B02, B03, B04, B08; with the
    SAR, also the mean SAR-edge agreement of the predictions (``sar_edge``) and of the real
    tiles (``sar_edge_real``), and the mean per-tile gap between the two (``sar_edge_gap``)."""
    pred, target = pred_dn.detach().cpu().float().numpy(), target_dn.cpu().numpy()
    scores = {"psnr": psnr(pred, target), "ssim": ssim(pred, target)}
    if s1_db is not None:
        sar = s1_db.cpu().numpy()
        edges = np.array([sar_edge_agreement(p, s) for p, s in zip(pred, sar, strict=True)])
        real = np.array([sar_edge_agreement(t, s) for t, s in zip(target, sar, strict=True)])
        scores["sar_edge"] = finite_mean(edges)
        scores["sar_edge_real"] = finite_mean(real)
        scores["sar_edge_gap"] = finite_mean(np.abs(edges - real))
    return scores


def finite_mean(values: np.ndarray) -> float:
    """Mean over finite values; nan when there are none (e.g. constant images have no edges)."""
    finite = np.isfinite(values)
    return float(values[finite].mean()) if finite.any() else float("nan")


def describe(base: str, stage: str, summary: str) -> str:
    """A pipeline description made of ``"stage K: ..."`` parts, the one for ``stage`` replaced.

    Anything else in ``base`` (e.g. "random init") is dropped: the parts say what each stage is.
    """
    parts = [p for p in base.split(" | ") if p.startswith("stage ") and not p.startswith(f"stage {stage}:")]
    return " | ".join(sorted([*parts, f"stage {stage}: {summary}"]))


class CsvLogger:
    """Append rows to a CSV file, writing the header only when the file is new (resume appends).

    Args:
        path: The CSV file.
        fields: Column names; rows may leave columns out (written empty).
    """

    def __init__(self, path: str | Path, fields: list[str]):
        self.path = Path(path)
        self.fields = fields
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            with open(self.path, "w", newline="") as file:
                csv.DictWriter(file, fieldnames=fields).writeheader()

    def log(self, **row) -> None:
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, fieldnames=self.fields).writerow(
                {k: _fmt(v) for k, v in row.items()})


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def progress(start: int, stop: int, desc: str, *, disable: bool = False) -> tqdm:
    """Steps ``start + 1 .. stop`` as a tqdm bar that counts resumed steps as already done."""
    return tqdm(range(start + 1, stop + 1), initial=start, total=stop, desc=desc, dynamic_ncols=True,
                disable=disable)


def save_checkpoint(path: str | Path, **state) -> None:
    """Write a resumable training state with ``torch.save``.

    Only tensors, dicts, lists, numbers and strings go in, so :func:`load_checkpoint` can read
    it back with ``weights_only=True`` (no arbitrary unpickling). Written to a temporary file
    first so an interrupted save never leaves a corrupt checkpoint behind.

    Args:
        path: The ``.pt`` file.
        **state: e.g. model, optimizer, scheduler (state dicts), step, best_score, best_model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's weights."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the parameters that train: all that changes during training (the
    models here keep no running statistics), and loadable into an int8-quantized backbone,
    whose frozen weights cannot be loaded back on the CPU. Load with ``strict=False``."""
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}



def write_pipeline(args, trained: dict, key: str, summary: str) -> Path:
    """Save ``--init-from``'s pipeline with the stages in ``trained`` replaced, labelled honestly.

    Args:
        args: Script options (``init_from``, ``out``, ``work_dir``).
        trained: Stage key ("1", "2", "3") -> the trained stage module.
        key: The stage this script trained; its description part becomes ``summary``.
        summary: What was trained on what.

    Returns:
        The pipeline folder.
    """
    from gac_pipeline.configs import PipelineConfig
    from gac_pipeline.pipeline import GACPipeline
    from gac_pipeline.presets import load_preset

    base = load_preset(str(args.init_from))
    stages = {"1": base.stage1, "2": base.stage2, "3": base.stage3, **trained}
    for stage in trained.values():
        stage.config.trained = True
    description = describe(base.config.description, key, summary)
    for name, stage in stages.items():
        if not stage.config.trained:
            description = describe(description, name, f"not trained (from {args.init_from})")
    config = PipelineConfig(**{**base.config.to_dict(), "description": description, "files": {},
                               "trained": all(s.config.trained for s in stages.values())})
    out = GACPipeline(stages["1"], stages["2"], stages["3"], config).save_pretrained(args.out)
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.work_dir) / "args.json").write_text(json.dumps(
        {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, indent=2, sort_keys=True))
    return out
