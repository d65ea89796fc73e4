"""Baselines and the UNet control stored with a preset: known-answer fits, round trips, refusals."""

import json

import numpy as np
import pytest
import torch

from gac_pipeline.control import ControlConfig, UNetControl
from gac_pipeline.hub import CheckpointSafetyError
from gac_pipeline.metrics import gradient_energy
from gac_pipeline.references import (
    REFERENCES_DIR,
    References,
    load_for_preset,
    median_gradient_energy,
    training_gradient_energy_for_preset,
    unsharp_mask,
)
from gac_pipeline.stages.base import CheckpointError


def linear_world(seed: int = 0, tiles: int = 3, size: int = 12):
    """SAR and optical where every band is exactly a + b VV + c VH: the linear baseline's answer is known."""
    rng = np.random.default_rng(seed)
    s1 = np.stack([rng.uniform(-20, -5, (tiles, size, size)), rng.uniform(-30, -12, (tiles, size, size))], axis=1)
    weights = rng.uniform(-80, 80, (2, 12))
    offsets = rng.uniform(500, 3000, 12)
    s2 = np.einsum("nchw,cb->nbhw", s1, weights) + offsets[None, :, None, None]
    return s1.astype(np.float32), s2.astype(np.float32)


def tiny_control(seed: int = 0) -> UNetControl:
    torch.manual_seed(seed)
    control = UNetControl.build(ControlConfig(width=4, levels=2))
    torch.nn.init.normal_(control.out.weight, std=0.1)  # a control that actually uses the SAR
    return control


def test_fit_recovers_linear_relation_and_band_means():
    s1, s2 = linear_world()
    s1_holes, s2_holes = s1.copy(), s2.copy()
    s1_holes[0, 0, 0, 0] = np.nan  # non-finite pixels are ignored, not fitted
    s2_holes[1, 3, 2, 2] = np.inf
    refs = References.fit(torch.from_numpy(s1_holes), s2_holes, source="synthetic")
    np.testing.assert_allclose(refs.predict("linear_baseline", s1), s2, rtol=1e-4, atol=0.05)
    np.testing.assert_allclose(refs.predict("linear_baseline", s1[0]), s2[0], rtol=1e-4, atol=0.05)
    clean = References.fit(s1, s2, source="synthetic")
    np.testing.assert_allclose(clean.mean_dn, s2.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-9)
    mean_image = clean.predict("mean_baseline", s1[:2])
    assert mean_image.shape == (2, 12, 12, 12) and mean_image.dtype == np.float32
    np.testing.assert_allclose(mean_image[1, :, 5, 7], clean.mean_dn, rtol=1e-6)
    assert clean.train_tiles == 3 and clean.linear.shape == (4, 12)


def test_fit_stores_the_median_training_gradient_energy():
    s1, s2 = linear_world(tiles=3)
    s2 = s2.copy()
    s2[1] *= 2.0  # three tiles of clearly different texture: the median is the middle one
    s2[2] *= 0.25
    energies = sorted(gradient_energy(tile) for tile in s2)
    assert energies[0] < energies[1] < energies[2]
    refs = References.fit(s1, s2, source="synthetic")
    assert refs.training_gradient_energy == pytest.approx(energies[1], rel=1e-12)
    assert refs.training_gradient_energy != pytest.approx(float(np.mean(energies)), rel=1e-3)  # median, not mean
    # A tile with a NaN pixel in a luminance band has no energy and is left out of the median.
    s2[0, 2, 5, 5] = np.nan  # B03
    expected = float(np.median([gradient_energy(s2[1]), gradient_energy(s2[2])]))
    assert median_gradient_energy(s2) == pytest.approx(expected, rel=1e-12)
    assert References.fit(s1, s2, source="synthetic").training_gradient_energy == pytest.approx(expected, rel=1e-12)
    assert median_gradient_energy(np.full((2, 12, 8, 8), np.nan)) is None


def test_training_gradient_energy_is_saved_and_reloaded(tmp_path):
    s1, s2 = linear_world()
    refs = References.fit(s1, s2, source="synthetic")
    assert refs.training_gradient_energy is not None and refs.training_gradient_energy > 0
    refs.save(tmp_path)
    record = json.loads((tmp_path / REFERENCES_DIR / "references.json").read_text())
    assert record["training_gradient_energy"] == refs.training_gradient_energy
    loaded = References.load(tmp_path)
    assert loaded.training_gradient_energy == refs.training_gradient_energy
    assert training_gradient_energy_for_preset(str(tmp_path)) == (refs.training_gradient_energy, None)


