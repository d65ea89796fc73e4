"""Sentinel-1 GRD reading: VV and VH by polarisation name, units never guessed, large scenes by window.

SAR units are never guessed: values are converted from linear power to dB only when the caller
says so (``units="linear"``) or the file's metadata does. A file without units whose values
are all non-negative is refused, because dB backscatter is mostly negative. The file's GDAL band
scale/offset is applied first (int16 dB x 100 with scale 0.01 is common). Values that cannot be
backscatter are refused rather than translated: an all-zero image, uncalibrated 8-bit data, and
a band whose median is outside ``PLAUSIBLE_DB`` once in dB.

Large scenes are streamed: :class:`SarSource` validates the header and a decimated preview,
then serves windows. ``read_s1`` is the whole-image version built on the same code.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
from rasterio.windows import Window

from gac_pipeline.bands import S1GRD_BANDS
from gac_pipeline.io.common import (
    InputError,
    _band_medians,
    _check_header,
    _invalid_pixels,
    _open,
    _percent,
    _read_with_mask,
)
from gac_pipeline.io.dates import acquisition_month

# Long side of the decimated read used to validate a streamed scene and pick fill values.
PREVIEW_SIZE = 1024

# Band medians (dB) outside this range are wrong units or a missing scale, not backscatter: real
# scenes have medians of about -25..0 dB (VV) and -30..-5 dB (VH); the bundled tiles span
# -26..-6.5 (VV) and -31.5..-14.5 (VH). A linear file taken as dB (0..1) cannot be told apart.
PLAUSIBLE_DB = (-60.0, 10.0)


@dataclass
class SarRaster:
    """A Sentinel-1 GRD scene in dB, ready for the model.

    Attributes:
        data: float32 array (2, H, W), VV and VH backscatter in dB; masked pixels hold the
            band median so that models never see NaN.
        valid_mask: bool array (H, W), False where the input was NaN, inf or nodata (or
            non-positive linear power), or outside the file's own mask (a GDAL mask band or
            alpha band).
        profile: rasterio profile of the source (crs, transform, nodata, width, height, ...).
        month: acquisition month 1..12 from the metadata or the file name, None if unknown.
        notes: human-readable notes on what was done to the input.
    """

    data: np.ndarray
    valid_mask: np.ndarray
    profile: dict
    month: int | None = None
    notes: list[str] = field(default_factory=list)



_HH_HV = {"HH", "HV"}


def _polarisation(description: str) -> str | None:
    """The polarisation a band description names (VV, VH, HH or HV), or None."""
    tokens = set(re.split(r"[^A-Z0-9]+", description.upper())) & {*S1GRD_BANDS, *_HH_HV}
    return tokens.pop() if len(tokens) == 1 else None


def _units_from_metadata(dataset) -> tuple[str | None, str]:
    """SAR units declared by the file: ("db" | "linear" | "amplitude" | None, raw text)."""
    texts = [text for text in dataset.units if text]
    for tags in [dataset.tags()] + [dataset.tags(i) for i in dataset.indexes]:
        texts += [value for key, value in tags.items() if key.lower() in ("units", "unit")]
    for text in texts:
        lowered = text.lower()
        if "amplitude" in lowered:
            return "amplitude", text
        if re.search(r"(?<![a-z])db(?![a-z])", lowered) or "decibel" in lowered:
            return "db", text
        if any(word in lowered for word in ("linear", "power", "intensity")):
            return "linear", text
    return None, ""


class SarSource:
    """A Sentinel-1 GRD scene opened for windowed reading (VV, VH in dB).

    The header is validated on opening (band count, data type, size) and the values on a
    decimated preview at most ``preview_size`` pixels on the long side (all NaN, all 0, units,
    band medians in dB). The preview also gives the per-band medians that fill masked pixels in
    every window, so a large scene is never read whole. For a scene no larger than the preview,
    the preview is the full image and is reused by :meth:`read`.

    Use as a context manager::

        with SarSource("scene.tif") as sar:
            data, valid = sar.read(0, 0, 256, 256)

    Attributes:
        path: the file.
        height: rows.
        width: columns.
        profile: rasterio profile of the source.
        month: acquisition month 1..12, None if unknown.
        notes: human-readable notes on what was done to the input.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        units: str | None = None,
        max_pixels: int = 1_000_000_000,
        min_size: int = 16,
        preview_size: int | None = PREVIEW_SIZE,
    ):
        """Open and validate a scene.

        Args:
            path: GeoTIFF with 2 bands (VV, VH).
            units: "db", "linear" (power; converted to dB) or None to read them from the
                metadata.
            max_pixels: largest accepted height x width, checked before reading pixels.
            min_size: smallest accepted height and width.
            preview_size: long side of the decimated read used for validation and fill
                values; None reads the whole image instead.

        Raises:
            InputError: the file cannot be used; the message says why.
            ValueError: ``units`` is not one of "db", "linear", None.
        """
        if units is not None and units.strip().lower() not in ("db", "linear"):
            raise ValueError(f"units must be 'db', 'linear' or None, got {units!r}")
        self.path = Path(path)
        self.notes: list[str] = []
        self._dataset = _open(self.path)
        try:
            self._validate(units, max_pixels, min_size, preview_size)
        except BaseException:
            self._dataset.close()
            raise

    def _validate(
        self, units: str | None, max_pixels: int, min_size: int, preview_size: int | None
    ) -> None:
        dataset, name = self._dataset, self.path.name
        _check_header(
            dataset, name, "SAR backscatter (dB or linear power)",
            max_pixels=max_pixels, min_size=min_size,
        )
        if dataset.count != 2:
            raise InputError(f"{name}: expected 2 SAR bands (VV, VH), found {dataset.count}")
        self.height, self.width = dataset.height, dataset.width
        self.profile = dict(dataset.profile)
        self.month = acquisition_month(self.path, dataset.tags())
        self._nodata = dataset.nodata
        if dataset.crs is None:
            self.notes.append("no CRS in the file: outputs will not be georeferenced")
        self._indexes = self._band_indexes()
        self._calibration = self._scale_offset()
        units = self._resolve_units(units)
        self._linear = units == "linear"
        self._check_values(units is None, preview_size)

    def _band_indexes(self) -> list[int]:
        """File band numbers of VV and VH, from the polarisation each band description names.

        A description names a polarisation when one of its tokens (split at anything but
        letters and digits, case-insensitive) is VV, VH, HH or HV: "VV", "vh", "Sigma0_VH_db",
        "Gamma0_VV". Without descriptions the file order is taken (VV, VH) and a note says so;
        descriptions that name no VV/VH pair, or HH/HV, are refused.
        """
        descriptions = [(text or "").strip() for text in self._dataset.descriptions]
        if not any(descriptions):
            self.notes.append("no band descriptions: took band 1 as VV and band 2 as VH")
            return [1, 2]
        shown = ", ".join(repr(text) for text in descriptions)
        polarisations = [_polarisation(text) for text in descriptions]
        if _HH_HV & set(polarisations):
            raise InputError(f"{self.path.name}: bands are {shown}: HH/HV polarisations, the models know VV and VH only")
        if sorted(p for p in polarisations if p) != sorted(S1GRD_BANDS):
            raise InputError(f"{self.path.name}: band descriptions {shown} do not name one VV and one VH band")
        if polarisations != list(S1GRD_BANDS):
            self.notes.append(f"reordered bands to VV, VH (file order {shown})")
        return [polarisations.index(band) + 1 for band in S1GRD_BANDS]

    def _scale_offset(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The file's GDAL (scale, offset) per band used (VV, VH), None when they change nothing.

        rasterio returns the stored values, so a file holding dB x 100 as int16 with scale 0.01
        would otherwise be read as about -1500 dB. 8-bit data without a scale/offset is refused:
        it is a display stretch (a quicklook), which no unit conversion turns into backscatter.
        """
        dataset = self._dataset
        scales = [dataset.scales[i - 1] for i in self._indexes]
        offsets = [dataset.offsets[i - 1] for i in self._indexes]
        if scales == [1.0, 1.0] and offsets == [0.0, 0.0]:
            if dataset.dtypes[0] == "uint8":
                raise InputError(
                    f"{self.path.name}: 8-bit (uint8) data is a display-scaled image, not calibrated "
                    "SAR backscatter (dB or linear power); export float32 backscatter, or give the bands "
                    "the GDAL scale/offset that calibrates them"
                )
            return None
        pairs = [f"({scale:g}, {offset:g})" for scale, offset in zip(scales, offsets)]
        bands = f"{pairs[0]} to VV, VH" if pairs[0] == pairs[1] else f"{pairs[0]} to VV, {pairs[1]} to VH"
        self.notes.append(f"applied the file's scale/offset {bands}")
        return np.float32(scales)[:, None, None], np.float32(offsets)[:, None, None]

    def _resolve_units(self, units: str | None) -> str | None:
        """Units to read the values in: the caller's, else the metadata's, else None."""
        declared, declared_text = _units_from_metadata(self._dataset)
        if units is not None:
            units = units.strip().lower()
            if declared not in (None, units):
                self.notes.append(
                    f"using units='{units}' as given; the metadata says '{declared_text}'"
                )
            source = "given"
        elif declared == "amplitude":
            raise InputError(
                f"{self.path.name}: metadata says the values are amplitude ('{declared_text}'): "
                "expected backscatter in dB or linear power; square amplitude to get power and "
                "pass units='linear' (CLI: --sar-units linear)"
            )
        else:
            units, source = declared, "from metadata"
        if units == "linear":
            self.notes.append(f"converted linear power to dB (units {source})")
        return units

    def _check_values(self, units_unknown: bool, preview_size: int | None) -> None:
        """Validate the values on a (decimated) preview and take the fill values from it."""
        name = self.path.name
        long_side = max(self.height, self.width)
        if preview_size is None or preview_size >= long_side:
            raw, outside_mask = _read_with_mask(self._dataset, self._indexes)
            self._full = (raw, outside_mask)
        else:
            scale = preview_size / long_side
            shape = (2, max(1, round(self.height * scale)), max(1, round(self.width * scale)))
            raw, outside_mask = _read_with_mask(self._dataset, self._indexes, out_shape=shape)
            self._full = None

        scaled, invalid = self._calibrated(raw, outside_mask)
        if (~invalid).any() and not scaled[~invalid].any():
            # Checked before the units: "all non-negative, pass linear" is wrong advice here.
            raise InputError(f"{name}: every value is 0: an empty image, not SAR backscatter")
        if self._linear and (negative := float((scaled[~invalid] < 0).mean())) > 0.5:
            # Noise-removed linear power can dip below 0 here and there, never mostly: these are dB.
            raise InputError(f"{name}: {negative:.0%} of the values are negative, which linear power cannot be: "
                             "these look like dB; read them as dB (CLI: --sar-units db)")
        data, invalid = self._to_db(scaled, invalid)
        if units_unknown:
            # A refusal, not a guess: dB backscatter is mostly negative, linear power never is.
            values = data[~invalid]
            if values.size and values.min() >= 0:
                raise InputError(
                    f"{name}: SAR values are all non-negative (median {np.median(values):.3g}): "
                    "this looks like linear power, not dB; pass units='linear' "
                    "(CLI: --sar-units linear) to convert"
                )
        self._fill = _band_medians(data, invalid, S1GRD_BANDS, name)
        low, high = PLAUSIBLE_DB
        for band, median in zip(S1GRD_BANDS, self._fill):
            if not low <= median <= high:
                converted = " after converting linear power to dB" if self._linear else ""
                raise InputError(
                    f"{name}: median {band} is {median:+.1f} dB{converted}, outside the plausible "
                    f"{low:g}..{high:+g} dB (typical VV -25..0 dB, VH -30..-5 dB): check the units "
                    "(CLI: --sar-units) and the file's scale/offset"
                )

        masked = invalid.any(axis=0)
        if masked.any():
            what = "NaN/inf/nodata" + ("/non-positive" if self._linear else "")
            fraction = _percent(masked.mean())
            if self._full is not None:
                self.notes.append(
                    f"masked {int(masked.sum())} {what} pixels ({fraction}); "
                    "filled with the band median"
                )
            else:
                self.notes.append(
                    f"about {fraction} of pixels are {what} (estimated on a "
                    f"{raw.shape[1]}x{raw.shape[2]} preview); masked and filled with the "
                    "band median"
                )

    def _calibrated(self, raw: np.ndarray, outside_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 values in the file's units (its scale/offset applied) and the per-band mask of
        NaN/inf/nodata pixels or those outside the file's own mask band (``outside_mask``)."""
        data = raw.astype(np.float32)
        invalid = _invalid_pixels(data, self._nodata) | outside_mask  # nodata is a stored value
        if self._calibration is not None:
            scale, offset = self._calibration
            data = data * scale + offset
        return data, invalid

    def _to_db(self, data: np.ndarray, invalid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_calibrated`'s values in dB, with non-positive linear power also invalid."""
        if self._linear:
            invalid |= data <= 0
            data = 10.0 * np.log10(np.where(invalid, np.float32(1), data))
        return data, invalid

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window inside the scene.

        Args:
            row: first row.
            col: first column.
            height: rows to read; ``row + height`` must not pass the bottom edge.
            width: columns to read; ``col + width`` must not pass the right edge.

        Returns:
            ``(data, valid_mask)``: float32 (2, height, width) VV, VH in dB with masked
            pixels filled by the band median, and bool (height, width).

        Raises:
            ValueError: the window is empty or leaves the scene.
            InputError: the pixels cannot be read (truncated or corrupt file).
        """
        if not (
            0 <= row and 0 <= col and height > 0 and width > 0
            and row + height <= self.height and col + width <= self.width
        ):
            raise ValueError(
                f"window rows {row}:{row + height}, cols {col}:{col + width} is outside the "
                f"{self.height}x{self.width} scene"
            )
        if self._full is not None:
            raw, outside_mask = (array[:, row:row + height, col:col + width] for array in self._full)
        else:
            window = Window(col, row, width, height)
            raw, outside_mask = _read_with_mask(self._dataset, self._indexes, window=window)
        data, invalid = self._to_db(*self._calibrated(raw, outside_mask))
        data = np.where(invalid, self._fill[:, None, None], data)
        return data, ~invalid.any(axis=0)

    def close(self) -> None:
        """Close the underlying file."""
        self._dataset.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_s1(
    path: str | Path,
    *,
    units: str | None = None,
    max_pixels: int = 64_000_000,
    min_size: int = 16,
) -> SarRaster:
    """Read a whole Sentinel-1 GRD scene (VV, VH) as dB.

    Args:
        path: GeoTIFF with 2 bands, VV then VH (band descriptions "VH", "VV" are reordered).
        units: "db", "linear" (power; converted to dB) or None to read them from the
            metadata. Without units, a scene whose values are all non-negative is refused.
            The file's GDAL band scale/offset is applied to the stored values first.
        max_pixels: largest accepted height x width, checked before reading pixels.
        min_size: smallest accepted height and width.

    Returns:
        The scene, with NaN/inf/nodata pixels masked and filled.

    Raises:
        InputError: the file cannot be used; the message says why.
    """
    # No decimated preview: the whole image is read once and validated exactly.
    with SarSource(
        path, units=units, max_pixels=max_pixels, min_size=min_size, preview_size=None
    ) as source:
        data, valid_mask = source.read(0, 0, source.height, source.width)
        return SarRaster(data, valid_mask, source.profile, source.month, list(source.notes))
