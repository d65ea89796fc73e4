"""Tests for gac_pipeline.metrics: known values, conventions and the offline LPIPS path."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from gac_pipeline import metrics
from gac_pipeline.bands import METRIC_BAND_INDICES, S2L2A_BANDS
from gac_pipeline.metrics import (
    compute_metrics,
    edge_r,
    gradient_energy,
    lpips_available,
    lpips_score,
    psnr,
    sam_deg,
    sar_edge_agreement,
    sharpness,
    ssim,
    structure_r,
    to_json_safe,
)

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "bigearthnet" / "benv2"
B01, B02, B03, B04 = (S2L2A_BANDS.index(name) for name in ("B01", "B02", "B03", "B04"))


def random_dn(seed: int = 0, shape: tuple[int, ...] = (12, 32, 32)) -> np.ndarray:
    """Random DN below 9900, so a +100 DN offset never reaches the 10000 clip."""
    return np.random.default_rng(seed).uniform(0, 9900, size=shape)


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Plain numpy SSIM of one band: Gaussian window 11, sigma 1.5, reflect-padded borders."""
    offsets = np.arange(11) - 5
    gauss = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(gauss, gauss) / gauss.sum() ** 2

    def local_mean(image: np.ndarray) -> np.ndarray:
        padded = np.pad(image, 5, mode="reflect")
        patches = np.lib.stride_tricks.sliding_window_view(padded, (11, 11))
        return (patches * window).sum(axis=(-2, -1))

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim_map.mean())


def step_pair(sar_edge: tuple[str, int], optical_edge: tuple[str, int], size: int = 40):
    """A SAR tile and an optical tile, each with one step edge ("col" or "row", position)."""
    rng = np.random.default_rng(1)
    s1 = np.full((2, size, size), -18.0)
    optical = np.full((12, size, size), 800.0)
    for image, (axis, position), high in ((s1, sar_edge, -6.0), (optical, optical_edge, 2500.0)):
        if axis == "col":
            image[:, :, position:] = high
        else:
            image[:, position:, :] = high
    s1 += rng.normal(0, 1.5, size=s1.shape)  # speckle-like noise for the median filter
    return optical, s1


# --- PSNR ---------------------------------------------------------------------------------


def test_psnr_identical_is_inf():
    tile = random_dn()
    assert psnr(tile, tile.copy()) == math.inf
    assert psnr(tile, tile.copy(), bands=None) == math.inf


def test_psnr_constant_offset_of_100_dn_is_40_db():
    target = random_dn()
    # Reflectance error 0.01 everywhere -> MSE 1e-4 -> 10 log10(1 / 1e-4) = 40 dB.
    assert psnr(target + 100, target) == pytest.approx(40.0, abs=1e-9)
    assert psnr(target + 100, target, bands="all") == pytest.approx(40.0, abs=1e-9)


def test_psnr_pools_one_mse_over_bands():
    target = random_dn() * 0.9  # stay below 9800 DN so +200 is not clipped
    pred = target.copy()
    pred[B02] += 200  # error 0.02 on one of four bands: MSE = 0.02**2 / 4 = 1e-4
    assert psnr(pred, target) == pytest.approx(40.0, abs=1e-9)


def test_band_selection_b01_only_counts_in_all_bands():
    target = random_dn()
    pred = target.copy()
    pred[B01] += 500
    assert psnr(pred, target) == math.inf
    assert math.isfinite(psnr(pred, target, bands=None))
    assert ssim(pred, target) == pytest.approx(1.0, abs=1e-6)
    assert ssim(pred, target, bands=None) < 1.0
    assert sam_deg(pred, target) == 0.0
    assert sam_deg(pred, target, bands="all") > 0.0


def test_reflectance_is_clipped_to_0_10000_dn():
    target = np.full((12, 16, 16), 10000, dtype=np.uint16)
    assert psnr(np.full((12, 16, 16), 12000, dtype=np.uint16), target) == math.inf
    assert psnr(np.full((12, 16, 16), 10100.0), target) == math.inf  # not 40 dB
    assert psnr(np.full((12, 16, 16), -300.0), np.zeros((12, 16, 16))) == math.inf