def test_old_references_without_the_median_still_load(tmp_path):
    s1, s2 = linear_world()
    refs = References.fit(s1, s2, source="synthetic")
    refs.control = tiny_control()
    refs.save(tmp_path)
    record_path = tmp_path / REFERENCES_DIR / "references.json"
    record = json.loads(record_path.read_text())
    del record["training_gradient_energy"]  # as written before the field existed
    record_path.write_text(json.dumps(record, indent=2, sort_keys=True))
    loaded = References.load(tmp_path)
    assert loaded.training_gradient_energy is None and loaded.control is not None  # hashes still check
    np.testing.assert_array_equal(loaded.predict("linear_baseline", s1), refs.predict("linear_baseline", s1))
    value, reason = training_gradient_energy_for_preset(str(tmp_path))
    assert value is None and "predates" in reason
    # Saving again writes the field (as null when unknown) and loads back the same.
    loaded.save(tmp_path)
    assert json.loads(record_path.read_text())["training_gradient_energy"] is None
    assert References.load(tmp_path).training_gradient_energy is None


def test_bad_training_gradient_energy_is_refused(tmp_path):
    s1, s2 = linear_world()
    References.fit(s1, s2, source="synthetic").save(tmp_path)
    record_path = tmp_path / REFERENCES_DIR / "references.json"
    record = json.loads(record_path.read_text())
    for bad in ("12.5", [1.0], True):
        record_path.write_text(json.dumps({**record, "training_gradient_energy": bad}))
        with pytest.raises(CheckpointError, match="training_gradient_energy"):
            References.load(tmp_path)
    # ... but the translation does not need it: the preset helper turns that into a reason.
    value, reason = training_gradient_energy_for_preset(str(tmp_path))
    assert value is None and "could not be loaded" in reason


def test_preset_without_references_has_no_training_median(tmp_path):
    value, reason = training_gradient_energy_for_preset(str(tmp_path))
    assert value is None and "no references" in reason


def test_committed_mini_references_load():
    from gac_pipeline.presets import PRESETS

    refs = References.load(PRESETS["mini"])
    assert refs is not None  # with or without the median (it is added when the preset is retrained)
    assert refs.training_gradient_energy is None or refs.training_gradient_energy > 0


def test_fit_rejects_mismatched_shapes():
    s1, s2 = linear_world()
    with pytest.raises(ValueError, match="same tiles"):
        References.fit(s1[:2], s2, source="x")
    with pytest.raises(ValueError, match="expected shape"):
        References.fit(s1[0], s2[0], source="x")


def test_availability_and_unknown_variants():
    s1, s2 = linear_world()
    refs = References.fit(s1, s2, source="synthetic")
    assert refs.available()["unet_control"] is not None
    assert refs.available()["mean_baseline"] is None and refs.available()["linear_baseline"] is None
    with pytest.raises(ValueError, match="unet_control"):
        refs.predict("unet_control", s1)
    with pytest.raises(ValueError, match="unknown reference variant"):
        refs.predict("v1", s1)


def test_control_shapes_mean_start_and_size_check():
    control = UNetControl.build(ControlConfig(width=4, levels=2))
    x = torch.randn(2, 2, 16, 24) * 4 - 15
    assert control(x).shape == (2, 12, 16, 24)
    mean = torch.linspace(300, 3000, 12)
    control.start_at_mean(mean)
    torch.testing.assert_close(control(x), mean.view(1, 12, 1, 1).expand(2, 12, 16, 24), rtol=1e-5, atol=1e-2)
    with pytest.raises(ValueError, match="15x16"):
        control(torch.zeros(1, 2, 15, 16))


