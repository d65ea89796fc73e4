"""Masked pixels (the reference's nodata/mask band/NaN, the SAR's) are left out of every score.

A masked block must score exactly like the valid part on its own (cropped, or restricted to the
valid pixels), SSIM like its full-image map averaged over the windows that hold no masked pixel,
and whatever values the masked pixels hold must change nothing; through the metrics, the readers,
the CLI and the app.
"""

import json
import math

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from app import handlers
from gac_pipeline.bands import METRIC_BAND_INDICES, REFLECTANCE_SCALE, RGB_BAND_INDICES
from gac_pipeline.cli import main
from gac_pipeline.io import SarSource, read_s1, read_s2
from gac_pipeline.metrics import compute_metrics, psnr, sam_deg, ssim, structure_r

VALID_COLUMNS = 80  # of 120: the masks below cover the columns from here on
# Scores that equal those of the crop to the valid columns (SSIM: see ssim_over_valid_windows).
CROP_SCORES = ("psnr", "psnr_12", "sam_deg", "sam_deg_12", "structure_r", "edge_r", "sharpness", "sar_edge",
               "sharpness_vs_training")


@pytest.fixture(scope="module")
def tile(real_pair):
    """(prediction, SAR dB, reference DN) of a real tile; the prediction is a blurred, shifted,
    noisy copy of the reference, so no score is trivial."""
    sar, reference = read_s1(real_pair.s1_path).data, read_s2(real_pair.s2_path).data
    noise = np.random.default_rng(0).normal(0, 60, reference.shape)
    prediction = ndimage.gaussian_filter(reference, sigma=(0, 1.2, 1.2)) * 0.9 + 150 + noise
    return prediction.astype(np.float32), sar, reference


def right_block_mask(shape=(120, 120)) -> np.ndarray:
    valid = np.ones(shape, dtype=bool)
    valid[:, VALID_COLUMNS:] = False
    return valid


def crop(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[..., :VALID_COLUMNS])


def ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Plain numpy SSIM map of one band (reflectance): Gaussian window 11, sigma 1.5, reflect-padded."""
    offsets = np.arange(11) - 5
    gauss = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(gauss, gauss) / gauss.sum() ** 2

    def local_mean(image):
        patches = np.lib.stride_tricks.sliding_window_view(np.pad(image, 5, mode="reflect"), (11, 11))
        return (patches * window).sum(axis=(-2, -1))

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x, var_y = local_mean(x * x) - mu_x**2, local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim_over_valid_windows(pred, target, valid, bands=METRIC_BAND_INDICES) -> float:
    """The mean of the full-image SSIM maps over the pixels whose 11 x 11 window is all valid
    (outside the image counts as valid: the reflected pixels are valid ones)."""
    padded = np.pad(valid, 5, constant_values=True)
    whole = np.lib.stride_tricks.sliding_window_view(padded, (11, 11)).all(axis=(-2, -1))
    pred, target = (np.clip(np.asarray(x, np.float64), 0, REFLECTANCE_SCALE) / REFLECTANCE_SCALE for x in (pred, target))
    maps = [ssim_map(pred[band], target[band]) for band in bands]
    return float(np.mean([band_map[whole] for band_map in maps]))


def assert_crop_scores(scores: dict, pred, sar, reference, valid, *, training_energy=None):
    expected = compute_metrics(crop(pred), crop(sar), crop(reference), with_lpips=False,
                               training_gradient_energy=training_energy)
    for key in CROP_SCORES:
        if expected[key] is None:
            assert scores[key] is None, key
        else:  # the same pixels through the same filters: equal up to float rounding
            assert scores[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key
    for key, bands in (("ssim", METRIC_BAND_INDICES), ("ssim_12", range(12))):
        assert scores[key] == pytest.approx(ssim_over_valid_windows(pred, reference, valid, bands), abs=1e-5), key


# ----------------------------------------------------------------------------- metrics


def test_a_masked_block_scores_like_the_crop_to_the_valid_part(tile):
    pred, sar, reference = tile
    valid = right_block_mask()
    scores = compute_metrics(pred, sar, reference, valid_mask=valid, with_lpips=False, training_gradient_energy=5e-4)
    assert_crop_scores(scores, pred, sar, reference, valid, training_energy=5e-4)
    assert scores["masked_pixels"] == 40 * 120 and scores["mask_reason"] is None
    # Today's scores over every pixel differ: the masked pixels would count.
    unmasked = compute_metrics(pred, sar, reference, with_lpips=False)
    assert unmasked["masked_pixels"] == 0 and unmasked["psnr"] != pytest.approx(scores["psnr"], rel=1e-6)


def test_an_interior_block_is_left_out_of_every_score(tile):
    """A hole in the middle (no crop gives the valid part): PSNR, SAM and structure_r by hand
    over the valid pixels, SSIM over the windows that hold no masked pixel."""
    pred, _, reference = tile
    valid = np.ones((120, 120), dtype=bool)
    valid[40:70, 50:90] = False
    bands = list(METRIC_BAND_INDICES)
    p, t = (np.clip(x.astype(np.float64), 0, REFLECTANCE_SCALE) / REFLECTANCE_SCALE for x in (pred, reference))
    mse = np.mean((p - t)[bands] ** 2, axis=0)[valid].mean()
    assert psnr(pred, reference, valid_mask=valid) == pytest.approx(10 * math.log10(1 / mse), rel=1e-12)
    pv, tv = p[bands][:, valid], t[bands][:, valid]
    cosine = (pv * tv).sum(0) / np.linalg.norm(pv, axis=0) / np.linalg.norm(tv, axis=0)
    assert sam_deg(pred, reference, valid_mask=valid) == pytest.approx(np.degrees(np.arccos(cosine)).mean(), rel=1e-9)
    weights = np.array([0.2126, 0.7152, 0.0722])
    luminance = [np.tensordot(weights, x[list(RGB_BAND_INDICES)], axes=1)[valid] for x in (p, t)]
    assert structure_r(pred, reference, valid_mask=valid) == pytest.approx(np.corrcoef(*luminance)[0, 1], rel=1e-12)
    assert ssim(pred, reference, valid_mask=valid) == pytest.approx(
        ssim_over_valid_windows(pred, reference, valid), abs=1e-5)


@pytest.mark.parametrize("fill", [0.0, 10000.0, np.nan, -1e6])
def test_values_at_masked_pixels_change_no_score(tile, fill):
    pred, sar, reference = tile
    valid = np.ones((120, 120), dtype=bool)
    valid[40:70, 50:90] = False
    valid[:, :3] = False
    before = compute_metrics(pred, sar, reference, valid_mask=valid, with_lpips=False, training_gradient_energy=5e-4)
    filled = [np.where(valid, array, np.float32(fill)) for array in (pred, sar, reference)]
    after = compute_metrics(*filled, valid_mask=valid, with_lpips=False, training_gradient_energy=5e-4)
    assert after == before


def test_too_few_valid_pixels_give_nan_with_a_reason(tile):
    pred, sar, reference = tile
    valid = np.zeros((120, 120), dtype=bool)
    valid[20:29, 20:29] = True  # 9 x 9: pixels to compare, but no whole 11 x 11 window
    scores = compute_metrics(pred, sar, reference, valid_mask=valid)
    assert math.isfinite(scores["psnr"]) and math.isfinite(scores["structure_r"])
    assert math.isnan(scores["ssim"]) and math.isnan(scores["ssim_12"])
    assert math.isfinite(scores["edge_r"])  # 3 x 3 pixels 3 px inside the block
    assert "ssim" in scores["mask_reason"] and "11x11" in scores["mask_reason"]
    assert "edge_r" not in scores["mask_reason"] and "\n" not in scores["mask_reason"]
    # LPIPS sees the whole image through its network: with masked pixels it is not computed.
    assert scores["lpips"] is None and "masked" in scores["lpips_reason"]

    valid[:] = False
    valid[20:25, 20:25] = True  # 5 x 5: nothing 3 px inside it
    scores = compute_metrics(pred, sar, None, valid_mask=valid, training_gradient_energy=5e-4)
    assert math.isnan(scores["sar_edge"]) and math.isnan(scores["sharpness_vs_training"])
    assert "sar_edge" in scores["mask_reason"] and "sharpness_vs_training" in scores["mask_reason"]


def test_a_masked_sar_is_left_out_like_a_masked_reference(tile, tmp_path, real_pair):
    pred, _, reference = tile
    path = write_copy(real_pair.s1_path, tmp_path / "s1_masked.tif", block_value=np.nan)
    sar = read_s1(path)
    np.testing.assert_array_equal(sar.valid_mask, right_block_mask())
    scores = compute_metrics(pred, sar.data, reference, valid_mask=sar.valid_mask, with_lpips=False)
    assert_crop_scores(scores, pred, sar.data, reference, sar.valid_mask)


# ----------------------------------------------------------------------------- readers


def write_copy(source, path, *, block_value=None, nodata=None, mask_band=False):
    """A copy of ``source`` whose columns from ``VALID_COLUMNS`` on are masked: set to
    ``block_value`` (declared as ``nodata`` if given), and/or outside a GDAL mask band."""
    with rasterio.open(source) as dataset:
        profile, data, descriptions = dataset.profile, dataset.read(), dataset.descriptions
    if block_value is not None:
        data = data.astype(np.float32) if np.isnan(block_value) else data
        data[..., VALID_COLUMNS:] = block_value
    profile.update(dtype=data.dtype, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data)
        for index, description in enumerate(descriptions, start=1):
            dataset.set_band_description(index, description)
        if mask_band:
            dataset.write_mask(right_block_mask(data.shape[1:]))
    return path


def test_readers_honour_a_gdal_mask_band(real_pair, tmp_path):
    reference = read_s2(write_copy(real_pair.s2_path, tmp_path / "s2_mask.tif", mask_band=True))
    np.testing.assert_array_equal(reference.valid_mask, right_block_mask())
    assert any("masked 4800" in note and "left out of every score" in note for note in reference.notes)
    sar_path = write_copy(real_pair.s1_path, tmp_path / "s1_mask.tif", mask_band=True)
    np.testing.assert_array_equal(read_s1(sar_path).valid_mask, right_block_mask())
    with SarSource(sar_path, preview_size=32) as source:  # windows, and the fill values from a preview
        _, valid = source.read(10, 70, 20, 20)
        np.testing.assert_array_equal(valid, right_block_mask()[10:30, 70:90])


# ----------------------------------------------------------------------------- CLI and app


def read_outputs(out) -> dict[str, np.ndarray]:
    outputs = {}
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        with rasterio.open(out / f"{name}.tif") as dataset:
            outputs[name] = dataset.read().astype(np.float32)
    return outputs


def test_cli_scores_a_masked_reference_on_its_valid_part(saved_tiny_pipeline, real_pair, tmp_path):
    masked = write_copy(real_pair.s2_path, tmp_path / "s2_nodata.tif", block_value=65535, nodata=65535)
    out = tmp_path / "out"
    assert main(["translate", str(real_pair.s1_path), "--out", str(out), "--reference", str(masked),
                 "--preset", str(saved_tiny_pipeline), "--no-progress"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    sar, reference, valid = read_s1(real_pair.s1_path).data, read_s2(real_pair.s2_path).data, right_block_mask()
    for name, output in read_outputs(out).items():
        scores = report["stages"][name]
        assert_crop_scores(scores, output, sar, reference, valid)
        assert scores["masked_pixels"] == 4800 and scores["lpips"] is None and "masked" in scores["lpips_reason"]
    assert report["reference_sar_edge"] == pytest.approx(
        compute_metrics(crop(reference), crop(sar))["sar_edge"], rel=1e-12)
    assert any(note.startswith("scores leave out 4800 masked pixels") for note in report["notes"])
    assert any("masked 4800 NaN/inf/nodata pixels" in note for note in report["notes"])  # the reference's own note


def test_cli_scores_a_masked_sar_on_its_valid_part(saved_tiny_pipeline, real_pair, tmp_path):
    masked = write_copy(real_pair.s1_path, tmp_path / "s1_nan.tif", block_value=np.nan)
    out = tmp_path / "out"
    assert main(["translate", str(masked), "--out", str(out), "--reference", str(real_pair.s2_path),
                 "--preset", str(saved_tiny_pipeline), "--no-progress"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    sar, reference, valid = read_s1(masked).data, read_s2(real_pair.s2_path).data, right_block_mask()
    for name, output in read_outputs(out).items():
        assert np.isnan(output[:, ~valid]).all()  # written as nodata; never zero-filled for scoring
        assert_crop_scores(report["stages"][name], output, sar, reference, valid)


def test_app_scores_a_masked_reference_on_its_valid_part(saved_tiny_pipeline, real_pair, tmp_path):
    masked = write_copy(real_pair.s2_path, tmp_path / "s2_nodata.tif", block_value=65535, nodata=65535)
    result = handlers.translate(real_pair.s1_path, masked, str(saved_tiny_pipeline), biome=real_pair.biome,
                                out_dir=tmp_path / "out")
    scores = json.loads((tmp_path / "out" / "metrics.json").read_text())["scores"]
    sar, reference = read_s1(real_pair.s1_path).data, read_s2(real_pair.s2_path).data
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        assert_crop_scores(scores[name], result["dn"][name], sar, reference, right_block_mask())
    assert any(note.startswith("scores leave out 4800 masked pixels") for note in result["notes"])