def test_valid_mask_ignores_pixels_in_psnr_and_sam():
    target = random_dn()
    pred = target.copy()
    pred[:, :4, :] = 0.0  # damage the top rows only
    mask = np.ones((32, 32), dtype=bool)
    mask[:4, :] = False
    assert math.isfinite(psnr(pred, target))
    assert psnr(pred, target, valid_mask=mask) == math.inf
    assert sam_deg(pred, target, valid_mask=mask) == 0.0
    assert math.isnan(psnr(pred, target, valid_mask=np.zeros((32, 32), dtype=bool)))


def test_torch_and_numpy_inputs_and_batches_agree():
    target, pred = random_dn(0), random_dn(1)
    assert psnr(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(
        psnr(pred, target)
    )
    dn = torch.from_numpy(target.astype(np.uint16))
    mask = torch.ones(32, 32, dtype=torch.bool)
    assert psnr(dn, dn.to(torch.bfloat16), valid_mask=mask) > 40.0  # numpy has no bfloat16
    batch_pred, batch_target = np.stack([pred, target]), np.stack([target + 100, target])
    # PSNR pools one MSE over the batch; SSIM and SAM average equally weighted tiles.
    mse_first = 10 ** (-psnr(pred, target + 100) / 10)
    assert psnr(batch_pred, batch_target) == pytest.approx(10 * math.log10(2 / mse_first))
    assert ssim(batch_pred, batch_target) == pytest.approx((ssim(pred, target + 100) + 1) / 2)
    assert sam_deg(batch_pred, batch_target) == pytest.approx(sam_deg(pred, target + 100) / 2)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="12, H, W"):
        psnr(np.zeros((4, 8, 8)), np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="differ"):
        psnr(np.zeros((12, 8, 8)), np.zeros((12, 8, 9)))


# --- SSIM ---------------------------------------------------------------------------------


def test_ssim_identical_is_one():
    tile = random_dn()
    assert ssim(tile, tile.copy()) == pytest.approx(1.0, abs=1e-6)


def test_ssim_of_degraded_image_is_below_one_and_symmetric():
    rng = np.random.default_rng(2)
    target = random_dn()
    noisy = target + rng.normal(0, 800, size=target.shape)
    blurred = (target + np.roll(target, 1, axis=-1) + np.roll(target, 1, axis=-2)) / 3
    for degraded in (noisy, blurred):
        score = ssim(degraded, target)
        assert score < 0.99
        assert ssim(target, degraded) == pytest.approx(score, abs=1e-6)


def test_ssim_matches_numpy_reference():
    pred, target = random_dn(3), random_dn(4)
    # Make the images related so SSIM is far from 0.
    pred = 0.5 * pred + 0.5 * target
    expected = np.mean(
        [reference_ssim(pred[band] / 10000, target[band] / 10000) for band in METRIC_BAND_INDICES]
    )
    assert ssim(pred, target) == pytest.approx(expected, abs=1e-4)


# --- SAM ----------------------------------------------------------------------------------


def test_sam_identical_and_scaled_are_zero():
    tile = random_dn()
    assert sam_deg(tile, tile.copy()) == 0.0
    assert sam_deg(tile * 0.5, tile) == pytest.approx(0.0, abs=1e-6)  # angle ignores brightness


def test_sam_known_angles():
    pred = np.zeros((12, 1, 2))
    target = np.zeros((12, 1, 2))
    # Pixel 0: (B02, B03) = (1000, 0) vs (1000, 1000) -> 45 degrees. Pixel 1: identical -> 0.
    pred[B02, 0, 0] = 1000
    target[B02, 0, 0] = target[B03, 0, 0] = 1000
    pred[B02, 0, 1] = target[B02, 0, 1] = 500
    assert sam_deg(pred, target) == pytest.approx(22.5, abs=1e-9)
    assert sam_deg(pred[:, :, :1], target[:, :, :1]) == pytest.approx(45.0, abs=1e-9)


def test_sam_zero_vectors():
    zeros = np.zeros((12, 2, 2))
    assert sam_deg(zeros, zeros) == 0.0  # both zero: agree
    assert sam_deg(zeros, np.full((12, 2, 2), 1000.0)) == pytest.approx(90.0)  # one zero