def test_round_trip_with_control_predicts_the_same(tmp_path):
    s1, s2 = linear_world(tiles=2, size=10)  # 10 px: the control path must pad and crop back
    refs = References.fit(s1, s2, source="synthetic, 2 tiles")
    refs.control = tiny_control()
    written = refs.save(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == {
        "references/references.json", "references/control/config.json", "references/control/model.safetensors"}
    loaded = load_for_preset(str(tmp_path))
    assert loaded.source == "synthetic, 2 tiles" and loaded.train_tiles == 2 and loaded.control is not None
    for variant in ("mean_baseline", "linear_baseline", "unet_control"):
        expected = refs.predict(variant, s1)
        assert expected.shape == (2, 12, 10, 10)
        np.testing.assert_array_equal(loaded.predict(variant, s1), expected)


def test_saving_without_control_drops_an_old_one(tmp_path):
    s1, s2 = linear_world()
    refs = References.fit(s1, s2, source="synthetic")
    refs.control = tiny_control()
    refs.save(tmp_path)
    refs.control = None
    assert len(refs.save(tmp_path)) == 1
    loaded = References.load(tmp_path)
    assert loaded.control is None and loaded.available()["unet_control"] is not None


def test_tampered_or_pickled_or_malformed_is_refused(tmp_path):
    s1, s2 = linear_world()
    refs = References.fit(s1, s2, source="synthetic")
    refs.control = tiny_control()
    refs.save(tmp_path)
    weights = tmp_path / REFERENCES_DIR / "control" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(CheckpointSafetyError, match="SHA-256"):
        References.load(tmp_path)
    weights.write_bytes(original)
    (tmp_path / REFERENCES_DIR / "extra.pt").write_bytes(b"not really a pickle")
    with pytest.raises(CheckpointSafetyError, match="pickled"):
        References.load(tmp_path)
    (tmp_path / REFERENCES_DIR / "extra.pt").unlink()
    record_path = tmp_path / REFERENCES_DIR / "references.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "linear": record["linear"][:3]}))
    with pytest.raises(CheckpointError, match="linear has shape"):
        References.load(tmp_path)
    record_path.unlink()
    with pytest.raises(CheckpointError, match="missing references.json"):
        References.load(tmp_path)


def test_no_references_folder_means_none(tmp_path):
    assert References.load(tmp_path) is None
    assert load_for_preset(str(tmp_path)) is None


def test_control_load_checks_keys(tmp_path):
    tiny_control().save(tmp_path / "control")
    bigger = ControlConfig(width=4, levels=3)
    bigger.save(tmp_path / "control" / "config.json")
    with pytest.raises(CheckpointError, match="keys do not match|do not fit"):
        UNetControl.load(tmp_path / "control")
    (tmp_path / "control" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights"):
        UNetControl.load(tmp_path / "control")


def test_unsharp_mask_known_cases():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 3000, (12, 20, 20)).astype(np.float32)
    np.testing.assert_allclose(unsharp_mask(image, 5, 1.0), image, rtol=1e-6, atol=1e-3)  # gain 1: the image
    flat = np.full((12, 20, 20), 1234.0, dtype=np.float32)
    np.testing.assert_allclose(unsharp_mask(flat, 5, 4.0), flat, rtol=1e-6)  # nothing to sharpen
    # A step edge: gain 2 overshoots on both sides by half the step's local contrast, and
    # gradient energy (what sharpness compares) rises.
    step = np.zeros((1, 8, 8), dtype=np.float32)
    step[..., 4:] = 100.0
    sharpened = unsharp_mask(step, 3, 2.0)
    np.testing.assert_allclose(sharpened[0, 0], [0, 0, 0, -100 / 3, 400 / 3, 100, 100, 100], atol=1e-3)
    assert gradient_energy(unsharp_mask(image, 5, 3.0)) > gradient_energy(image)


def test_unsharp_setting_round_trips_and_older_files_have_none(tmp_path):
    s1, s2 = linear_world()
    refs = References.fit(s1, s2, source="synthetic")
    assert refs.unsharp is None
    refs.save(tmp_path)
    assert References.load(tmp_path).unsharp is None
    refs.unsharp = {"size": 5, "gain": 6.0}
    refs.save(tmp_path)
    assert References.load(tmp_path).unsharp == {"size": 5, "gain": 6.0}
    record_path = tmp_path / REFERENCES_DIR / "references.json"
    record = json.loads(record_path.read_text())
    del record["unsharp"]  # as written before the field existed
    record_path.write_text(json.dumps(record))
    assert References.load(tmp_path).unsharp is None
