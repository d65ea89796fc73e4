"""Write a synthetic folder in the official reBEN (BigEarthNet v2.0) layout, for tests and benchmarks.

Usage::

    python -m training.make_synthetic_reben --out /tmp/reben --pairs 200

Real names, folder structure, sizes, dtypes and georeferencing; random values. Per pair:
``BigEarthNet-S1/<S1 product>/<s1_name>/<s1_name>_VV.tif`` and ``_VH.tif`` (120 x 120 float32 dB)
and ``BigEarthNet-S2/<S2 product>/<patch_id>/<patch_id>_B01.tif`` .. ``_B12.tif`` (uint16 DN at
each band's native resolution: 120, 60 or 20 px); plus ``metadata.parquet`` with ``patch_id``,
``labels``, ``split``, ``country``, ``s1_name``, ``s2v1_name``, ``contains_seasonal_snow`` and
``contains_cloud_or_shadow``. GeoTIFFs are small and uncompressed, so 2,000 pairs take seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine

from gac_pipeline.bands import S1GRD_BANDS, S2L2A_BANDS
from gac_pipeline.data import REBEN_BAND_SIZE, REBEN_SIZE, reben_s1_dir, reben_s2_dir

# (S2 product, S1 product, UTM EPSG, country): real BigEarthNet acquisitions.
SCENES = (
    ("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP", "S1B_IW_GRDH_1SDV_20170612T165809", 32633, "Austria"),
    ("S2B_MSIL2A_20180525T094029_N9999_R036_T35VLK", "S1A_IW_GRDH_1SDV_20180524T160027", 32635, "Finland"),
    ("S2A_MSIL2A_20170717T113321_N9999_R080_T29SNB", "S1A_IW_GRDH_1SDV_20170716T183152", 32629, "Portugal"),
    ("S2B_MSIL2A_20171112T114339_N9999_R123_T29UPU", "S1B_IW_GRDH_1SDV_20171111T180423", 32629, "Ireland"),
)
PATCHES_PER_ROW = 90  # a 100 km S2 tile holds about 90 x 90 patches of 1.2 km


def write_band(path: Path, data: np.ndarray, epsg: int, left: float, top: float) -> None:
    """One single-band GeoTIFF on a 1.2 km square at the resolution its size implies."""
    pixel = REBEN_SIZE * 10 / data.shape[0]
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1,
               "dtype": data.dtype.name, "crs": f"EPSG:{epsg}", "transform": Affine(pixel, 0, left, 0, -pixel, top)}
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data, 1)


def make(out: str | Path, pairs: int, seed: int = 0) -> Path:
    """Write ``pairs`` synthetic pairs and the metadata to ``out``; returns ``out``."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(pairs):
        s2_product, s1_product, epsg, country = SCENES[i % len(SCENES)]
        row, column = divmod(i // len(SCENES), PATCHES_PER_ROW)
        patch_id = f"{s2_product}_{row}_{column}"
        s1_name = f"{s1_product}_{s2_product.rsplit('_T', 1)[1]}_{row}_{column}"
        left, top = 300_000 + column * 1200.0, 5_400_000 - row * 1200.0
        s1_dir, s2_dir = reben_s1_dir(out, s1_name), reben_s2_dir(out, patch_id)
        s1_dir.mkdir(parents=True, exist_ok=True)
        s2_dir.mkdir(parents=True, exist_ok=True)
        for band, low in zip(S1GRD_BANDS, (-20.0, -27.0), strict=True):
            write_band(s1_dir / f"{s1_name}_{band}.tif",
                       rng.uniform(low, low + 15, (REBEN_SIZE, REBEN_SIZE)).astype(np.float32), epsg, left, top)
        for band in S2L2A_BANDS:
            size = REBEN_BAND_SIZE[band]
            write_band(s2_dir / f"{patch_id}_{band}.tif",
                       rng.integers(1, 5000, (size, size), dtype=np.uint16), epsg, left, top)
        rows.append({"patch_id": patch_id, "labels": ["Arable land", "Pastures"][: 1 + i % 2],
                     "split": ("train", "train", "train", "train", "train", "train", "validation", "test")[i % 8],
                     "country": country, "s1_name": s1_name, "s2v1_name": patch_id.replace("_N9999_", "_N0205_"),
                     "contains_seasonal_snow": False, "contains_cloud_or_shadow": i % 10 == 9})
    pd.DataFrame(rows).to_parquet(out / "metadata.parquet", index=False)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make(args.out, args.pairs, args.seed)
    print(f"wrote {args.pairs} synthetic reBEN pairs to {args.out}")


if __name__ == "__main__":
    main()