# --- SAR-edge agreement -------------------------------------------------------------------


def test_sar_edge_high_when_edges_coincide():
    optical, s1 = step_pair(("col", 20), ("col", 20))
    assert sar_edge_agreement(optical, s1) > 0.8


def test_sar_edge_low_when_edges_shifted_or_orthogonal():
    for optical_edge in (("col", 30), ("row", 20)):
        optical, s1 = step_pair(("col", 20), optical_edge)
        assert sar_edge_agreement(optical, s1) < 0.2


def test_sar_edge_uses_red_green_blue_band_order():
    # Red (B04) steps where SAR steps, blue (B02) steps elsewhere, same size. Luminance
    # weighs red 0.2126 and blue 0.0722, so the correct order makes the aligned edge
    # dominate; reading the bands as B, G, R makes the misplaced edge dominate.
    _, s1 = step_pair(("col", 20), ("col", 20))
    optical = np.full((12, 40, 40), 800.0)
    optical[B04, :, 20:] = 2500.0
    optical[B02, :, 30:] = 2500.0
    swapped = optical.copy()
    swapped[[B02, B04]] = optical[[B04, B02]]
    correct_score = sar_edge_agreement(optical, s1)
    swapped_score = sar_edge_agreement(swapped, s1)
    assert correct_score > 0.8
    assert swapped_score < 0.5


def test_sar_edge_nan_for_flat_optical_and_errors_for_bad_shapes():
    _, s1 = step_pair(("col", 20), ("col", 20))
    assert math.isnan(sar_edge_agreement(np.full((12, 40, 40), 1234.0), s1))
    with pytest.raises(ValueError, match="S1GRD"):
        sar_edge_agreement(np.zeros((12, 40, 40)), np.zeros((2, 30, 30)))


