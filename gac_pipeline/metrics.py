"""Scores for generated Sentinel-2 L2A tiles: PSNR, SSIM, SAM, LPIPS, SAR-edge agreement and
luminance structure, edge and sharpness scores.

Conventions (also in the README, *Metrics*):

- Inputs are numpy arrays or torch tensors of Sentinel-2 L2A digital numbers (DN) in
  ``S2L2A_BANDS`` order, shape ``(12, H, W)`` or a batch ``(B, 12, H, W)``.
- Reflectance = ``clip(DN, 0, 10000) / 10000``; every score uses data range 1.
- ``bands`` defaults to the four 10 m bands (B02, B03, B04, B08); ``None`` or ``"all"``
  selects all 12 bands.
- Scores are plain Python floats. PSNR of identical images is ``float("inf")`` and a score
  with nothing to average is ``nan``; ``to_json_safe`` turns both into strings for JSON.
- ``valid_mask`` (bool ``(H, W)``, or ``(B, H, W)`` for the batch scores) leaves pixels out of
  every score: no score counts them, and whatever they hold (even NaN) changes no score. Scores that look at a neighbourhood use only pixels whose whole neighbourhood
  is valid: SSIM averages its map over the pixels whose 11 x 11 window is all valid, and the
  Sobel-based scores (SAR-edge, ``edge_r``, sharpness) treat a masked pixel like the image
  border, leaving out every pixel within 3 px of it. A masked region therefore scores like a
  crop: PSNR, SAM, the luminance and Sobel-based scores equal those of the valid rectangle
  when the valid pixels form one.
"""

import importlib.util
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torchmetrics.functional.image import structural_similarity_index_measure

from gac_pipeline.bands import (
    METRIC_BAND_INDICES,
    REFLECTANCE_SCALE,
    RGB_BAND_INDICES,
    S2L2A_BANDS,
)
from gac_pipeline.io.common import _percent  # the readers' masked-share label: "<0.1%", not "0.0%"

ArrayLike = np.ndarray | torch.Tensor
Bands = Sequence[int] | str | None

# Wang et al. (2004) SSIM settings.
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

SSIM_RADIUS = SSIM_KERNEL_SIZE // 2  # a pixel's SSIM uses the pixels up to 5 px away

# SAR-edge agreement settings.
SAR_MEDIAN_SIZE = 5
# Pixels this close to the image border or to a masked pixel are left out of the Sobel-based
# scores: the Sobel 3 x 3 after the SAR's 5 x 5 median reaches 3 px (1 + 2).
EDGE_BORDER = 3
LUMINANCE_WEIGHTS = (0.2126, 0.7152, 0.0722)  # Rec. 709, applied to R, G, B in that order

# LPIPS input: reflectance 0..0.3 (DN 0..3000) mapped to [-1, 1].
LPIPS_STRETCH_MAX = 0.3
ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's IMAGENET1K_V1 file name

