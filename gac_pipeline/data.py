"""Pair folders (S1GRD.tif + S2L2A.tif) as the project's dataset, and the official reBEN layout.

A dataset is any folder whose subfolders, at any depth, hold ``S1GRD.tif`` and usually
``S2L2A.tif`` (folders with only the SAR scene are inference-only). An optional ``index.csv``
at the top joins metadata to each folder through its ``pair`` column: ``split``, ``country``,
``s2_date`` / ``s1_date``, ``clear_land``, ``source``.

The official BigEarthNet v2.0 (reBEN) layout is read too (:class:`RebenDataset`): a folder with
``metadata.parquet`` (or ``metadata.csv``), ``BigEarthNet-S1/<S1 product>/<s1_name>/<s1_name>_VV.tif``
and ``_VH.tif`` (float32 dB), and ``BigEarthNet-S2/<S2 product>/<patch_id>/<patch_id>_B01.tif`` ..
``_B12.tif`` (uint16, each band at its native resolution: 120, 60 or 20 px).

The biome given to the models is derived from the country, a coarse proxy: a country can
span several biomes, and a pair without a known country gets "unknown".
"""

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from gac_pipeline.bands import S1GRD_BANDS, S2L2A_BANDS
from gac_pipeline.io import acquisition_month, parse_month, read_s1, read_s2
from gac_pipeline.io.optical import _dn_calibration

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "bigearthnet"

S1_FILE = "S1GRD.tif"
S2_FILE = "S2L2A.tif"
INDEX_FILE = "index.csv"

# Index 0 is "unknown": conditioning embeddings use it when nothing is known.
BIOMES = (
    "unknown",
    "boreal",
    "temperate_oceanic",
    "temperate_continental",
    "alpine",
    "mediterranean",
)

# BigEarthNet countries; a country-level proxy for the biome, not a land-cover map.
COUNTRY_TO_BIOME = {
    "Finland": "boreal",
    "Lithuania": "temperate_continental",
    "Austria": "alpine",
    "Switzerland": "alpine",
    "Portugal": "mediterranean",
    "Ireland": "temperate_oceanic",
    "Belgium": "temperate_oceanic",
    "Luxembourg": "temperate_oceanic",
    "Serbia": "temperate_continental",
    "Kosovo": "temperate_continental",
}

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def biome_index(name: str | None) -> int:
    """Index of a biome in ``BIOMES``.

    Args:
        name: biome name, or None for unknown.

    Returns:
        0 for None or "unknown", else the biome's position in ``BIOMES``.

    Raises:
        ValueError: the name is not a biome.
    """
    if name is None:
        return 0
    if name not in BIOMES:
        raise ValueError(f"unknown biome {name!r}; expected one of {', '.join(BIOMES)}")
    return BIOMES.index(name)


def normalise_split(split: str | None) -> str | None:
    """Map "val" and "validation" to "validation"; "" and None to None.

    Raises:
        ValueError: the split is not train, val/validation or test.
    """
    if split is None or not split.strip():
        return None
    key = split.strip().lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; expected train, validation (or val) or test")
    return _SPLIT_ALIASES[key]


@dataclass
class PairInfo:
    """One pair folder and what the index says about it.

    Attributes:
        name: folder name (the index's ``pair`` key).
        directory: the folder.
        s1_path: its ``S1GRD.tif``.
        s2_path: its ``S2L2A.tif``, None for an inference-only folder.
        split: "train", "validation", "test", or None when the folder has no split.
        month: acquisition month 1..12 (``s2_date``, else ``s1_date``, else the folder name).
        biome: biome derived from the country, "unknown" if there is none.
        clear_land: the index's cloud/snow/water-free flag, None if unknown.
        source: the index's ``source`` column (e.g. "BENv2"), None if unknown.
    """

    name: str
    directory: Path
    s1_path: Path
    s2_path: Path | None
    split: str | None = None
    month: int | None = None
    biome: str = "unknown"
    clear_land: bool | None = None
    source: str | None = None


def _read_index(root: Path) -> dict[str, dict[str, str]]:
    path = root / INDEX_FILE
    if not path.is_file():
        return {}
    with open(path, newline="") as file:
        return {row["pair"]: row for row in csv.DictReader(file) if row.get("pair")}


def _flag(text: str | None) -> bool | None:
    value = (text or "").strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(value)


def _pair_info(directory: Path, row: dict[str, str]) -> PairInfo:
    month = parse_month(row.get("s2_date")) or parse_month(row.get("s1_date"))
    country = (row.get("country") or "").strip()
    s2_path = directory / S2_FILE
    return PairInfo(
        name=directory.name,
        directory=directory,
        s1_path=directory / S1_FILE,
        s2_path=s2_path if s2_path.is_file() else None,
        split=normalise_split(row.get("split")),
        month=month or acquisition_month(directory, None),
        biome=COUNTRY_TO_BIOME.get(country, "unknown"),
        clear_land=_flag(row.get("clear_land")),
        source=row.get("source") or None,
    )


