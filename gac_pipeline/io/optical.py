"""Sentinel-2 L2A reading: bands by name, stored values calibrated to DN (reflectance x 10000)."""

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gac_pipeline.bands import S2L2A_BANDS
from gac_pipeline.io.common import (
    InputError,
    _band_medians,
    _check_header,
    _invalid_pixels,
    _name,
    _open,
    _percent,
    _read_with_mask,
)

# Band medians all at or below this are reflectance 0..1 saved without a scale, not DN (water's B02
# is ~100 DN and vegetation's B08 thousands).
REFLECTANCE_LIKE_MAX = 1.5


@dataclass
class OpticalRaster:
    """A Sentinel-2 L2A image in digital numbers (reflectance x 10000).

    Attributes:
        data: float32 array (12, H, W) in ``S2L2A_BANDS`` order; masked pixels hold the band
            median (every score leaves them out).
        profile: rasterio profile of the source.
        notes: human-readable notes on what was done to the input.
        valid_mask: bool array (H, W), False where the input was NaN, inf or nodata in any band,
            or outside the file's own mask (a GDAL mask band or alpha band).
    """

    data: np.ndarray
    profile: dict
    notes: list[str] = field(default_factory=list)
    valid_mask: np.ndarray | None = None


def _s2_band_name(description: str | None) -> str | None:
    """Normalise "B2", "b02", "B8A" to the S2L2A_BANDS spelling; None if not a band name."""
    match = re.fullmatch(r"B0?(\d{1,2}A?)", (description or "").strip().upper())
    if not match:
        return None
    band = match.group(1)
    return "B" + (band if band.endswith("A") else band.zfill(2))


def read_s2(path: str | Path, *, max_pixels: int = 64_000_000) -> OpticalRaster:
    """Read a Sentinel-2 L2A image (12 bands, digital numbers).

    Bands are taken by their descriptions when the file names them (B01..B12, in any order;
    extra bands are ignored), else in file order, which must then be ``S2L2A_BANDS``.

    Args:
        path: GeoTIFF with the 12 L2A bands.
        max_pixels: largest accepted height x width, checked before reading pixels.

    Returns:
        The image as float32 DN, with NaN/inf/nodata pixels and those outside the file's mask
        band masked and filled.

    Raises:
        InputError: the file cannot be used; the message says why.
    """
    name = _name(path)
    with _open(path) as dataset:
        _check_header(
            dataset, name, "Sentinel-2 reflectance (digital numbers)", max_pixels=max_pixels
        )
        notes = []
        names = [_s2_band_name(text) for text in dataset.descriptions]
        named = any(names)
        missing = [band for band in S2L2A_BANDS if band not in names]
        if (named and missing) or (not named and dataset.count != len(S2L2A_BANDS)):
            detail = f" (missing {', '.join(missing)})" if named else ""
            raise InputError(
                f"{name}: expected 12 Sentinel-2 L2A bands (B01..B12), "
                f"found {dataset.count}{detail}"
            )
        indexes = list(range(1, len(S2L2A_BANDS) + 1))
        if named:
            indexes = [names.index(band) + 1 for band in S2L2A_BANDS]
            if indexes != list(range(1, len(S2L2A_BANDS) + 1)):
                notes.append("selected and ordered bands B01..B12 by their descriptions")
        elif any(dataset.descriptions):
            notes.append("band descriptions are not band names: assumed B01..B12 order")
        data, outside_mask = _read_with_mask(dataset, indexes)
        data = data.astype(np.float32)
        profile = dict(dataset.profile)
        nodata = dataset.nodata
        gains, shifts, note = _dn_calibration(dataset, indexes, name)

    invalid = _invalid_pixels(data, nodata) | outside_mask
    if note:
        data = data * gains[:, None, None] + shifts[:, None, None]
        notes.append(note)
    fill = _band_medians(data, invalid, S2L2A_BANDS, name)
    if fill.max() <= REFLECTANCE_LIKE_MAX:  # no real tile is this dark in DN: it would score as near-black
        raise InputError(f"{name}: every band's median is at most {REFLECTANCE_LIKE_MAX:g}: this looks like "
                         "reflectance (0..1), not digital numbers (reflectance x 10000); multiply it by 10000")
    masked = invalid.any(axis=0)
    if masked.any():
        data = np.where(invalid, fill[:, None, None], data)
        notes.append(
            f"masked {int(masked.sum())} NaN/inf/nodata pixels ({_percent(masked.mean())}); "
            "filled with the band median, left out of every score"
        )
    return OpticalRaster(data, profile, notes, ~masked)


# Sentinel-2 L2A from processing baseline 04.00 on stores DN + 1000 (BOA_ADD_OFFSET = -1000).
_BASELINE_IN_NAME = re.compile(r"_N(\d{2})(\d{2})_")


def _dn_calibration(dataset, indexes: list[int], name: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Per selected band, (gain, shift) turning stored values into DN (reflectance x 10000), and a note.

    GDAL band scales/offsets win (a scale below 0.01 means the scaled values are reflectance,
    multiplied by 10000 here); else a ``BOA_ADD_OFFSET`` tag (band or dataset level) is added.
    A file from processing baseline 04.00+ (``PROCESSING_BASELINE`` tag or ``_N0400_``-style
    name) with neither gets no change and a note. Returns (1, 0, None) when nothing applies.
    """
    ones, zeros = np.ones(len(indexes), np.float32), np.zeros(len(indexes), np.float32)
    scales = np.array([dataset.scales[i - 1] for i in indexes], np.float32)
    offsets = np.array([dataset.offsets[i - 1] for i in indexes], np.float32)
    if (scales != 1).any() or (offsets != 0).any():
        to_dn = np.where(scales < 0.01, 10000.0, 1.0).astype(np.float32)
        return scales * to_dn, offsets * to_dn, "applied the file's band scales/offsets to get DN"
    tags = dataset.tags()
    boa = [dataset.tags(i).get("BOA_ADD_OFFSET", tags.get("BOA_ADD_OFFSET")) for i in indexes]
    if any(value is not None for value in boa):
        try:
            shifts = np.array([float(value or 0) for value in boa], np.float32)
        except ValueError:
            raise InputError(f"{name}: BOA_ADD_OFFSET {boa[0]!r} is not a number") from None
        return ones, shifts, f"added BOA_ADD_OFFSET ({', '.join(f'{v:g}' for v in sorted(set(shifts)))}) to get DN"
    baseline = tags.get("PROCESSING_BASELINE")
    match = _BASELINE_IN_NAME.search(name)
    version = float(baseline) if baseline and baseline.replace(".", "", 1).isdigit() else (
        int(match.group(1)) + int(match.group(2)) / 100 if match else None)
    if version is not None and 4.0 <= version < 99:
        return ones, zeros, (f"processing baseline {version:05.2f} and no offset in the file: if its DN carry the "
                             "+1000 BOA offset of baseline 04.00+, scores will be off")
    return ones, zeros, None