# Built LPIPS models keyed by (trunk weights path, linear weights path).
_LPIPS_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def psnr(
    pred: ArrayLike,
    target: ArrayLike,
    bands: Bands = METRIC_BAND_INDICES,
    valid_mask: ArrayLike | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB on reflectance (data range 1).

    One mean squared error is pooled over the chosen bands, the valid pixels and the batch,
    so a batch gives one PSNR, not a mean of per-tile PSNRs.

    Args:
        pred: Predicted DN, ``(12, H, W)`` or ``(B, 12, H, W)``.
        target: Reference DN, same shape as ``pred``.
        bands: Band indices into ``S2L2A_BANDS``; ``None`` or ``"all"`` for all 12.
        valid_mask: Optional ``(H, W)`` or ``(B, H, W)`` bool array; False pixels are ignored.

    Returns:
        PSNR in dB; ``inf`` when the chosen bands are identical after clipping, ``nan`` when
        no pixel is valid.
    """
    pred_r, target_r = _reflectance_pair(pred, target, bands)
    squared_error = ((pred_r - target_r) ** 2).mean(axis=1)  # every pixel has the same band count
    valid = _valid_pixels(valid_mask, squared_error.shape)
    if not valid.any():
        return float("nan")
    mse = float(squared_error[valid].mean())
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(1.0 / mse)


def ssim(
    pred: ArrayLike,
    target: ArrayLike,
    bands: Bands = METRIC_BAND_INDICES,
    valid_mask: ArrayLike | None = None,
) -> float:
    """Structural similarity, computed per band and averaged over bands (and the batch).

    Each band is treated as its own single-channel image, with the Wang et al. settings:
    Gaussian window 11 x 11, sigma 1.5, K1 0.01, K2 0.03, data range 1. The SSIM map is
    torchmetrics' ``structural_similarity_index_measure`` (``return_full_image=True``), which
    reflect-pads the image by half a window, so every pixel has a value (MATLAB and
    scikit-image instead average only the interior whose windows fit; the numbers differ
    slightly near borders). Images must be at least 11 px on each side.

    With ``valid_mask``, the map is averaged only over the pixels whose whole 11 x 11 window
    is valid (the mask eroded by 5 px; the image border does not count as masked, its
    reflected pixels are valid ones): windows touching a masked pixel are left out, never
    computed on filled values.

    Args:
        pred: Predicted DN, ``(12, H, W)`` or ``(B, 12, H, W)``.
        target: Reference DN, same shape as ``pred``.
        bands: Band indices into ``S2L2A_BANDS``; ``None`` or ``"all"`` for all 12.
        valid_mask: Optional ``(H, W)`` or ``(B, H, W)`` bool array; False pixels are ignored.

    Returns:
        Mean SSIM over the valid windows of every band (and tile); 1.0 for identical images,
        ``nan`` when no window is wholly valid.
    """
    pred_r, target_r = _reflectance_pair(pred, target, bands)
    batch, channels, height, width = pred_r.shape
    valid = _valid_pixels(valid_mask, (batch, height, width))
    # Masked pixels enter the convolutions as 0 so that a NaN there cannot reach other pixels
    # through the convolution's arithmetic; the windows that see them are left out below.
    pred_r, target_r = (np.where(valid[:, None], image, 0.0) for image in (pred_r, target_r))
    # (B, C, H, W) -> (B*C, 1, H, W): a band never mixes with another band. float32 because
    # float64 convolutions are several times slower on CPU, for differences of ~1e-6.
    _, ssim_map = structural_similarity_index_measure(
        torch.from_numpy(pred_r.reshape(-1, 1, height, width)).float(),
        torch.from_numpy(target_r.reshape(-1, 1, height, width)).float(),
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=SSIM_KERNEL_SIZE,
        data_range=1.0,
        k1=SSIM_K1,
        k2=SSIM_K2,
        reduction="none",
        return_full_image=True,
    )
    ssim_map = ssim_map.double().numpy().reshape(batch, channels, height, width)
    windows = _erode(valid, SSIM_RADIUS)
    if not windows.any():
        return float("nan")
    return float(ssim_map.transpose(1, 0, 2, 3)[:, windows].mean())


def sam_deg(
    pred: ArrayLike,
    target: ArrayLike,
    bands: Bands = METRIC_BAND_INDICES,
    valid_mask: ArrayLike | None = None,
) -> float:
    """Mean spectral angle in degrees between predicted and reference pixel spectra.

    Per pixel, the angle between the reflectance vectors p and t of the chosen bands is
    ``arccos(p . t / (|p| |t|))``. It is computed in the equivalent, numerically stable form
    ``2 atan2(|u - v|, |u + v|)`` with unit vectors u, v: arccos loses half its digits near
    cosine 1, so identical tiles would score ~2e-7 degrees instead of 0. Reflectance is never
    negative, so angles lie in [0, 90]. Zero vectors have no direction: a pixel where both
    vectors are zero counts as 0 degrees (they agree), one where only one is zero counts as
    90 degrees (nothing in common, the largest possible angle here); the formula gives both
    when a zero vector's unit vector is taken as zero.

    Args:
        pred: Predicted DN, ``(12, H, W)`` or ``(B, 12, H, W)``.
        target: Reference DN, same shape as ``pred``.
        bands: Band indices into ``S2L2A_BANDS``; ``None`` or ``"all"`` for all 12.
        valid_mask: Optional ``(H, W)`` or ``(B, H, W)`` bool array; False pixels are ignored.

    Returns:
        Mean angle over valid pixels (and the batch) in degrees; 0 for identical images,
        ``nan`` when no pixel is valid.
    """
    pred_r, target_r = _reflectance_pair(pred, target, bands)
    u, v = _unit_vectors(pred_r), _unit_vectors(target_r)
    norm = np.linalg.norm
    angle = np.degrees(2.0 * np.arctan2(norm(u - v, axis=1), norm(u + v, axis=1)))
    valid = _valid_pixels(valid_mask, angle.shape)
    if not valid.any():
        return float("nan")
    return float(angle[valid].mean())


def sar_edge_agreement(
    optical_dn: ArrayLike, s1_db: ArrayLike, valid_mask: ArrayLike | None = None
) -> float:
    """How well edges in an optical tile line up with edges in the SAR tile it came from.

    Reference-free, so it scores a prediction without ground truth; computed for the real
    optical tile it gives the ceiling to compare predictions against. Definition:

    1. SAR image: mean of VV and VH in dB (the geometric mean of the two backscatter
       powers), then a 5 x 5 median filter (reflect borders) to suppress speckle, which would
       otherwise dominate the gradients.
    2. Optical image: luminance ``Y = 0.2126 R + 0.7152 G + 0.0722 B`` on reflectance with
       R = B04, G = B03, B = B02 (``RGB_BAND_INDICES``).
    3. Sobel gradient magnitude ``hypot(d/dy, d/dx)`` of each image.
    4. Pearson correlation of the two gradient-magnitude maps over the pixels at least 3 px
       from the image border and from every masked pixel (closer, the filters see padded or
       masked values). Masked: False in ``valid_mask``, or a non-finite SAR value.

    Args:
        optical_dn: One optical tile, S2L2A DN of shape ``(12, H, W)``.
        s1_db: The matching SAR tile, VV and VH backscatter in dB, shape ``(2, H, W)``.
        valid_mask: Optional ``(H, W)`` bool array; False pixels are ignored.

    Returns:
        Correlation in [-1, 1]; higher means optical edges sit where SAR edges are. ``nan``
        when either gradient map is constant over the scored pixels (no edges to compare) or
        fewer than 2 pixels are left to score.

    Raises:
        ValueError: If the shapes do not match the above.
    """
    luminance_map = luminance(optical_dn)
    sar = _as_float64(s1_db)
    if sar.shape != (2, *luminance_map.shape):
        height, width = luminance_map.shape
        raise ValueError(f"expected S1GRD dB of shape (2, {height}, {width}), got {sar.shape}")
    sar = sar.mean(axis=0)
    valid = _tile_mask(valid_mask, sar.shape) & np.isfinite(sar)
    scored = _edge_pixels(valid)
    # Masked pixels get any finite value: no scored pixel's filters reach them.
    sar = ndimage.median_filter(np.where(valid, sar, 0.0), size=SAR_MEDIAN_SIZE, mode="reflect")
    return _pearson(_sobel_magnitude(luminance_map)[scored], _sobel_magnitude(sar)[scored])


def luminance(dn: ArrayLike) -> np.ndarray:
    """Rec. 709 luminance ``0.2126 R + 0.7152 G + 0.0722 B`` of one tile's reflectance.

    R = B04, G = B03, B = B02 (``RGB_BAND_INDICES``).

    Args:
        dn: One tile, S2L2A DN of shape ``(12, H, W)``.

    Returns:
        ``(H, W)`` float64 luminance in reflectance units.
    """
    rgb = _reflectance(dn, RGB_BAND_INDICES)
    if rgb.shape[0] != 1:
        raise ValueError(f"expected one tile (12, H, W), got a batch of {rgb.shape[0]}")
    return np.tensordot(np.asarray(LUMINANCE_WEIGHTS), rgb[0], axes=1)


def structure_r(pred: ArrayLike, target: ArrayLike, valid_mask: ArrayLike | None = None) -> float:
    """Does the prediction draw the scene? Pearson r of prediction and reference luminance.

    Colour-blind and brightness-blind on purpose: a flat image scores 0 however right its
    colour, and an image with the right layout (lakes, fields, forest edges) scores near 1
    even with a brightness offset.

    Args:
        pred: Predicted DN ``(12, H, W)``.
        target: Reference DN ``(12, H, W)``.
        valid_mask: Optional ``(H, W)`` bool array; False pixels are ignored.

    Returns:
        r in [-1, 1]; 0 for a constant prediction; ``nan`` when the reference is constant or
        fewer than 2 pixels are valid.
    """
    pred_y, target_y = luminance(pred), luminance(target)
    valid = _tile_mask(valid_mask, target_y.shape)
    return _pearson_flat_zero(pred_y[valid], target_y[valid])


def edge_r(pred: ArrayLike, target: ArrayLike, valid_mask: ArrayLike | None = None) -> float:
    """Are edges where the reference has them? Pearson r of the Sobel gradient magnitudes of
    prediction and reference luminance, over the pixels at least 3 px from the image border
    and from every pixel masked by ``valid_mask``.

    Returns:
        r in [-1, 1]; 0 for a prediction without gradients; ``nan`` when the reference has
        none or fewer than 2 pixels are left to score.
    """
    pred_edges, target_edges = _sobel_magnitude(luminance(pred)), _sobel_magnitude(luminance(target))
    scored = _edge_pixels(_tile_mask(valid_mask, target_edges.shape))
    return _pearson_flat_zero(pred_edges[scored], target_edges[scored])


def gradient_energy(dn: ArrayLike, valid_mask: ArrayLike | None = None) -> float:
    """Mean squared Sobel gradient magnitude of one tile's luminance over the pixels at least
    3 px from the image border and from every pixel masked by ``valid_mask``; ``nan`` when
    there is none.

    The numerator and denominator of :func:`sharpness`.
    """
    magnitude = _sobel_magnitude(luminance(dn))
    scored = _edge_pixels(_tile_mask(valid_mask, magnitude.shape))
    if not scored.any():
        return float("nan")
    return float(np.mean(magnitude[scored] ** 2))


def sharpness(pred: ArrayLike, reference: ArrayLike | float, valid_mask: ArrayLike | None = None) -> float:
    """How much texture the prediction has, relative to a real image.

    ``gradient_energy(pred) / gradient_energy(reference)``: 1 = as sharp as the real tile, a
    blur scores well below 1, invented texture above 1. Without a reference tile, pass a
    number instead: the training tiles' median gradient energy (``References``), and label
    the result as relative to the training tiles.

    Args:
        pred: Predicted DN ``(12, H, W)``.
        reference: The real tile's DN ``(12, H, W)``, or a reference gradient energy.
        valid_mask: Optional ``(H, W)`` bool array; both energies use the same pixels
            (see :func:`gradient_energy`).

    Returns:
        The ratio; ``nan`` when the reference has no gradients or no pixel is left to score.
    """
    denominator = (float(reference) if np.isscalar(reference)
                   else gradient_energy(reference, valid_mask))
    if not denominator > 0:
        return float("nan")
    return gradient_energy(pred, valid_mask) / denominator


def lpips_available() -> tuple[bool, str | None]:
    """Cheap check (file lookups, no import of lpips) whether LPIPS can be computed offline.

    LPIPS needs torchvision's ImageNet AlexNet weights in the torch hub cache
    (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``) and the lpips package's
    own linear-layer weights (``lpips/weights/v0.1/alex.pth``). Nothing is ever downloaded.

    Returns:
        ``(True, None)`` when both files exist, else ``(False, reason)``.
    """
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return False, "LPIPS needs the lpips package, which is not installed"
    for path in _lpips_weight_paths():
        if not path.is_file():
            return False, f"LPIPS needs AlexNet weights at {path}, not found (offline)"
    return True, None


def lpips_score(pred: ArrayLike, target: ArrayLike) -> tuple[float | None, str | None]:
    """LPIPS distance (AlexNet, v0.1) between the RGB composites of two tiles.

    RGB is B04, B03, B02 with a fixed stretch, the same for every tile so scores compare
    across tiles: ``clip(reflectance / 0.3, 0, 1) * 2 - 1``, i.e. DN 0..3000 mapped to
    [-1, 1], the range LPIPS expects. The model is built once and cached.

    Args:
        pred: Predicted DN, ``(12, H, W)`` or ``(B, 12, H, W)``.
        target: Reference DN, same shape as ``pred``.

    Returns:
        ``(distance, None)`` with the mean distance over the batch (0 = identical), or
        ``(None, reason)`` when the weights are not available. No value is ever made up.
    """
    available, reason = lpips_available()
    if not available:
        return None, reason
    pred_r, target_r = _reflectance_pair(pred, target, RGB_BAND_INDICES)
    model = _lpips_model(*_lpips_weight_paths())
    with torch.no_grad():
        distance = model(_lpips_rgb(pred_r), _lpips_rgb(target_r))
    return float(distance.mean()), None


def lpips_network() -> torch.nn.Module:
    """The frozen LPIPS model (AlexNet, v0.1) for use as a training loss.

    Raises:
        RuntimeError: The weights are not available locally (the reason says which file).
    """
    available, reason = lpips_available()
    if not available:
        raise RuntimeError(reason)
    return _lpips_model(*_lpips_weight_paths())


def compute_metrics(
    pred_dn: ArrayLike,
    s1_db: ArrayLike,
    target_dn: ArrayLike | None = None,
    *,
    valid_mask: ArrayLike | None = None,
    with_lpips: bool = True,
    training_gradient_energy: float | None = None,
) -> dict[str, Any]:
    """All scores for one predicted tile.

    Args:
        pred_dn: Predicted S2L2A DN, ``(12, H, W)``.
        s1_db: The input SAR tile, VV and VH in dB, ``(2, H, W)``.
        target_dn: Real S2L2A DN, ``(12, H, W)``, or None when there is no ground truth.
        valid_mask: Optional ``(H, W)`` bool array, e.g. the SAR's and the reference's valid
            pixels: every score leaves False pixels out (see the module docstring for how
            SSIM and the Sobel-based scores handle neighbourhoods). LPIPS looks at the whole
            image through a deep network, so with any masked pixel it is None with a reason.
        with_lpips: Whether to try LPIPS (it builds AlexNet on the first call).
        training_gradient_energy: The training tiles' median :func:`gradient_energy`
            (``References.training_gradient_energy``), or None when the preset stores none.

    Returns:
        A dict with always the same keys:
        ``psnr``, ``ssim``, ``sam_deg`` (4 bands B02, B03, B04, B08), ``lpips``,
        ``lpips_reason`` (why ``lpips`` is None, else None), ``sar_edge`` (always computed),
        ``psnr_12``, ``ssim_12``, ``sam_deg_12`` (all 12 bands), ``structure_r``
        (:func:`structure_r`), ``edge_r`` (:func:`edge_r`), ``sharpness`` (:func:`sharpness`
        against the target tile), ``sharpness_vs_training`` (the prediction's gradient
        energy over ``training_gradient_energy``), ``sharpness_vs_training_reason`` (why
        ``sharpness_vs_training`` is None, else None), ``masked_pixels`` (how many pixels
        ``valid_mask`` leaves out) and ``mask_reason`` (which scores are ``nan`` because too
        few valid pixels are left for them, else None). Target-based scores are None without
        a target; ``sharpness_vs_training`` does not need one. Values are floats (possibly
        inf/nan) or None: pass the dict through ``to_json_safe`` before ``json.dumps``.
    """
    valid = _tile_mask(valid_mask, np.shape(s1_db)[-2:])
    metrics: dict[str, Any] = {
        "psnr": None,
        "ssim": None,
        "sam_deg": None,
        "lpips": None,
        "lpips_reason": None,
        "sar_edge": sar_edge_agreement(pred_dn, s1_db, valid),
        "psnr_12": None,
        "ssim_12": None,
        "sam_deg_12": None,
        "structure_r": None,
        "edge_r": None,
        "sharpness": None,
        "sharpness_vs_training": None,
        "sharpness_vs_training_reason": None,
        "masked_pixels": int((~valid).sum()),
        "mask_reason": _mask_reason(valid, with_target=target_dn is not None),
    }
    if training_gradient_energy is None:
        metrics["sharpness_vs_training_reason"] = "no training median stored with this preset"
    else:
        metrics["sharpness_vs_training"] = sharpness(pred_dn, float(training_gradient_energy), valid)
    if target_dn is None:
        metrics["lpips_reason"] = "no target to compare with"
        return metrics
    metrics["structure_r"] = structure_r(pred_dn, target_dn, valid)
    metrics["edge_r"] = edge_r(pred_dn, target_dn, valid)
    metrics["sharpness"] = sharpness(pred_dn, target_dn, valid)
    for suffix, bands in (("", METRIC_BAND_INDICES), ("_12", None)):
        metrics[f"psnr{suffix}"] = psnr(pred_dn, target_dn, bands=bands, valid_mask=valid)
        metrics[f"ssim{suffix}"] = ssim(pred_dn, target_dn, bands=bands, valid_mask=valid)
        metrics[f"sam_deg{suffix}"] = sam_deg(pred_dn, target_dn, bands=bands, valid_mask=valid)
    if not with_lpips:
        metrics["lpips_reason"] = "LPIPS not requested"
    elif metrics["masked_pixels"]:
        metrics["lpips_reason"] = (f"LPIPS needs every pixel (its network sees the whole image): "
                                   f"{metrics['masked_pixels']} pixels are masked")
    else:
        metrics["lpips"], metrics["lpips_reason"] = lpips_score(pred_dn, target_dn)
    return metrics


def mask_note(valid_mask: ArrayLike) -> str | None:
    """A note saying how many pixels the scores leave out (None when none is masked)."""
    valid = np.asarray(valid_mask, dtype=bool)
    if valid.all():
        return None
    masked = int((~valid).sum())
    return (f"scores leave out {masked} masked pixels ({_percent(masked / valid.size)}: "
            "nodata/NaN in the SAR or the reference), they are not filled")


def to_json_safe(value: Any) -> Any:
    """Make metric results serialisable with ``json.dumps(..., allow_nan=False)``.

    Non-finite floats become the strings ``"inf"``, ``"-inf"`` and ``"nan"``; numpy scalars
    and arrays and torch tensors become Python numbers and lists. Dicts, lists and tuples
    are converted recursively (tuples become lists); anything else is returned unchanged.

    Args:
        value: A metrics dict or any nested value in it.

    Returns:
        The converted value.
    """
    if isinstance(value, dict):
        return {str(key): to_json_safe(item) for key, item in value.items()}
    if isinstance(value, (np.ndarray, np.generic, torch.Tensor)):
        return to_json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "nan"
        return "inf" if value > 0 else "-inf"
    return value


def _band_indices(bands: Bands) -> list[int]:
    if bands is None or bands == "all":
        return list(range(len(S2L2A_BANDS)))
    if isinstance(bands, str):
        raise ValueError(f"bands must be band indices, None or 'all', got {bands!r}")  # noqa: TRY004 (callers catch ValueError)
    return [int(band) for band in bands]


def _as_float64(array: ArrayLike) -> np.ndarray:
    # numpy, not torch: float64 torch ops on 2 busy cores were 10-100x slower here.
    if isinstance(array, torch.Tensor):
        # Cast in torch first: numpy has no bfloat16.
        return array.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)


def _reflectance(dn: ArrayLike, bands: Bands) -> np.ndarray:
    """DN -> float64 reflectance of the chosen bands, always batched ``(B, C, H, W)``."""
    values = _as_float64(dn)
    if values.ndim == 3:
        values = values[np.newaxis]
    if values.ndim != 4 or values.shape[1] != len(S2L2A_BANDS):
        raise ValueError(
            f"expected S2L2A DN of shape (12, H, W) or (B, 12, H, W), got {values.shape}"
        )
    return np.clip(values[:, _band_indices(bands)], 0.0, REFLECTANCE_SCALE) / REFLECTANCE_SCALE


def _reflectance_pair(
    pred: ArrayLike, target: ArrayLike, bands: Bands
) -> tuple[np.ndarray, np.ndarray]:
    pred_r, target_r = _reflectance(pred, bands), _reflectance(target, bands)
    if pred_r.shape != target_r.shape:
        raise ValueError(f"pred and target shapes differ: {pred_r.shape} vs {target_r.shape}")
    return pred_r, target_r


def _valid_pixels(valid_mask: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    """A bool mask of ``shape`` (B, H, W); an (H, W) mask applies to every tile of the batch."""
    if valid_mask is None:
        return np.ones(shape, dtype=bool)
    if isinstance(valid_mask, torch.Tensor):
        valid_mask = valid_mask.detach().cpu().bool().numpy()
    mask = np.asarray(valid_mask, dtype=bool)
    if mask.shape[-2:] != shape[-2:]:
        raise ValueError(
            f"valid_mask shape {mask.shape} does not match images of {shape[-2:]} px"
        )
    return np.broadcast_to(mask, shape)


def _tile_mask(valid_mask: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    """One tile's ``(H, W)`` bool mask; all True without one."""
    valid = _valid_pixels(valid_mask, (1, *shape))
    if valid.shape[0] != 1:
        raise ValueError(f"valid_mask of one tile must be (H, W), got {np.shape(valid_mask)}")
    return valid[0]


def _erode(valid: np.ndarray, radius: int) -> np.ndarray:
    """The pixels of ``valid`` (..., H, W) whose square neighbourhood of ``radius`` px is all
    valid; pixels outside the image count as valid (the borders are handled by padding)."""
    size = (1,) * (valid.ndim - 2) + (2 * radius + 1, 2 * radius + 1)
    # A binary erosion by a square; the minimum filter computes it 10x faster.
    return ndimage.minimum_filter(valid, size=size, mode="constant", cval=True)


def _edge_pixels(valid: np.ndarray) -> np.ndarray:
    """The pixels the Sobel-based scores use: at least ``EDGE_BORDER`` px from the image
    border and from every False pixel of the ``(H, W)`` mask ``valid``."""
    scored = np.zeros(valid.shape, dtype=bool)
    scored[EDGE_BORDER:-EDGE_BORDER, EDGE_BORDER:-EDGE_BORDER] = True
    return scored & _erode(valid, EDGE_BORDER)


def _mask_reason(valid: np.ndarray, *, with_target: bool) -> str | None:
    """Which scores have too few valid pixels left, or None (also when nothing is masked)."""
    if valid.all():
        return None
    pixels, inside = int(valid.sum()), int(_edge_pixels(valid).sum())
    windows = int(_erode(valid, SSIM_RADIUS).sum())
    # (scores, what they need, how many there are, how many they need)
    needs = [("sar_edge", f"pixels {EDGE_BORDER} px inside the valid area", inside, 2),
             ("sharpness_vs_training", f"pixels {EDGE_BORDER} px inside the valid area", inside, 1)]
    if with_target:
        needs += [("psnr, psnr_12, sam_deg, sam_deg_12", "valid pixels", pixels, 1),
                  ("structure_r", "valid pixels", pixels, 2),
                  ("ssim, ssim_12", f"whole {SSIM_KERNEL_SIZE}x{SSIM_KERNEL_SIZE} windows of valid pixels", windows, 1),
                  ("edge_r", f"pixels {EDGE_BORDER} px inside the valid area", inside, 2),
                  ("sharpness", f"pixels {EDGE_BORDER} px inside the valid area", inside, 1)]
    short = [f"{names} ({count} {what}, needs {least})" for names, what, count, least in needs if count < least]
    if not short:
        return None
    return f"too few valid pixels ({pixels} of {valid.size}), these scores are nan: " + "; ".join(short)


def _unit_vectors(spectra: np.ndarray) -> np.ndarray:
    """Spectra (B, C, H, W) scaled to unit length along C; zero spectra stay zero."""
    norm = np.linalg.norm(spectra, axis=1, keepdims=True)
    return np.divide(spectra, norm, out=np.zeros_like(spectra), where=norm > 0)


def _sobel_magnitude(image: np.ndarray) -> np.ndarray:
    return np.hypot(ndimage.sobel(image, axis=0), ndimage.sobel(image, axis=1))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    # Exact constancy check first: centring a constant map can leave rounding noise.
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    r = float((a * b).sum() / math.sqrt(float((a * a).sum()) * float((b * b).sum())))
    return min(1.0, max(-1.0, r))


def _pearson_flat_zero(pred: np.ndarray, reference: np.ndarray) -> float:
    """Pearson r where a constant prediction scores 0 (it draws nothing) and a constant
    reference gives ``nan`` (nothing to draw)."""
    if reference.size < 2 or np.ptp(reference) == 0:
        return float("nan")
    if np.ptp(pred) == 0:
        return 0.0
    return _pearson(pred, reference)


def _lpips_weight_paths() -> tuple[Path, Path]:
    """(torchvision AlexNet weights in the hub cache, lpips' own linear weights)."""
    trunk = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS_FILE
    spec = importlib.util.find_spec("lpips")
    package_dir = Path("lpips")  # only reached in messages when lpips is not installed
    if spec is not None and spec.submodule_search_locations:
        package_dir = Path(next(iter(spec.submodule_search_locations)))
    return trunk, package_dir / "weights" / "v0.1" / "alex.pth"


def _lpips_model(trunk_path: Path, linear_path: Path) -> torch.nn.Module:
    key = (str(trunk_path), str(linear_path))
    if key not in _LPIPS_MODELS:
        _LPIPS_MODELS[key] = _build_lpips(trunk_path, linear_path)
    return _LPIPS_MODELS[key]


def _build_lpips(trunk_path: Path, linear_path: Path) -> torch.nn.Module:
    """Build LPIPS from local files only: lpips' own loaders would fetch AlexNet from the web."""
    import lpips  # imported here: it imports torchvision, which needs gac_pipeline's op fix first

    with warnings.catch_warnings():
        # lpips still passes torchvision's deprecated pretrained= argument.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)

    # The trunk keeps torchvision's layer indices as child names (slice2 holds "2", "3", "4").
    alexnet = torch.load(trunk_path, map_location="cpu", weights_only=True)
    trunk = model.net
    for trunk_slice in (trunk.slice1, trunk.slice2, trunk.slice3, trunk.slice4, trunk.slice5):
        for index, layer in trunk_slice.named_children():
            prefix = f"features.{index}."
            layer_state = {
                key.removeprefix(prefix): value
                for key, value in alexnet.items()
                if key.startswith(prefix)
            }
            layer.load_state_dict(layer_state)

    # The file holds only lin0..lin4; the lins.* entries alias the same parameters.
    linear = torch.load(linear_path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(linear, strict=False)
    missing_linear = [name for name in missing if name.startswith("lin") and "lins." not in name]
    if unexpected or missing_linear:
        raise ValueError(f"{linear_path} does not hold LPIPS AlexNet linear weights")
    model.eval().requires_grad_(False)
    return model


def _lpips_rgb(rgb_reflectance: np.ndarray) -> torch.Tensor:
    stretched = np.clip(rgb_reflectance / LPIPS_STRETCH_MAX, 0.0, 1.0) * 2.0 - 1.0
    return torch.from_numpy(stretched).float()