def test_real_tile_metrics():
    rasterio = pytest.importorskip("rasterio")
    pair = min(p for p in DATA_DIR.iterdir() if p.is_dir())
    with rasterio.open(pair / "S1GRD.tif") as src:
        s1 = src.read()
    with rasterio.open(pair / "S2L2A.tif") as src:
        s2 = src.read()
    ceiling = sar_edge_agreement(s2, s1)
    assert math.isfinite(ceiling) and -1.0 <= ceiling <= 1.0

    result = compute_metrics(s2, s1, s2, with_lpips=False)
    assert result["psnr"] == math.inf and result["sam_deg"] == 0.0
    assert result["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert result["sar_edge"] == ceiling
    assert result["structure_r"] == pytest.approx(1.0) and result["edge_r"] == pytest.approx(1.0)
    assert result["sharpness"] == pytest.approx(1.0)

    # The per-band mean image: a weak but real baseline (about 21-24 dB, SSIM ~0.6-0.7 on these tiles).
    mean_image = np.broadcast_to(s2.mean(axis=(1, 2), keepdims=True), s2.shape)
    baseline = compute_metrics(mean_image, s1, s2, with_lpips=False)
    assert 15.0 < baseline["psnr"] < 35.0 and 0.0 < baseline["ssim"] < 1.0
    assert math.isnan(baseline["sar_edge"])  # a flat image has no edges
    # ... and draws nothing: no structure, no edges, no texture (0, not nan: the reference has them).
    assert baseline["structure_r"] == baseline["edge_r"] == baseline["sharpness"] == 0.0


# --- structure, edges, sharpness ----------------------------------------------------------


def textured_dn(seed: int = 0, size: int = 64) -> np.ndarray:
    """A smooth random scene (blobs of ~6 px) with band-dependent brightness, DN 300..3300."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=3.0, mode="reflect")
    field = (field - field.min()) / np.ptp(field)
    gains = np.linspace(0.6, 1.0, 12)[:, None, None]
    return 300.0 + 3000.0 * gains * field[None]


def test_flat_prediction_scores_zero():
    scene = textured_dn()
    flat = np.full_like(scene, 1200.0)  # even with a plausible colour
    assert structure_r(flat, scene) == 0.0
    assert edge_r(flat, scene) == 0.0
    assert sharpness(flat, scene) == 0.0
    assert gradient_energy(flat) == 0.0


def test_identical_scores_one():
    scene = textured_dn()
    assert structure_r(scene, scene) == pytest.approx(1.0, abs=1e-12)
    assert edge_r(scene, scene) == pytest.approx(1.0, abs=1e-12)
    assert sharpness(scene, scene) == pytest.approx(1.0, abs=1e-12)
    assert gradient_energy(scene) > 0


def test_structure_is_brightness_blind_but_sign_aware():
    scene = textured_dn()
    assert structure_r(0.5 * scene + 400.0, scene) == pytest.approx(1.0, abs=1e-9)
    inverted = 3600.0 - scene  # bright where the reference is dark
    assert structure_r(inverted, scene) == pytest.approx(-1.0, abs=1e-9)
    other_scene = textured_dn(seed=5)
    assert abs(structure_r(other_scene, scene)) < 0.5


def test_blurred_copy_is_less_sharp_but_keeps_structure():
    scene = textured_dn()
    blurred = ndimage.gaussian_filter(scene, sigma=(0, 2.0, 2.0), mode="reflect")  # spatial blur only
    assert sharpness(blurred, scene) < 0.7
    assert structure_r(blurred, scene) > 0.8
    assert 0.0 < edge_r(blurred, scene) <= 1.0


def test_noisy_copy_is_sharper_than_the_reference():
    scene = textured_dn()
    noise = np.random.default_rng(1).normal(0.0, 300.0, size=scene.shape[1:])
    noisy = scene + noise[None]  # invented texture in every band
    assert sharpness(noisy, scene) > 1.5
    assert structure_r(noisy, scene) > 0.5  # the scene is still there under the noise


def test_flat_reference_is_undefined():
    scene = textured_dn()
    flat = np.full_like(scene, 900.0)
    assert math.isnan(structure_r(scene, flat))
    assert math.isnan(edge_r(scene, flat))
    assert math.isnan(sharpness(scene, flat))
    assert math.isnan(structure_r(flat, flat))  # nothing to draw, whatever the prediction
    assert math.isnan(sharpness(scene, 0.0))  # a reference energy of 0 too


def test_sharpness_against_a_number_is_the_ratio_of_gradient_energies():
    scene = textured_dn()
    pred = ndimage.gaussian_filter(scene, sigma=(0, 1.0, 1.0), mode="reflect")
    reference_energy = gradient_energy(scene)
    expected = gradient_energy(pred) / reference_energy
    assert sharpness(pred, reference_energy) == pytest.approx(expected, rel=1e-12)
    assert sharpness(pred, scene) == pytest.approx(expected, rel=1e-12)
    assert sharpness(pred, np.float32(reference_energy)) == pytest.approx(expected, rel=1e-6)
    assert sharpness(pred, reference_energy / 3) == pytest.approx(3 * expected, rel=1e-12)


# --- LPIPS --------------------------------------------------------------------------------


def write_random_alexnet(checkpoints: Path) -> None:
    """A random stand-in for torchvision's AlexNet file (features only, same key names)."""
    torch.manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3)}
    shapes |= {8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    state = {}
    for index, shape in shapes.items():
        state[f"features.{index}.weight"] = torch.randn(shape) * 0.05
        state[f"features.{index}.bias"] = torch.zeros(shape[0])
    state["classifier.6.bias"] = torch.zeros(1000)  # present in the real file, unused
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / metrics.ALEXNET_WEIGHTS_FILE)


def test_lpips_missing_weights_gives_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected_path = str(tmp_path / "checkpoints" / metrics.ALEXNET_WEIGHTS_FILE)
    available, reason = lpips_available()
    assert not available and expected_path in reason and "not found" in reason
    tile = random_dn()
    assert lpips_score(tile, tile) == (None, reason)
    result = compute_metrics(tile, np.zeros((2, 32, 32)), tile)
    assert result["lpips"] is None and result["lpips_reason"] == reason


def test_lpips_builds_from_local_files_only(monkeypatch, tmp_path):
    # Random trunk weights: this checks the offline build and the input path, not a score.
    write_random_alexnet(tmp_path / "checkpoints")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(metrics, "_LPIPS_MODELS", {})
    assert lpips_available() == (True, None)
    target = random_dn(0, shape=(12, 64, 64))
    assert lpips_score(target, target.copy()) == (0.0, None)
    distance, reason = lpips_score(random_dn(1, shape=(12, 64, 64)), target)
    assert reason is None and distance > 0.0
    assert len(metrics._LPIPS_MODELS) == 1  # built once, reused


