"""Fixed display stretches shared by the app and the evaluation figure.

Fixed, so images compare across stages, tiles and runs (no per-image percentile stretch: that
would hide brightness differences between stages). NaN (nodata) is black in every image; none
of the colour maps below contains black.

Optical composites (``COMPOSITES``) of a (12, H, W) S2L2A DN array, reflectance = DN / 10000.
Each RGB channel is ``clip(reflectance / max, 0, 1)`` scaled to 0..255:

- true colour: R = B04, G = B03, B = B02, max 0.3 each, i.e. DN 0..3000 is black..white. It
  matches the LPIPS stretch in ``gac_pipeline.metrics``.
- false-colour NIR: R = B08 (max 0.5), G = B04, B = B03 (max 0.3). Vegetation reflects 0.3..0.5
  in the NIR, so 0.5 keeps it from saturating; the visible bands keep the true-colour stretch.
- SWIR: R = B12 (max 0.4), G = B8A (max 0.5), B = B04 (max 0.3). Bare soil and built-up land
  reach 0.3..0.4 in B12, vegetation about 0.1 and water 0.
- NDVI = (B08 - B04) / (B08 + B04), colour map "RdYlGn" over -0.2..0.9: water and bare
  ground red, sparse vegetation yellow, dense vegetation green.

Derived maps, on ``composite_values``: the reflectance of the composite's three bands, or NDVI.

- change map (after - before): the signed difference, averaged over the three bands, colour
  map "RdBu_r" over -0.05..0.05 reflectance (a stage changes a band by a few hundredths) or
  -0.5..0.5 NDVI. 0 is white, a rise red, a fall blue.
- error map (|prediction - reference|): the absolute difference, averaged over the three bands,
  colour map "viridis" over 0..0.1 reflectance or 0..0.5 NDVI.

Values beyond a scale saturate at its end. ``scale(kind, name)`` gives a map's (low, high) and
``colour_bar`` draws it.

SAR false colour: R = VV over -25..0 dB, G = VH over -32..-5 dB, B = VV - VH over 0..15 dB.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gac_pipeline.bands import REFLECTANCE_SCALE, S2L2A_BANDS

RGB_MAX_REFLECTANCE = 0.3
NIR_MAX_REFLECTANCE = 0.5
SWIR_MAX_REFLECTANCE = 0.4
SAR_STRETCH_DB = {"VV": (-25.0, 0.0), "VH": (-32.0, -5.0), "VV-VH": (0.0, 15.0)}

# (band, max reflectance) for R, G and B of each RGB composite.
RGB_STRETCHES = {
    "true colour": (("B04", RGB_MAX_REFLECTANCE), ("B03", RGB_MAX_REFLECTANCE), ("B02", RGB_MAX_REFLECTANCE)),
    "false-colour NIR": (("B08", NIR_MAX_REFLECTANCE), ("B04", RGB_MAX_REFLECTANCE), ("B03", RGB_MAX_REFLECTANCE)),
    "SWIR": (("B12", SWIR_MAX_REFLECTANCE), ("B8A", NIR_MAX_REFLECTANCE), ("B04", RGB_MAX_REFLECTANCE)),
}
# Composite name -> description, in the order of the selector.
COMPOSITES = {
    **{name: ", ".join(f"{channel} = {band} 0..{high:g}" for channel, (band, high) in zip("RGB", bands, strict=True))
       for name, bands in RGB_STRETCHES.items()},
    "NDVI": "(B08 - B04) / (B08 + B04), RdYlGn over -0.2..0.9",
}

# (low, high) of each colour-mapped image, by kind and by what it is computed on.
SCALES = {
    ("composite", "NDVI"): (-0.2, 0.9),
    ("change", "reflectance"): (-0.05, 0.05),
    ("change", "NDVI"): (-0.5, 0.5),
    ("error", "reflectance"): (0.0, 0.1),
    ("error", "NDVI"): (0.0, 0.5),
}
COLOUR_MAPS = {"composite": "RdYlGn", "change": "RdBu_r", "error": "viridis"}
NODATA_COLOUR = (0, 0, 0)
# Odd, so that 0 on a symmetric scale falls on the exact centre of the colour map.
LUT_SIZE = 257
LUTS = {kind: np.round(matplotlib.colormaps[cmap].resampled(LUT_SIZE)(np.arange(LUT_SIZE))[:, :3] * 255)
        .astype(np.uint8) for kind, cmap in COLOUR_MAPS.items()}


def _check(name: str) -> None:
    if name not in COMPOSITES:
        raise ValueError(f"unknown composite {name!r}; valid: {', '.join(map(repr, COMPOSITES))}")


def scale(kind: str, name: str) -> tuple[float, float]:
    """(low, high) of the ``kind`` map ("composite", "change" or "error") of composite ``name``."""
    _check(name)
    key = (kind, "NDVI" if name == "NDVI" else "reflectance")
    if key not in SCALES:
        raise ValueError(f"no {kind!r} colour scale for composite {name!r}; kinds: {', '.join(COLOUR_MAPS)}")
    return SCALES[key]


def _colour_mapped(values: np.ndarray, kind: str, name: str) -> np.ndarray:
    """uint8 (H, W, 3) of (H, W) ``values`` through the ``kind`` LUT on its fixed scale."""
    low, high = scale(kind, name)
    position = np.clip(np.nan_to_num((values - low) / (high - low), nan=0.0), 0.0, 1.0)
    image = LUTS[kind][np.round(position * (LUT_SIZE - 1)).astype(np.intp)]
    image[np.isnan(values)] = NODATA_COLOUR
    return image


def composite_values(dn: np.ndarray, name: str) -> np.ndarray:
    """float32 values composite ``name`` draws: (3, H, W) reflectance of R, G, B, or (1, H, W) NDVI."""
    _check(name)
    reflectance = np.asarray(dn, dtype=np.float32) / REFLECTANCE_SCALE
    if name == "NDVI":
        nir, red = reflectance[S2L2A_BANDS.index("B08")], reflectance[S2L2A_BANDS.index("B04")]
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((nir - red) / (nir + red))[None]
    return reflectance[[S2L2A_BANDS.index(band) for band, _ in RGB_STRETCHES[name]]]


def composite(dn: np.ndarray, name: str) -> np.ndarray:
    """uint8 image (H, W, 3) of composite ``name`` of a (12, H, W) S2L2A DN array, fixed stretch."""
    values = composite_values(dn, name)
    if name == "NDVI":
        return _colour_mapped(values[0], "composite", name)
    highs = np.array([high for _, high in RGB_STRETCHES[name]], dtype=np.float32)[:, None, None]
    rgb = np.clip(np.nan_to_num(values / highs, nan=0.0), 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8).transpose(1, 2, 0)


def rgb_composite(dn: np.ndarray) -> np.ndarray:
    """True-colour uint8 image (H, W, 3) of a (12, H, W) S2L2A DN array: DN 0..3000, NaN black."""
    return composite(dn, "true colour")


def change_map(after_dn: np.ndarray, before_dn: np.ndarray, name: str) -> np.ndarray:
    """uint8 (H, W, 3): after - before on composite ``name``'s values, diverging, ``scale("change", name)``."""
    change = composite_values(after_dn, name) - composite_values(before_dn, name)
    return _colour_mapped(change.mean(axis=0), "change", name)