def list_pairs(
    root: str | Path = DEFAULT_DATA_DIR, split: str | None = None, *, clear_only: bool = False
) -> list[PairInfo]:
    """All pair folders under ``root``, joined with ``root/index.csv`` when there is one.

    Args:
        root: dataset folder; pair folders may sit at any depth (e.g. ``root/benv1/<pair>``).
        split: None for every pair, or "train", "validation" ("val" accepted) or "test" for
            the pairs the index puts in that split. Pairs without a split never match one;
            use :func:`evaluation_pairs` to evaluate on a folder that may have no splits.
        clear_only: keep only pairs the index marks ``clear_land``.

    Returns:
        The pairs, sorted by name (then folder) for determinism.
    """
    root = Path(root)
    wanted = normalise_split(split)
    index = _read_index(root)
    pairs = []
    for s1_path in root.rglob(S1_FILE):
        directory = s1_path.parent
        info = _pair_info(directory, index.get(directory.name, {}))
        if wanted is not None and info.split != wanted:
            continue
        if clear_only and info.clear_land is not True:
            continue
        pairs.append(info)
    return sorted(pairs, key=lambda info: (info.name, str(info.directory)))


def evaluation_pairs(root: str | Path = DEFAULT_DATA_DIR) -> list[PairInfo]:
    """The pairs to evaluate on: the test split, or every pair when the folder has no splits.

    Args:
        root: dataset folder.

    Returns:
        Pairs whose split is "test" if any pair has a split, else all pairs.
    """
    pairs = list_pairs(root)
    if any(info.split is not None for info in pairs):
        return [info for info in pairs if info.split == "test"]
    return pairs


def scene_and_position(name: str) -> tuple[str, int, int] | None:
    """Split a BigEarthNet patch name into its scene and the patch's row/column in it.

    ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57`` -> (``..._T33UUP``, 26, 57): the
    scene is the S2 product (tile and date), the last two numbers the patch position.

    Returns:
        (scene, row, column), or None when the name does not end in two numbers.
    """
    parts = name.rsplit("_", 2)
    if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return parts[0], int(parts[1]), int(parts[2])


def scene_clusters(names: list[str]) -> list[int]:
    """Group patches that touch: same scene and rows and columns at most one apart (diagonals too),
    joined transitively. Neighbouring patches share fields, lakes and clouds, so a tile and its
    neighbour must never sit on both sides of a fold or count as independent in a bootstrap.

    Names that do not parse (see :func:`scene_and_position`) are their own cluster.

    Args:
        names: Pair folder names.

    Returns:
        A cluster id per name, numbered 0.. in order of first appearance.
    """
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    positions = [scene_and_position(name) for name in names]
    for i, a in enumerate(positions):
        for j in range(i):
            b = positions[j]
            if a and b and a[0] == b[0] and abs(a[1] - b[1]) <= 1 and abs(a[2] - b[2]) <= 1:
                parent[root(i)] = root(j)
    ids: dict[int, int] = {}
    return [ids.setdefault(root(i), len(ids)) for i in range(len(names))]


class PairDataset(Dataset):
    """Reads pairs as tensors for training and evaluation.

    Each item is a dict: ``s1`` float32 (2, H, W) VV, VH in dB; ``s2`` float32 (12, H, W)
    digital numbers; ``month`` int (1..12, 0 when unknown); ``biome`` int (index into
    ``BIOMES``); ``name`` str. An optional ``transform`` is applied to the dict.
    """

    def __init__(
        self,
        pairs: list[PairInfo],
        transform: Callable[[dict], dict] | None = None,
        *,
        sar_units: str | None = None,
    ):
        """Build the dataset.

        Args:
            pairs: pairs from :func:`list_pairs`; each needs an ``S2L2A.tif``.
            transform: optional callable applied to each item dict.
            sar_units: passed to :func:`gac_pipeline.io.read_s1` ("db", "linear" or None).

        Raises:
            ValueError: a pair has no ``S2L2A.tif``.
        """
        missing = [info.name for info in pairs if info.s2_path is None]
        if missing:
            raise ValueError(f"pairs without {S2_FILE}: {', '.join(missing[:5])}")
        self.pairs = list(pairs)
        self.transform = transform
        self.sar_units = sar_units

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        info = self.pairs[index]
        s1 = read_s1(info.s1_path, units=self.sar_units)
        s2 = read_s2(info.s2_path)
        item = {
            "s1": torch.from_numpy(s1.data),
            "s2": torch.from_numpy(s2.data),
            "month": info.month or s1.month or 0,
            "biome": biome_index(info.biome),
            "name": info.name,
        }
        return self.transform(item) if self.transform is not None else item


# --- the official reBEN (BigEarthNet v2.0) layout ---------------------------------------------

