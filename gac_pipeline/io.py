"""Reading Sentinel-1 / Sentinel-2 GeoTIFFs and writing optical outputs (rasterio).

Every problem with a user's file is raised as :class:`InputError`, whose message is one line
that names the file and says what was expected, so the CLI and the app can show it as is.

SAR units are never guessed: values are converted from linear power to dB only when the caller
says so (``units="linear"``) or the file's metadata does. A file without units whose values
are all non-negative is refused, because dB backscatter is mostly negative.

Large scenes are streamed: :class:`SarSource` validates the header and a decimated preview,
then serves windows; :class:`OpticalWriter` writes the result strip by strip. ``read_s1`` and
``write_optical`` are the whole-image versions built on the same code.
"""

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from gac_pipeline.bands import S1GRD_BANDS, S2L2A_BANDS

# Long side of the decimated read used to validate a streamed scene and pick fill values.
PREVIEW_SIZE = 1024


class InputError(ValueError):
    """A user-supplied file cannot be used; the message is one line naming the file."""


@dataclass
class SarRaster:
    """A Sentinel-1 GRD scene in dB, ready for the model.

    Attributes:
        data: float32 array (2, H, W), VV and VH backscatter in dB; masked pixels hold the
            band median so that models never see NaN.
        valid_mask: bool array (H, W), False where the input was NaN, inf or nodata (or
            non-positive linear power).
        profile: rasterio profile of the source (crs, transform, nodata, width, height, ...).
        month: acquisition month 1..12 from the metadata or the file name, None if unknown.
        notes: human-readable notes on what was done to the input.
    """

    data: np.ndarray
    valid_mask: np.ndarray
    profile: dict
    month: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class OpticalRaster:
    """A Sentinel-2 L2A image in digital numbers (reflectance x 10000).

    Attributes:
        data: float32 array (12, H, W) in ``S2L2A_BANDS`` order; masked pixels hold the band
            median.
        profile: rasterio profile of the source.
        notes: human-readable notes on what was done to the input.
        valid_mask: bool array (H, W), False where the input was NaN, inf or nodata.
    """

    data: np.ndarray
    profile: dict
    notes: list[str] = field(default_factory=list)
    valid_mask: np.ndarray | None = None


# ----------------------------------------------------------------------------- dates

_DATE_COMPACT = re.compile(r"(?<!\d)(?:19|20)\d\d(0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)")
_DATE_SEPARATED = re.compile(
    r"(?<!\d)(?:19|20)\d\d[-:/](0[1-9]|1[0-2])[-:/](?:0[1-9]|[12]\d|3[01])(?!\d)"
)


def parse_month(text: object) -> int | None:
    """Month of the first date in ``text`` (``YYYYMMDD``, ``YYYY-MM-DD`` or ``YYYY:MM:DD``).

    Args:
        text: any value; non-strings are converted with ``str``.

    Returns:
        The month 1..12, or None when no plausible date is found.
    """
    if text is None:
        return None
    text = str(text)
    match = _DATE_SEPARATED.search(text) or _DATE_COMPACT.search(text)
    return int(match.group(1)) if match else None


def acquisition_month(path: str | Path, tags: dict | None) -> int | None:
    """Acquisition month of a scene from its tags, else from its file name.

    Looks at, in order: ``ACQUISITION_DATE`` / ``ACQUISITION_START_TIME``, tags whose name
    contains "date", any tag value holding a date such as ``20170613``, the file name
    (``..._20170613T...`` or ``..._20170613_...``), and last ``TIFFTAG_DATETIME``, which
    usually records when the file was written rather than when the scene was acquired.

    Args:
        path: file (or folder) whose name may carry the date.
        tags: dataset tags, e.g. ``src.tags()``.

    Returns:
        The month 1..12, or None when nothing gives one.
    """
    tags = dict(tags or {})
    by_key = {str(key).upper(): value for key, value in tags.items()}
    candidates = [by_key.get("ACQUISITION_DATE"), by_key.get("ACQUISITION_START_TIME")]
    candidates += [value for key, value in by_key.items() if "DATE" in key and "TIFFTAG" not in key]
    candidates += [value for key, value in by_key.items() if "TIFFTAG" not in key]
    candidates += [Path(path).name, by_key.get("TIFFTAG_DATETIME")]
    for value in candidates:
        month = parse_month(value)
        if month is not None:
            return month
    return None


# ----------------------------------------------------------------------------- helpers


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


