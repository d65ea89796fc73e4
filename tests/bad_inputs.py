"""Writes the awkward GeoTIFFs the readers must handle, each into a given folder.

Every ``write_*`` function takes a folder, writes one file there and returns its path. Run
``python -m tests.bad_inputs OUT_DIR`` from the repository root to write them all, e.g. to
try them in the app; it prints each file with what must happen to it.

``CORPUS`` lists the hardening corpus (issue 5) with the expected outcome of each file: every
interface (CLI, Python API, app) must refuse it with a one-line message naming the file and
matching ``expected``, except ``partly_nan.tif``, which must run with its bad pixels masked.
Reference cases are given together with ``write_good_sar``'s scene, whose grid they miss.

GDAL has no boolean type, so the "bool" case is a 1-bit band (``NBITS=1``), which is how a
boolean mask is stored in a GeoTIFF; rasterio refuses to write ``dtype=bool`` at all.
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from gac_pipeline.bands import S2L2A_BANDS as S2_BANDS

SIZE = 32  # at least the readers' default min_size of 16

UTM_33N = CRS.from_epsg(32633)
UTM_32N = CRS.from_epsg(32632)
TRANSFORM = Affine(10.0, 0.0, 331200.0, 0.0, -10.0, 5331600.0)  # 10 m UTM pixels


def sar_db(height: int = SIZE, width: int = SIZE, seed: int = 0) -> np.ndarray:
    """Plausible VV, VH backscatter in dB, float32 (2, height, width)."""
    rng = np.random.default_rng(seed)
    vv = rng.normal(-12.0, 3.0, (height, width))
    vh = vv - 7.0 + rng.normal(0.0, 1.0, (height, width))
    return np.stack([vv, vh]).astype(np.float32)


def s2_dn(count: int = 12, height: int = SIZE, width: int = SIZE, seed: int = 0) -> np.ndarray:
    """Plausible L2A digital numbers, uint16 (count, height, width)."""
    rng = np.random.default_rng(seed)
    return rng.integers(100, 4000, (count, height, width)).astype(np.uint16)


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    descriptions: tuple[str, ...] | None = None,
    band_units: str | None = None,
    tags: dict | None = None,
    crs: CRS | None = UTM_33N,
    transform=TRANSFORM,
    **profile,
) -> Path:
    """Write ``data`` (bands, H, W) as a GeoTIFF with optional metadata."""
    count, height, width = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count,
        dtype=data.dtype, crs=crs, transform=transform, **profile,
    ) as dataset:
        dataset.write(data)
        for index in range(1, count + 1):
            if descriptions:
                dataset.set_band_description(index, descriptions[index - 1])
            if band_units:
                dataset.set_band_unit(index, band_units)
        if tags:
            dataset.update_tags(**tags)
    return path


def write_good_sar(folder: Path) -> Path:
    """A valid 32x32 dB scene on the grid (UTM 33N, ``TRANSFORM``) the references are compared to."""
    return write_raster(folder / "good_sar.tif", sar_db())


# ----------------------------------------------------------------------------- broken files


def write_not_a_tiff(folder: Path) -> Path:
    """Text bytes with a .tif name."""
    path = folder / "not_a_tiff.tif"
    path.write_bytes(b"this is not a GeoTIFF\n" * 20)
    return path


def write_truncated(folder: Path) -> Path:
    """A valid SAR GeoTIFF cut in half (header intact, pixel strips missing)."""
    path = write_raster(folder / "truncated.tif", sar_db(64, 64))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


# ----------------------------------------------------------------------------- bad SAR


def write_sar_bands(folder: Path, count: int = 3) -> Path:
    """A "SAR" scene with ``count`` bands instead of 2."""
    data = np.concatenate([sar_db()] * count)[:count]
    return write_raster(folder / f"sar_{count}_bands.tif", data)


def write_all_nan(folder: Path) -> Path:
    """Two bands of NaN."""
    return write_raster(folder / "all_nan.tif", np.full((2, SIZE, SIZE), np.nan, np.float32))


def write_partly_nan(folder: Path) -> Path:
    """Valid dB values with 10 NaN, 3 +inf and 2 -inf pixels (15 masked pixels)."""
    data = sar_db()
    data[0, 0, :10] = np.nan
    data[1, 5, :3] = np.inf
    data[0, 9, 20:22] = -np.inf
    return write_raster(folder / "partly_nan.tif", data)


def write_nodata(folder: Path) -> Path:
    """dB values with nodata=-9999 in the first row."""
    data = sar_db()
    data[:, 0, :] = -9999.0
    return write_raster(folder / "nodata.tif", data, nodata=-9999.0)


def write_linear_no_units(folder: Path) -> Path:
    """Linear power (all non-negative) with no units anywhere."""
    return write_raster(folder / "linear_no_units.tif", 10 ** (sar_db() / 10))


def write_linear_with_units(folder: Path) -> Path:
    """Linear power with band units "linear power"; one pixel is 0 (no dB value)."""
    data = 10 ** (sar_db() / 10)
    data[0, 3, 4] = 0.0
    return write_raster(folder / "linear_units.tif", data, band_units="linear power")


def write_linear_tagged(folder: Path) -> Path:
    """Linear power declared by a dataset tag UNITS=intensity."""
    data = 10 ** (sar_db() / 10)
    return write_raster(folder / "linear_tagged.tif", data, tags={"UNITS": "intensity"})


def write_amplitude(folder: Path) -> Path:
    """Amplitude (square root of power) declared in the band units."""
    data = np.sqrt(10 ** (sar_db() / 10))
    return write_raster(folder / "amplitude.tif", data, band_units="amplitude")


def write_tiny(folder: Path) -> Path:
    """An 8x8 scene."""
    return write_raster(folder / "tiny.tif", sar_db(8, 8))


def write_huge_header(folder: Path) -> Path:
    """A header claiming 50000x50000 pixels; no block is written, so the file stays small."""
    path = folder / "huge.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=50_000, height=50_000, count=2, dtype="float32",
        crs=UTM_33N, transform=TRANSFORM, tiled=True, blockxsize=1024, blockysize=1024,
        compress="deflate", sparse_ok=True,
    ):
        pass
    return path


def write_complex(folder: Path) -> Path:
    """Complex64 (SLC-like) data."""
    data = sar_db().astype(np.complex64) * (1 + 1j)
    return write_raster(folder / "complex.tif", data)


def write_one_bit(folder: Path) -> Path:
    """A 1-bit ("boolean") two-band mask."""
    data = (sar_db() > -12).astype(np.uint8)
    return write_raster(folder / "one_bit.tif", data, nbits=1)


def write_swapped_bands(folder: Path) -> Path:
    """VH stored first, VV second, as the band descriptions say."""
    data = sar_db()[::-1].copy()
    return write_raster(folder / "swapped.tif", data, descriptions=("VH", "VV"))


def write_hh_hv(folder: Path) -> Path:
    """HH, HV polarisations instead of VV, VH."""
    return write_raster(folder / "hh_hv.tif", sar_db(), descriptions=("HH", "HV"))


def write_dated(folder: Path) -> Path:
    """A scene whose month is only in its file name (June)."""
    return write_raster(folder / "S1A_IW_GRDH_1SDV_20170613T165809_scene.tif", sar_db())


# ----------------------------------------------------------------------------- bad references


def write_s2_wrong_size(folder: Path) -> Path:
    """A 12-band reference of 24x32 pixels (SAR is 32x32)."""
    return write_raster(folder / "s2_wrong_size.tif", s2_dn(height=24), descriptions=S2_BANDS)


def write_s2_other_crs(folder: Path) -> Path:
    """A 12-band reference in UTM 32N (the SAR fixtures are in UTM 33N)."""
    return write_raster(folder / "s2_other_crs.tif", s2_dn(), descriptions=S2_BANDS, crs=UTM_32N)


def write_s2_four_bands(folder: Path) -> Path:
    """Only the four 10 m bands."""
    return write_raster(
        folder / "s2_four_bands.tif", s2_dn(4), descriptions=("B02", "B03", "B04", "B08")
    )


def write_s2_shuffled(folder: Path) -> Path:
    """All 12 bands, stored in reverse order with matching descriptions."""
    data = s2_dn()[::-1].copy()
    return write_raster(folder / "s2_shuffled.tif", data, descriptions=S2_BANDS[::-1])


def write_s2_missing_band(folder: Path) -> Path:
    """12 bands, but named B10 where B8A should be."""
    names = tuple("B10" if band == "B8A" else band for band in S2_BANDS)
    return write_raster(folder / "s2_missing_band.tif", s2_dn(), descriptions=names)


def write_s2_partly_nan(folder: Path) -> Path:
    """Float reflectance with 4 NaN pixels in band B02."""
    data = s2_dn().astype(np.float32)
    data[1, 2, :4] = np.nan
    return write_raster(folder / "s2_partly_nan.tif", data, descriptions=S2_BANDS)


CASES = (
    write_good_sar, write_not_a_tiff, write_truncated, partial(write_sar_bands, count=1), write_sar_bands,
    partial(write_sar_bands, count=12), write_all_nan, write_partly_nan,
    write_nodata, write_linear_no_units, write_linear_with_units, write_linear_tagged,
    write_amplitude, write_tiny, write_huge_header, write_complex, write_one_bit,
    write_swapped_bands, write_hh_hv, write_dated, write_s2_wrong_size, write_s2_other_crs,
    write_s2_four_bands, write_s2_shuffled, write_s2_missing_band, write_s2_partly_nan,
)




@dataclass(frozen=True)
class BadInput:
    """One corpus file and what every interface must do with it.

    Attributes:
        name: short id, e.g. "12-bands".
        write: writes the file into a folder and returns its path.
        role: "sar" (given as the scene) or "reference" (given with ``write_good_sar``'s scene).
        expected: regex the one-line refusal must match; "" means it must run (masked pixels).
    """

    name: str
    write: Callable[[Path], Path]
    role: str
    expected: str


CORPUS = (
    BadInput("not-tiff", write_not_a_tiff, "sar", r"not a readable raster, expected a GeoTIFF"),
    BadInput("truncated", write_truncated, "sar", r"truncated or corrupt"),
    BadInput("1-band", partial(write_sar_bands, count=1), "sar", r"expected 2 SAR bands \(VV, VH\), found 1$"),
    BadInput("3-bands", write_sar_bands, "sar", r"expected 2 SAR bands \(VV, VH\), found 3$"),
    BadInput("12-bands", partial(write_sar_bands, count=12), "sar", r"expected 2 SAR bands \(VV, VH\), found 12$"),
    BadInput("all-nan", write_all_nan, "sar", r"no valid pixels: every value is NaN"),
    BadInput("partly-nan-inf", write_partly_nan, "sar", ""),
    BadInput("linear-no-units", write_linear_no_units, "sar", r"looks like linear power, not dB"),
    BadInput("8x8", write_tiny, "sar", r"image is 8x8 pixels, too small"),
    BadInput("50000x50000", write_huge_header, "sar", r"image is 50000x50000 pixels .*too large"),
    BadInput("complex", write_complex, "sar", r"unsupported data type complex64"),
    BadInput("bool", write_one_bit, "sar", r"unsupported 1-bit \(boolean\) data"),
    BadInput("s2-other-size", write_s2_wrong_size, "reference", r"reference is 24x32 pixels .*same grid"),
    BadInput("s2-other-crs", write_s2_other_crs, "reference", r"reference CRS EPSG:32632 differs .*same grid"),
    BadInput("s2-4-bands", write_s2_four_bands, "reference", r"expected 12 Sentinel-2 L2A bands .*found 4"),
)


def write_all(folder: Path) -> list[Path]:
    """Write every case in ``CASES`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write(folder) for write in CASES]


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bad_inputs")
    write_all(out)
    for case in CORPUS:
        written = case.write(out)
        outcome = f"refused: {case.expected}" if case.expected else "runs, bad pixels masked and noted"
        print(f"{written}  [{case.role}] {outcome}")
