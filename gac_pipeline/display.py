"""Fixed display stretches shared by the app and the evaluation figure.

Fixed, so images compare across stages, tiles and runs (no per-image percentile stretch: that
would hide brightness differences between stages):

- Optical RGB composite: R = B04, G = B03, B = B02 (``RGB_BAND_INDICES``), reflectance
  ``clip(DN / 10000 / 0.3, 0, 1)`` scaled to 0..255, i.e. DN 0..3000 is black..white. It
  matches the LPIPS stretch in ``gac_pipeline.metrics``.
- SAR false colour: R = VV over -25..0 dB, G = VH over -32..-5 dB, B = VV - VH over 0..15 dB.
"""

from __future__ import annotations

import numpy as np

from gac_pipeline.bands import REFLECTANCE_SCALE, RGB_BAND_INDICES

RGB_MAX_REFLECTANCE = 0.3
SAR_STRETCH_DB = {"VV": (-25.0, 0.0), "VH": (-32.0, -5.0), "VV-VH": (0.0, 15.0)}


def rgb_composite(dn: np.ndarray) -> np.ndarray:
    """True-colour uint8 image (H, W, 3) of a (12, H, W) S2L2A DN array, fixed stretch.

    R = B04, G = B03, B = B02; ``clip(DN / 10000 / 0.3, 0, 1) * 255``. NaN (nodata) is black.
    """
    rgb = np.asarray(dn, dtype=np.float32)[list(RGB_BAND_INDICES)] / REFLECTANCE_SCALE / RGB_MAX_REFLECTANCE
    rgb = np.clip(np.nan_to_num(rgb, nan=0.0), 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8).transpose(1, 2, 0)


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
