"""Helpers shared by the stage training scripts: data in memory, augmentation, logging, checkpoints.

Kept small on purpose: the bundled dataset is a few dozen 120-px tiles, so everything lives in
memory as tensors and a training step is "sample tiles, crop, flip, forward, backward".
The test split is never loaded here: it is for the final report only.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gac_pipeline.data import PairDataset, list_pairs
from gac_pipeline.metrics import psnr, ssim
from gac_pipeline.tiling import crop_pads, pad_to_multiple

TRAINING_SPLITS = ("train", "validation")  # the only splits a training script may read
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.csv"


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

    def __len__(self) -> int:
        return len(self.names)

    def head(self, count: int | None) -> TileSet:
        """The first ``count`` tiles (all when None), e.g. a quick validation in smoke runs."""
        if count is None:
            return self
        return TileSet(self.s1[:count], self.s2[:count], self.month[:count], self.biome[:count], self.names[:count])


def load_split(root: str | Path, split: str, *, clear_only: bool = True) -> TileSet:
    """Read every pair of a training split into memory.

    Args:
        root: Dataset folder with pair folders and an ``index.csv`` giving the splits.
        split: "train" or "validation" ("val" accepted). "test" is refused.
        clear_only: Keep only pairs the index marks ``clear_land`` (no cloud/snow); a cloudy
            target teaches SAR -> cloud, which SAR cannot see.

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
        {"s1": (B, 2, crop, crop), "s2": (B, 12, crop, crop), "month": (B,), "biome": (B,)}
    """
    index = torch.randint(0, len(tiles), (batch_size,), generator=generator)
    s1, s2 = [], []
    for i in index.tolist():
        a, b = augment([tiles.s1[i], tiles.s2[i]], crop, generator)
        s1.append(a)
        s2.append(b)
    # contiguous: rot90/flip return views with odd strides, slower in the convolutions
    return {"s1": torch.stack(s1).contiguous(), "s2": torch.stack(s2).contiguous(),
            "month": tiles.month[index], "biome": tiles.biome[index]}


@torch.no_grad()
def predict_tiles(predict: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                  batch_size: int = 8) -> torch.Tensor:
    """Run a model on full tiles: pad symmetrically to a multiple of 16, crop the same pixels back.

    Args:
        predict: Maps a padded (B, C, H', W') batch to (B, 12, H', W') DN.
        inputs: (N, C, H, W) model inputs at tile size.
        batch_size: Tiles per forward pass.

    Returns:
        (N, 12, H, W) predictions.
    """
    outputs = []
    for start in range(0, len(inputs), batch_size):
        padded, pads = pad_to_multiple(inputs[start : start + batch_size])
        outputs.append(crop_pads(predict(padded), pads))
    return torch.cat(outputs)


def score(pred_dn: torch.Tensor, target_dn: torch.Tensor) -> dict[str, float]:
    """PSNR (one pooled MSE) and mean SSIM on the four 10 m bands B02, B03, B04, B08."""
    pred, target = pred_dn.detach().cpu().numpy(), target_dn.cpu().numpy()
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target)}


def mean_image_baseline(train: TileSet, val: TileSet) -> dict[str, float]:
    """Scores of a constant image equal to the per-band training mean: the floor to beat."""
    mean = train.s2.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    return score(mean.expand_as(val.s2), val.s2)


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


def progress(start: int, stop: int, desc: str) -> tqdm:
    """Steps ``start + 1 .. stop`` as a tqdm bar that counts resumed steps as already done."""
    return tqdm(range(start + 1, stop + 1), initial=start, total=stop, desc=desc, dynamic_ncols=True)


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
    """A detached copy of a module's weights (e.g. the best ones so far)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
