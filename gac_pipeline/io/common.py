"""What every reader shares: the one-line :class:`InputError`, opening and reading a raster with GDAL's
failures turned into it, header checks, and the NaN/inf/nodata/mask-band mask with its median fill."""

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError


class InputError(ValueError):
    """A user-supplied file cannot be used; the message is one line naming the file."""


def _name(path: str | Path) -> str:
    return Path(path).name


def _gdal_reason(error: Exception, path: str | Path) -> str:
    """The most specific GDAL message behind a rasterio error, on one line, without the path."""
    cause = error.__cause__ or error.__context__
    text = str(cause if cause is not None and str(cause) else error)
    text = text.replace(f"'{path}' ", "").replace(str(path), Path(path).name)
    return " ".join(text.split())[:200]


def _open(path: str | Path):
    """Open a raster, turning every way it can fail into an InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path.name}: file not found")
    if path.is_dir():
        raise InputError(f"{path.name}: is a folder, expected a GeoTIFF file")
    try:
        # benv1 tiles and many exports have no georeferencing; that is reported as a note.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as error:
        raise InputError(
            f"{path.name}: not a readable raster, expected a GeoTIFF ({_gdal_reason(error, path)})"
        ) from error


def _read(dataset, *, masks: bool = False, **kwargs) -> np.ndarray:
    """``dataset.read`` (``read_masks`` with ``masks``) with read failures (truncated or corrupt
    files) as InputError."""
    try:
        return (dataset.read_masks if masks else dataset.read)(**kwargs)
    except RasterioError as error:
        raise InputError(
            f"{_name(dataset.name)}: could not read the pixels, the file looks truncated or "
            f"corrupt ({_gdal_reason(error, dataset.name)})"
        ) from error


# Picture formats GDAL also opens: they hold display colours, never calibrated bands.
PICTURE_DRIVERS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")


def _check_header(dataset, name: str, what: str, *, max_pixels: int, min_size: int = 1) -> None:
    """Reject data types and sizes the models cannot use, before any pixel is read."""
    if dataset.driver in PICTURE_DRIVERS:  # e.g. a PNG renamed .tif: say so, not its band count
        raise InputError(f"{name}: a {dataset.driver} picture, not a GeoTIFF: expected {what} as a GeoTIFF")
    dtype = dataset.dtypes[0]
    if "complex" in dtype:
        raise InputError(
            f"{name}: unsupported data type {dtype}: expected real-valued {what}, not complex data"
        )
    if dataset.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "1":
        # GDAL has no boolean type: a 1-bit band is how a boolean mask is stored.
        raise InputError(f"{name}: unsupported 1-bit (boolean) data: expected {what}")
    if np.dtype(dtype).kind not in "iuf":
        raise InputError(f"{name}: unsupported data type {dtype}: expected integers or floats")
    height, width = dataset.height, dataset.width
    if height < min_size or width < min_size:
        raise InputError(
            f"{name}: image is {height}x{width} pixels, too small: "
            f"expected at least {min_size} pixels on each side"
        )
    if height * width > max_pixels:
        raise InputError(
            f"{name}: image is {height}x{width} pixels ({height * width:,}), too large: "
            f"the limit is {max_pixels:,} pixels"
        )


def _read_with_mask(dataset, indexes: list[int], **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of bands ``indexes`` and, per band, where the file's own mask marks them invalid.

    The file's own mask is a GDAL mask band (internal, or an external ``.msk``) or an alpha band;
    without one (only a nodata value, checked by :func:`_invalid_pixels`, or nothing) it is all
    False. ``kwargs`` go to both reads (``window``, ``out_shape``).
    """
    data = _read(dataset, indexes=indexes, **kwargs)
    flags = [dataset.mask_flag_enums[index - 1] for index in indexes]
    if all(MaskFlags.all_valid in band or MaskFlags.nodata in band for band in flags):
        return data, np.zeros(data.shape, dtype=bool)
    return data, _read(dataset, masks=True, indexes=indexes, **kwargs) == 0


def _invalid_pixels(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Per-band mask of NaN, inf and nodata values."""
    invalid = ~np.isfinite(data)
    if nodata is not None and np.isfinite(nodata):
        invalid |= data == np.float32(nodata)
    return invalid


def _band_medians(
    data: np.ndarray, invalid: np.ndarray, band_names: tuple[str, ...], name: str
) -> np.ndarray:
    """Median of the valid pixels of each band (the fill value for masked pixels)."""
    if invalid.all():
        raise InputError(f"{name}: no valid pixels: every value is NaN, inf or nodata")
    medians = []
    for band, values, bad in zip(band_names, data, invalid):
        if bad.all():
            raise InputError(f"{name}: band {band} has no valid pixels (all NaN, inf or nodata)")
        medians.append(np.median(values[~bad]))
    return np.asarray(medians, dtype=np.float32)


def _percent(fraction: float) -> str:
    return "<0.1%" if 0 < fraction < 0.001 else f"{fraction:.1%}"
