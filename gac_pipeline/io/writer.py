"""Writing the outputs: Cloud-Optimized GeoTIFFs (12 optical bands, or named bands such as the
uncertainty maps), strip by strip for large scenes.

Every output is float32 with NaN as its nodata (never the source's nodata value, which may be a
valid DN such as 0), NaN in every band where the source was masked, tiled with overviews (GDAL's
``COG`` driver), and carries the band names as descriptions and the caller's provenance tags.
Optical outputs may instead be uint16 DN as Sentinel-2 L2A products store them (``dtype="uint16"``):
rounded to whole DN, 0 as nodata, so a value below 1 DN is written as 1.
"""

import warnings
from pathlib import Path
from typing import Self

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from gac_pipeline.bands import S2L2A_BANDS

# GDAL COG driver options: 512-pixel tiles, lossless ZSTD (level 1) with the floating-point
# predictor, overviews halved until one tile holds the image, averaged (NaN pixels left out),
# blocks compressed on every core. ZSTD level 1 writes a scene's COG several times faster than
# DEFLATE at its default level (issue 15: ``python -m bench.scene``); GDAL >= 2.3 reads it.
COG_OPTIONS = {"BLOCKSIZE": 512, "COMPRESS": "ZSTD", "LEVEL": 1, "PREDICTOR": "YES", "OVERVIEWS": "AUTO",
               "OVERVIEW_RESAMPLING": "AVERAGE", "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS"}
# The strip file the rows go to before the COG copy: uncompressed, so a strip can be written in
# parts (rows arrive in any chunking) and nothing is compressed twice.
PARTIAL_OPTIONS = {"blockysize": 16}
# Build the overviews (2x2 averages, at the COG driver's levels) on that uncompressed file before
# the copy, which then reuses them rather than averaging from its own compressed copy. Where the
# image divides evenly they equal the driver's own; elsewhere they also keep the last partial block.
OVERVIEWS_FIRST = True
# The data types an output can have, and each one's nodata value. uint16 holds half the bytes of
# float32 and compresses better: a scene's COGs take 0.43 times the disk (``bench.scene``).
NODATA = {"float32": np.nan, "uint16": 0}


def overview_factors(height: int, width: int, block: int = COG_OPTIONS["BLOCKSIZE"]) -> list[int]:
    """The COG driver's automatic overview levels: halved (rounding down) until the image fits in one block."""
    factors: list[int] = []
    while max(height, width) // (factors[-1] if factors else 1) > block:
        factors.append(2 * (factors[-1] if factors else 1))
    return factors