def _read(dataset, **kwargs) -> np.ndarray:
    """``dataset.read`` with read failures (truncated or corrupt files) as InputError."""
    try:
        return dataset.read(**kwargs)
    except RasterioError as error:
        raise InputError(
            f"{_name(dataset.name)}: could not read the pixels, the file looks truncated or "
            f"corrupt ({_gdal_reason(error, dataset.name)})"
        ) from error


def _check_header(dataset, name: str, what: str, *, max_pixels: int, min_size: int = 1) -> None:
    """Reject data types and sizes the models cannot use, before any pixel is read."""
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


def _crs_label(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


# ----------------------------------------------------------------------------- SAR

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
    decimated preview at most ``preview_size`` pixels on the long side (all NaN, units). The
    preview also gives the per-band medians that fill masked pixels in every window, so a
    large scene is never read whole. For a scene no larger than the preview, the preview is
    the full image and is reused by :meth:`read`.

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
        if dataset.count != 2:
            raise InputError(f"{name}: expected 2 SAR bands (VV, VH), found {dataset.count}")
        _check_header(
            dataset, name, "SAR backscatter (dB or linear power)",
            max_pixels=max_pixels, min_size=min_size,
        )
        self.height, self.width = dataset.height, dataset.width
        self.profile = dict(dataset.profile)
        self.month = acquisition_month(self.path, dataset.tags())
        self._nodata = dataset.nodata
        if dataset.crs is None:
            self.notes.append("no CRS in the file: outputs will not be georeferenced")
        self._indexes = self._band_indexes()
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
            raw = _read(self._dataset, indexes=self._indexes)
            self._full = raw
        else:
            scale = preview_size / long_side
            shape = (2, max(1, round(self.height * scale)), max(1, round(self.width * scale)))
            raw = _read(self._dataset, indexes=self._indexes, out_shape=shape)
            self._full = None

        data, invalid = self._to_db(raw)
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

    def _to_db(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 dB values and the per-band invalid mask of raw pixels."""
        data = raw.astype(np.float32)
        invalid = _invalid_pixels(data, self._nodata)
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
            raw = self._full[:, row:row + height, col:col + width]
        else:
            window = Window(col, row, width, height)
            raw = _read(self._dataset, indexes=self._indexes, window=window)
        data, invalid = self._to_db(raw)
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


# ----------------------------------------------------------------------------- optical


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
        The image as float32 DN, with NaN/inf/nodata pixels masked and filled.

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
        data = _read(dataset, indexes=indexes).astype(np.float32)
        profile = dict(dataset.profile)
        nodata = dataset.nodata
        gains, shifts, note = _dn_calibration(dataset, indexes, name)

    invalid = _invalid_pixels(data, nodata)
    if note:
        data = data * gains[:, None, None] + shifts[:, None, None]
        notes.append(note)
    fill = _band_medians(data, invalid, S2L2A_BANDS, name)
    masked = invalid.any(axis=0)
    if masked.any():
        data = np.where(invalid, fill[:, None, None], data)
        notes.append(
            f"masked {int(masked.sum())} NaN/inf/nodata pixels ({_percent(masked.mean())}); "
            "filled with the band median"
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


# How far (in SAR pixels) a reference's corners may sit from the SAR grid's: rounding in the files'
# transforms, not a misregistration.
GRID_TOLERANCE_PX = 0.01


def check_same_grid(
    sar: SarRaster | SarSource,
    ref: OpticalRaster,
    sar_path: str | Path,
    ref_path: str | Path,
) -> None:
    """Check that a reference optical image lies on the SAR scene's pixel grid.

    Args:
        sar: the SAR scene (read whole or streamed).
        ref: the reference image.
        sar_path: SAR file, for the message.
        ref_path: reference file, for the message.

    Raises:
        InputError: the sizes differ, or both have a CRS and the CRSs differ, or their
            transforms differ by more than :data:`GRID_TOLERANCE_PX` of a pixel (origin or
            pixel size): a reference shifted by one pixel would be scored as if aligned.
    """
    sar_size = (sar.profile["height"], sar.profile["width"])
    ref_size = (ref.profile["height"], ref.profile["width"])
    if sar_size != ref_size:
        raise InputError(
            f"{_name(ref_path)}: reference is {ref_size[0]}x{ref_size[1]} pixels but SAR scene "
            f"{_name(sar_path)} is {sar_size[0]}x{sar_size[1]}: expected the same grid"
        )
    sar_crs, ref_crs = sar.profile.get("crs"), ref.profile.get("crs")
    if sar_crs is not None and ref_crs is not None and sar_crs != ref_crs:
        raise InputError(
            f"{_name(ref_path)}: reference CRS {_crs_label(ref_crs)} differs from SAR scene "
            f"{_name(sar_path)} CRS {_crs_label(sar_crs)}: expected the same grid"
        )
    sar_transform, ref_transform = sar.profile.get("transform"), ref.profile.get("transform")
    if sar_crs is None or ref_crs is None or sar_transform is None or ref_transform is None:
        return  # no georeference to compare (e.g. BigEarthNet v1 tiles): sizes only
    # The reference's origin and far corner in SAR pixel coordinates: (0, 0) and (W, H) on the same grid.
    width, height = sar_size[1], sar_size[0]
    origin = ~sar_transform * (ref_transform.c, ref_transform.f)
    corner = ~sar_transform * (ref_transform * (width, height))
    offset = max(abs(origin[0]), abs(origin[1]), abs(corner[0] - width), abs(corner[1] - height))
    if offset > GRID_TOLERANCE_PX:
        raise InputError(
            f"{_name(ref_path)}: reference grid is offset from SAR scene {_name(sar_path)} by "
            f"({origin[0]:+.2f}, {origin[1]:+.2f}) pixels (column, row) at its origin and "
            f"({corner[0] - width:+.2f}, {corner[1] - height:+.2f}) at its far corner: expected the same grid"
        )


class OpticalWriter:
    """Writes a 12-band float32 GeoTIFF strip by strip, on the grid of a source profile.

    The file keeps the source CRS, transform and nodata (NaN is declared when the source has
    none), is deflate-compressed in strips of 16 rows (the pipeline writes windows of a
    multiple of 16 rows, so no strip is compressed twice), and carries the band names as
    descriptions.

    Use as a context manager::

        with OpticalWriter("out.tif", sar.profile, height, width) as writer:
            writer.write_rows(0, block)
    """

    def __init__(self, path: str | Path, like_profile: dict, height: int, width: int):
        """Create the file.

        Args:
            path: output GeoTIFF.
            like_profile: profile of the source scene (crs, transform, nodata are kept).
            height: rows.
            width: columns.
        """
        self.height, self.width = height, width
        nodata = like_profile.get("nodata")
        # Without a nodata value, NaN is the float convention for "no data here".
        self._fill = np.float32(np.nan if nodata is None else nodata)
        profile = {
            "driver": "GTiff",
            "dtype": "float32",
            "count": len(S2L2A_BANDS),
            "height": height,
            "width": width,
            "crs": like_profile.get("crs"),
            "transform": like_profile.get("transform"),
            "nodata": float(self._fill),
            "compress": "deflate",
            "blockysize": 16,
            "BIGTIFF": "IF_SAFER",  # 12 float bands of a large scene pass the 4 GB TIFF limit
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dataset = rasterio.open(path, "w", **profile)
        for index, band in enumerate(S2L2A_BANDS, start=1):
            self._dataset.set_band_description(index, band)

    def write_rows(
        self, row0: int, block: np.ndarray, valid_mask: np.ndarray | None = None
    ) -> None:
        """Write a horizontal strip.

        Args:
            row0: first row of the strip.
            block: (12, n, width) digital numbers.
            valid_mask: optional bool (n, width); False pixels get the nodata value (NaN when
                the source has none).

        Raises:
            ValueError: the strip has the wrong shape or leaves the image.
        """
        block = np.asarray(block, dtype=np.float32)
        rows = block.shape[1] if block.ndim == 3 else 0
        if block.shape != (len(S2L2A_BANDS), rows, self.width) or not (
            0 <= row0 and rows > 0 and row0 + rows <= self.height
        ):
            raise ValueError(
                f"strip of shape {block.shape} at row {row0} does not fit a 12-band "
                f"{self.height}x{self.width} image"
            )
        if valid_mask is not None:
            block = np.where(valid_mask[None], block, self._fill)
        self._dataset.write(block, window=Window(0, row0, self.width, rows))

    def close(self) -> None:
        """Flush and close the file."""
        self._dataset.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def write_optical(
    path: str | Path,
    dn: np.ndarray,
    like_profile: dict,
    *,
    valid_mask: np.ndarray | None = None,
) -> None:
    """Write a 12-band optical image on the grid of a source scene.

    Args:
        path: output GeoTIFF.
        dn: (12, H, W) digital numbers (reflectance x 10000).
        like_profile: profile of the source scene (crs, transform, nodata are kept).
        valid_mask: optional bool (H, W); False pixels get the nodata value (NaN when the
            source has none).
    """
    dn = np.asarray(dn)
    if dn.ndim != 3:
        raise ValueError(f"expected a (12, H, W) array, got shape {dn.shape}")
    with OpticalWriter(path, like_profile, dn.shape[1], dn.shape[2]) as writer:
        writer.write_rows(0, dn, valid_mask)