def error_map(pred_dn: np.ndarray, reference_dn: np.ndarray, name: str) -> np.ndarray:
    """uint8 (H, W, 3): |pred - reference| on composite ``name``'s values, ``scale("error", name)``."""
    error = np.abs(composite_values(pred_dn, name) - composite_values(reference_dn, name))
    return _colour_mapped(error.mean(axis=0), "error", name)


def colour_bar(kind: str, name: str, width: int = 256, height: int = 12) -> np.ndarray:
    """uint8 (height + 14, width, 3): the ``kind`` map's colours low..high, its low, middle and high below."""
    low, high = scale(kind, name)
    bar = _colour_mapped(np.linspace(low, high, width)[None].repeat(height, axis=0), kind, name)
    image = Image.new("RGB", (width, height + 14), "white")
    image.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=10)
    for value, x, anchor in ((low, 0, "la"), ((low + high) / 2, width // 2, "ma"), (high, width - 1, "ra")):
        draw.text((x, height + 2), f"{value:g}", fill="black", font=font, anchor=anchor)
    return np.asarray(image)


def mean_absolute_change(after_dn: np.ndarray, before_dn: np.ndarray) -> float:
    """Mean |after - before| over all bands and pixels, in reflectance (DN / 10000); NaN ignored."""
    change = np.abs(np.asarray(after_dn, dtype=np.float64) - np.asarray(before_dn, dtype=np.float64))
    change = change[~np.isnan(change)]
    return float(change.mean() / REFLECTANCE_SCALE) if change.size else float("nan")


def sar_false_colour(s1_db: np.ndarray) -> np.ndarray:
    """False-colour uint8 image (H, W, 3) of (2, H, W) VV, VH in dB, fixed dB stretch.

    R = VV (-25..0 dB), G = VH (-32..-5 dB), B = VV - VH (0..15 dB).
    """
    vv, vh = np.asarray(s1_db, dtype=np.float32)
    channels = []
    for values, (low, high) in zip((vv, vh, vv - vh), SAR_STRETCH_DB.values(), strict=True):
        scaled = np.clip(np.nan_to_num((values - low) / (high - low), nan=0.0), 0.0, 1.0)
        channels.append(np.round(scaled * 255).astype(np.uint8))
    return np.stack(channels, axis=-1)