class OpticalWriter:
    """Writes a float32 (or uint16) Cloud-Optimized GeoTIFF (12 S2L2A bands by default) strip by strip, on the grid of a
    source profile.

    The COG driver cannot write window by window, so the strips go to ``<path>.partial``, an
    uncompressed GeoTIFF (``PARTIAL_OPTIONS``; as large as the raw float32 bands, on disk only
    while the run lasts); :meth:`close` copies it into ``path`` as a Cloud-Optimized GeoTIFF
    (``COG_OPTIONS``) and deletes it. Leaving the ``with`` block on an exception deletes it
    without writing ``path``.

    The output keeps the source CRS and transform, declares its nodata (``NODATA``: NaN for
    float32, 0 for uint16) and carries the band names as descriptions and ``tags`` as dataset
    tags. DN are written as given in float32, rounded and clipped to 1..65535 in uint16.

    Use as a context manager::

        with OpticalWriter("out.tif", sar.profile, height, width, tags={"stage": "opt_v1"}) as writer:
            writer.write_rows(0, block)
    """

    def __init__(self, path: str | Path, like_profile: dict, height: int, width: int,
                 tags: dict[str, str] | None = None, bands: tuple[str, ...] = S2L2A_BANDS,
                 dtype: str = "float32"):
        """Start the file.

        Args:
            path: output GeoTIFF.
            like_profile: profile of the source scene (crs and transform are kept).
            height: rows.
            width: columns.
            tags: dataset tags (name -> text), e.g. provenance.
            bands: band descriptions, one per band (the S2L2A bands by default).
            dtype: "float32" (NaN nodata) or "uint16" (whole DN, 0 nodata).

        Raises:
            ValueError: another dtype.
        """
        if dtype not in NODATA:
            raise ValueError(f"output dtype must be one of {', '.join(NODATA)}, got {dtype!r}")
        self.path, self.height, self.width, self.bands = Path(path), height, width, tuple(bands)
        self.dtype = dtype
        self._partial = self.path.with_name(self.path.name + ".partial")
        profile = {
            "driver": "GTiff",
            "dtype": dtype,
            "count": len(self.bands),
            "height": height,
            "width": width,
            "crs": like_profile.get("crs"),
            "transform": like_profile.get("transform"),
            "nodata": NODATA[dtype],
            "BIGTIFF": "IF_SAFER",  # 12 float bands of a large scene pass the 4 GB TIFF limit
            **PARTIAL_OPTIONS,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dataset = rasterio.open(self._partial, "w", **profile)
        for index, band in enumerate(self.bands, start=1):
            self._dataset.set_band_description(index, band)
        self._dataset.update_tags(**(tags or {}))

    def write_rows(
        self, row0: int, block: np.ndarray, valid_mask: np.ndarray | None = None
    ) -> None:
        """Write a horizontal strip.

        Args:
            row0: first row of the strip.
            block: (bands, n, width) values, e.g. digital numbers.
            valid_mask: optional bool (n, width); False pixels are nodata in every band.

        Raises:
            ValueError: the strip has the wrong shape or leaves the image.
        """
        block = np.asarray(block, dtype=np.float32)
        rows = block.shape[1] if block.ndim == 3 else 0
        if block.shape != (len(self.bands), rows, self.width) or not (
            0 <= row0 and rows > 0 and row0 + rows <= self.height
        ):
            raise ValueError(
                f"strip of shape {block.shape} at row {row0} does not fit a {len(self.bands)}-band "
                f"{self.height}x{self.width} image"
            )
        if valid_mask is not None:
            block = np.where(valid_mask[None], block, np.float32(np.nan))
        if self.dtype == "uint16":  # NaN (masked) -> 0, the nodata; valid values at least 1 DN
            block = np.where(np.isnan(block), 0, np.clip(np.rint(block), 1, np.iinfo(np.uint16).max)).astype(np.uint16)
        self._dataset.write(block, window=Window(0, row0, self.width, rows))

    def close(self) -> None:
        """Write ``path`` as a Cloud-Optimized GeoTIFF (with overviews) from the strips written."""
        if self._dataset.closed:
            return
        factors = overview_factors(self.height, self.width)
        if OVERVIEWS_FIRST and factors:
            with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):  # averaged on every core, as the COG copy compresses
                self._dataset.build_overviews(factors, Resampling.average)
        self._dataset.close()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                rasterio.shutil.copy(self._partial, self.path, driver="COG", **COG_OPTIONS)
        finally:
            self._partial.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is None:
            self.close()
        else:  # a failed run leaves no half-written output
            self._dataset.close()
            self._partial.unlink(missing_ok=True)


def read_output(path: str | Path) -> np.ndarray:
    """An output back as (bands, H, W) float32, its nodata (NaN or 0, see ``NODATA``) as NaN."""
    with rasterio.open(path) as dataset:
        return dataset.read(masked=True).astype(np.float32).filled(np.nan)


def write_optical(
    path: str | Path,
    dn: np.ndarray,
    like_profile: dict,
    *,
    valid_mask: np.ndarray | None = None,
    tags: dict[str, str] | None = None,
    bands: tuple[str, ...] = S2L2A_BANDS,
    dtype: str = "float32",
) -> None:
    """Write an image (12 optical bands by default) on the grid of a source scene, as a Cloud-Optimized GeoTIFF.

    Args:
        path: output GeoTIFF.
        dn: (bands, H, W) values: digital numbers (reflectance x 10000) for the optical bands.
        like_profile: profile of the source scene (crs and transform are kept).
        valid_mask: optional bool (H, W); False pixels are nodata in every band.
        tags: dataset tags (name -> text), e.g. provenance.
        bands: band descriptions, one per band.
        dtype: "float32" (NaN nodata) or "uint16" (whole DN, 0 nodata).
    """
    dn = np.asarray(dn)
    if dn.ndim != 3:
        raise ValueError(f"expected a ({len(bands)}, H, W) array, got shape {dn.shape}")
    with OpticalWriter(path, like_profile, dn.shape[1], dn.shape[2], tags, bands, dtype) as writer:
        writer.write_rows(0, dn, valid_mask)