REBEN_METADATA = ("metadata.parquet", "metadata.csv")
REBEN_S1_DIR = "BigEarthNet-S1"
REBEN_S2_DIR = "BigEarthNet-S2"
REBEN_SIZE = 120  # px at 10 m; 20 m bands are stored at 60 px, 60 m bands at 20 px
REBEN_BAND_SIZE = {band: REBEN_SIZE for band in S2L2A_BANDS} | {
    "B05": 60, "B06": 60, "B07": 60, "B8A": 60, "B11": 60, "B12": 60, "B01": 20, "B09": 20}


def reben_metadata(root: str | Path) -> Path | None:
    """The reBEN metadata file of ``root`` (parquet, else CSV), None when ``root`` is not reBEN."""
    return next((Path(root) / name for name in REBEN_METADATA if (Path(root) / name).is_file()), None)


def reben_s1_dir(root: Path, s1_name: str) -> Path:
    """``BigEarthNet-S1/<S1 product>/<s1_name>``: the product is the name less its tile and position."""
    return root / REBEN_S1_DIR / s1_name.rsplit("_", 3)[0] / s1_name


def reben_s2_dir(root: Path, patch_id: str) -> Path:
    """``BigEarthNet-S2/<S2 product>/<patch_id>``: the product is the name less the patch position."""
    return root / REBEN_S2_DIR / patch_id.rsplit("_", 2)[0] / patch_id


class RebenDataset(Dataset):
    """reBEN patches, read from their per-band GeoTIFFs on every access; items as :class:`PairDataset`'s.

    S1 is stored in dB and read as is. S2 bands stored at 20 or 60 m are repeated to 120 px
    (nearest, as ConfigILM, which packaged the bundled BENv2 tiles, does), and stored values are
    turned into DN by the rule :func:`gac_pipeline.io.read_s2` applies (band scales/offsets or a
    ``BOA_ADD_OFFSET`` tag; reBEN's ``N9999`` names get no change).

    Only names, months and biomes are held, in numpy arrays rather than per-row Python objects,
    so DataLoader workers share them instead of copying them page by page.
    """

    def __init__(self, root: str | Path, splits: Iterable[str] | None = None, *, clear_only: bool = False):
        """List the patches.

        Args:
            root: reBEN folder with ``metadata.parquet`` (or ``.csv``) and the two image folders.
            splits: keep these splits ("val" accepted); None keeps all.
            clear_only: keep only patches without seasonal snow or cloud/shadow (the metadata's
                ``contains_seasonal_snow`` and ``contains_cloud_or_shadow``; a patch missing them is dropped).

        Raises:
            FileNotFoundError: no metadata file in ``root``.
        """
        import pandas as pd

        self.root = Path(root)
        path = reben_metadata(self.root)
        if path is None:
            raise FileNotFoundError(f"{self.root}: no {' or '.join(REBEN_METADATA)} (not a reBEN folder)")
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if splits is not None:
            wanted = {normalise_split(split) for split in splits}
            table = table[[normalise_split(split) in wanted for split in table["split"]]]
        if clear_only:
            flags = [table.get(column, pd.Series(True, index=table.index)).astype(str).str.lower()
                     for column in ("contains_seasonal_snow", "contains_cloud_or_shadow")]
            table = table[(flags[0] == "false") & (flags[1] == "false")]
        table = table.sort_values("patch_id")
        self.patch_ids = table["patch_id"].to_numpy(dtype=str)
        self.s1_names = table["s1_name"].to_numpy(dtype=str)
        countries = table["country"] if "country" in table else [""] * len(table)
        self.biomes = np.array([biome_index(COUNTRY_TO_BIOME.get(str(c), "unknown")) for c in countries], np.int64)
        self.months = np.array([parse_month(name) or 0 for name in self.patch_ids], np.int64)

    def __len__(self) -> int:
        return len(self.patch_ids)

    def __getitem__(self, index: int) -> dict:
        patch_id, s1_name = str(self.patch_ids[index]), str(self.s1_names[index])
        s1_dir, s2_dir = reben_s1_dir(self.root, s1_name), reben_s2_dir(self.root, patch_id)
        s1 = np.stack([_read_band(s1_dir / f"{s1_name}_{band}.tif") for band in S1GRD_BANDS])
        s2 = np.stack([_read_band(s2_dir / f"{patch_id}_{band}.tif", dn_of=patch_id) for band in S2L2A_BANDS])
        return {"s1": torch.from_numpy(s1), "s2": torch.from_numpy(s2), "month": int(self.months[index]),
                "biome": int(self.biomes[index]), "name": patch_id}


def _read_band(path: Path, dn_of: str | None = None) -> np.ndarray:
    """One reBEN band file at 120 px, float32; with ``dn_of`` (the patch name), turned into S2 DN."""
    with rasterio.open(path) as dataset:
        data = dataset.read(1).astype(np.float32)
        if dn_of is not None:
            gains, shifts, _ = _dn_calibration(dataset, [1], dn_of)
            data = data * gains[0] + shifts[0]
    factor = REBEN_SIZE // data.shape[0]
    return data.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else data