@pytest.mark.skipif(not lpips_available()[0], reason="AlexNet weights not in the torch hub cache")
def test_lpips_real_weights():
    target = random_dn(0, shape=(12, 64, 64))
    distance, reason = lpips_score(target * 0.9, target)
    assert reason is None and 0.0 < distance < 1.0


# --- compute_metrics and JSON -------------------------------------------------------------

TARGET_KEYS = {"psnr", "ssim", "sam_deg", "lpips", "psnr_12", "ssim_12", "sam_deg_12",
               "structure_r", "edge_r", "sharpness"}
ALWAYS_KEYS = {"lpips_reason", "sar_edge", "sharpness_vs_training", "sharpness_vs_training_reason",
               "masked_pixels", "mask_reason"}


def test_compute_metrics_without_target():
    optical, s1 = step_pair(("col", 20), ("col", 20))
    result = compute_metrics(optical, s1)
    assert set(result) == TARGET_KEYS | ALWAYS_KEYS
    assert all(result[key] is None for key in TARGET_KEYS)
    assert result["sar_edge"] > 0.8 and isinstance(result["lpips_reason"], str)
    # No training median passed: no number, and a reason that says so.
    assert result["sharpness_vs_training"] is None
    assert result["sharpness_vs_training_reason"] == "no training median stored with this preset"


def test_compute_metrics_without_target_with_training_median():
    optical, s1 = step_pair(("col", 20), ("col", 20))
    energy = gradient_energy(optical)
    result = compute_metrics(optical, s1, training_gradient_energy=energy / 4)
    assert set(result) == TARGET_KEYS | ALWAYS_KEYS
    assert all(result[key] is None for key in TARGET_KEYS)  # still no target-based scores
    assert result["sharpness_vs_training"] == pytest.approx(4.0)
    assert result["sharpness_vs_training_reason"] is None


def test_compute_metrics_with_target():
    optical, s1 = step_pair(("col", 20), ("col", 20))
    pred = optical + 100
    pred[B01] += 400
    result = compute_metrics(pred, s1, optical, with_lpips=False)
    assert set(result) == TARGET_KEYS | ALWAYS_KEYS
    assert result["psnr"] == pytest.approx(40.0)
    assert result["psnr_12"] < result["psnr"]
    assert all(isinstance(result[key], float) for key in TARGET_KEYS - {"lpips"})
    assert result["lpips"] is None and result["lpips_reason"] == "LPIPS not requested"
    # A brightness offset changes no structure, edge or texture.
    assert result["structure_r"] == pytest.approx(1.0) and result["edge_r"] == pytest.approx(1.0)
    assert result["sharpness"] == pytest.approx(1.0)
    assert result["sharpness_vs_training"] is None and result["sharpness_vs_training_reason"]

    with_median = compute_metrics(pred, s1, optical, with_lpips=False,
                                  training_gradient_energy=2 * gradient_energy(optical))
    assert set(with_median) == TARGET_KEYS | ALWAYS_KEYS
    assert with_median["sharpness_vs_training"] == pytest.approx(0.5)
    assert with_median["sharpness_vs_training_reason"] is None
    assert with_median["sharpness"] == pytest.approx(1.0)  # against the target, not the median


def test_to_json_safe():
    raw = {
        "psnr": math.inf,
        "low": -math.inf,
        "sar_edge": math.nan,
        "ssim": np.float32(0.5),
        "count": np.int64(3),
        "flag": np.bool_(True),
        "nested": [torch.tensor(2.0), (1.0, None)],
        "lpips_reason": "n/a",
    }
    safe = to_json_safe(raw)
    assert safe == {
        "psnr": "inf",
        "low": "-inf",
        "sar_edge": "nan",
        "ssim": 0.5,
        "count": 3,
        "flag": True,
        "nested": [2.0, [1.0, None]],
        "lpips_reason": "n/a",
    }
    json.dumps(safe, allow_nan=False)
