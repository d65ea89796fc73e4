"""Per-pixel uncertainty from test-time variants: the variants, the pipeline's spread, the CLI's uncertainty.tif."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch

from gac_pipeline.cli import main
from gac_pipeline.io import read_s1
from gac_pipeline.pipeline import GACPipeline
from gac_pipeline.uncertainty import DIHEDRAL, FILE_BANDS, band_mean, error_spearman, variants


def _s1(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(2, height, width)) * 3 + np.array([-12.0, -19.0])[:, None, None]).astype(np.float32)


def test_variants_are_the_dihedral_group_identity_first_or_seeds():
    chain = variants(8, seed=5, generative=False)
    assert (chain[0].k, chain[0].flip, chain[0].seed) == (0, False, 5)
    x = np.arange(2 * 3 * 5).reshape(2, 3, 5)  # not square: rot90 swaps the axes
    images = {variant.apply(x).tobytes() + bytes(variant.apply(x).shape) for variant in chain}
    assert len(images) == 8  # eight different transforms
    for variant in chain:
        assert np.array_equal(variant.undo(variant.apply(x)), x)
    assert [v.seed for v in variants(3, seed=5, generative=True)] == [5, 6, 7]
    assert all((v.k, v.flip) == (0, False) for v in variants(3, seed=5, generative=True))
    assert len(DIHEDRAL) == 8
    for bad in (0, 9, 2.0, True):
        with pytest.raises(ValueError, match="uncertainty"):
            variants(bad, seed=0, generative=False)


def test_uncertainty_8_on_a_real_tile(tiny_pipeline, real_pair):
    s1 = read_s1(real_pair.s1_path).data
    plain = tiny_pipeline.translate(s1, month=real_pair.month, biome=real_pair.biome)
    out = tiny_pipeline.translate(s1, month=real_pair.month, biome=real_pair.biome, uncertainty=8)
    for name, version in plain.versions().items():
        assert np.array_equal(getattr(out, name), version)  # the identity variant is the plain run, bit for bit
        assert out.std[name].shape == (120, 120) and out.std[name].dtype == np.float32
        assert (out.std[name] >= 0).all() and out.std[name].max() > 0
        assert out.mean[name].shape == (12, 120, 120) and np.isfinite(out.mean[name]).all()
    assert out.uncertainty == "8 dihedral transforms"
    assert plain.std == {} and plain.mean == {} and plain.uncertainty is None


class PerPixel(torch.nn.Module):
    """A stand-in stage computing each pixel from that pixel alone: equivariant to every dihedral
    transform. ``seed_step`` > 0 makes it a sampling (generate-mode) stage whose output moves with the seed."""

    def __init__(self, channels_in, seed_step=0.0):
        super().__init__()
        self.config = SimpleNamespace(mode="generate" if seed_step else "regress", timesteps=1)
        self.conv, self.seed_step = torch.nn.Conv2d(channels_in, 12, 1), seed_step
        torch.nn.init.normal_(self.conv.weight, std=20.0)

    def forward(self, *inputs, seed=0, **conditioning):
        return 1500 + self.conv(torch.cat(inputs, dim=1)) + self.seed_step * seed

    def conditioning_notes(self, month, biome):
        return []


def _per_pixel_pipeline(tiny_pipeline, seed_step=0.0):
    return GACPipeline(PerPixel(2, seed_step), PerPixel(12), PerPixel(14), tiny_pipeline.config)


@pytest.mark.parametrize("shape", [(120, 120), (37, 90), (200, 150)])  # one tile, not square, tiled
def test_a_model_equivariant_to_the_dihedral_group_has_zero_spread(tiny_pipeline, shape):
    out = _per_pixel_pipeline(tiny_pipeline).translate(_s1(*shape), uncertainty=8)
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        scale = np.abs(band_mean(getattr(out, name))).max()
        # Zero up to float32 rounding: exactly 0 on one window; blending overlapping windows rounds.
        assert out.std[name].shape == shape and out.std[name].max() <= 1e-6 * scale
        np.testing.assert_allclose(out.mean[name], getattr(out, name), rtol=1e-5, atol=1e-2)


def test_generate_mode_variants_are_seeds(tiny_pipeline):
    out = _per_pixel_pipeline(tiny_pipeline, seed_step=1.0).translate(_s1(32, 32), seed=4, uncertainty=3, stages=("1",))
    # Stage 1 adds seed: its outputs are x + 4, x + 5, x + 6, so the std is that of (0, 1, 2).
    np.testing.assert_allclose(out.std["opt_v1"], math.sqrt(2 / 3), rtol=1e-6)
    assert out.uncertainty == "3 seeds"


def test_error_spearman():
    rng = np.random.default_rng(0)
    reference, prediction = rng.uniform(0, 3000, (2, 12, 20, 20))
    error = np.abs(band_mean(prediction) - band_mean(reference))
    assert error_spearman(error**2, prediction, reference) == pytest.approx(1.0)  # same ranking
    assert error_spearman(-error, prediction, reference) == pytest.approx(-1.0)
    assert math.isnan(error_spearman(np.zeros((20, 20)), prediction, reference))  # a flat map ranks nothing


def test_cli_writes_uncertainty_tif_on_the_input_grid(saved_tiny_pipeline, real_pair, tmp_path):
    common = ["translate", str(real_pair.s1_path), "--preset", str(saved_tiny_pipeline), "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "unc"), "--uncertainty", "8"]) == 0
    with rasterio.open(real_pair.s1_path) as source:
        grid = (source.crs, source.transform, source.width, source.height)
    with rasterio.open(tmp_path / "unc" / "uncertainty.tif") as dataset:
        assert (dataset.crs, dataset.transform, dataset.width, dataset.height) == grid
        assert dataset.count == 3 and dataset.descriptions == FILE_BANDS and set(dataset.dtypes) == {"float32"}
        assert dataset.tags()["uncertainty"] == "8 dihedral transforms"
        std = dataset.read()
    assert np.isfinite(std).all() and (std >= 0).all() and (std.max(axis=(1, 2)) > 0).all()
    assert not (tmp_path / "plain" / "uncertainty.tif").exists()
    for name in ("opt_v1", "opt_v2", "opt_v3"):  # the outputs do not change with the flag
        with rasterio.open(tmp_path / "plain" / f"{name}.tif") as a, rasterio.open(tmp_path / "unc" / f"{name}.tif") as b:
            assert np.array_equal(a.read(), b.read(), equal_nan=True)


def test_cli_refuses_bad_or_too_large_uncertainty(saved_tiny_pipeline, real_pair, tmp_path, capsys, monkeypatch):
    common = ["translate", str(real_pair.s1_path), "--preset", str(saved_tiny_pipeline), "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "nine"), "--uncertainty", "9"]) == 2
    assert "8 dihedral variants" in capsys.readouterr().err
    assert not list((tmp_path / "nine").glob("*.tif"))  # refused before any output is written
    monkeypatch.setattr("gac_pipeline.cli.MAX_IN_MEMORY_PIXELS", 100 * 100)
    assert main([*common, "--out", str(tmp_path / "big"), "--uncertainty", "8"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "hold the scene in memory" in error


# ----------------------------------------------------------------------------- the learned scale (experiment)


def _heteroscedastic_toy(tiles=6, size=48, seed=0):
    """Residuals whose Laplace scale is set by the SAR: b = 30 DN where VV < -12 dB, 300 DN elsewhere
    (blocks of 8 px), the same error on the four metric bands so band_mean's error is that noise."""
    from gac_pipeline.bands import METRIC_BAND_INDICES
    from training.train_uncertainty import OUTPUT_NAMES, Residuals

    rng = np.random.default_rng(seed)
    blocks = rng.random((tiles, size // 8, size // 8)) < 0.5
    loud = np.kron(blocks, np.ones((8, 8))).astype(bool)
    s1 = np.stack([np.where(loud, -8.0, -16.0), np.where(loud, -15.0, -23.0)], axis=1)
    s1 = (s1 + rng.normal(0, 0.5, s1.shape)).astype(np.float32)
    scale = np.where(loud, 300.0, 30.0)
    s2 = (1500 + rng.normal(0, 200, (tiles, 12, size, size))).astype(np.float32)
    outputs = {}
    for name in OUTPUT_NAMES:
        noisy = s2.copy()
        noisy[:, list(METRIC_BAND_INDICES)] += rng.laplace(0, scale, (tiles, size, size))[:, None].astype(np.float32)
        outputs[name] = torch.from_numpy(noisy)
    data = Residuals(torch.from_numpy(s1), torch.from_numpy(s2), outputs, [f"toy{i}" for i in range(tiles)])
    return data, scale


def test_the_nll_head_learns_a_known_heteroscedastic_toy(tmp_path):
    from gac_pipeline.standardization import Standardization
    from training.train_uncertainty import OUTPUT_NAMES, ScaleHead, Settings, fit, predicted_std

    torch.set_num_threads(1)
    data, _ = _heteroscedastic_toy()
    settings = Settings(width=8, dilations=(1,), steps=150, batch=8, crop=32, lr=1e-2)
    head, _ = fit(data, settings, Standardization(), seed=0)
    test, test_scale = _heteroscedastic_toy(tiles=2, seed=1)  # fresh noise, the same rule
    for name in OUTPUT_NAMES:
        std = predicted_std(head, test, name)
        oracle = np.mean([error_spearman(s, o.numpy(), t.numpy())
                          for s, o, t in zip(test_scale, test.outputs[name], test.s2, strict=True)])
        learned = np.mean([error_spearman(s, o.numpy(), t.numpy())
                           for s, o, t in zip(std, test.outputs[name], test.s2, strict=True)])
        # ranks the errors nearly as well as the true scale (3x3 windows blur the 8-px blocks' edges)
        assert oracle > 0.5 and learned > 0.8 * oracle
        # and in DN: about sqrt(2) x 30 and sqrt(2) x 300 where the scale is 30 and 300
        for value in (30.0, 300.0):
            ratio = np.median(std[test_scale == value]) / (math.sqrt(2) * value)
            assert 0.7 < ratio < 1.4
    head.save(tmp_path / "head")
    loaded = ScaleHead.load(tmp_path / "head")
    assert loaded.config == head.config and loaded.config.trained
    s1, dn = test.s1[0].numpy(), test.outputs["opt_v3"][0].numpy()
    assert np.array_equal(loaded.std(s1, dn, "opt_v3"), head.std(s1, dn, "opt_v3"))


def test_the_scale_head_runs_in_strips_like_one_pass():
    from training.train_uncertainty import ScaleHead, ScaleHeadConfig

    torch.manual_seed(0)
    head = ScaleHead(ScaleHeadConfig(width=4, dilations=[1, 2]))
    torch.nn.init.normal_(head.out.weight, std=0.5)
    s1, dn = _s1(70, 40), np.random.default_rng(0).uniform(0, 3000, (12, 70, 40)).astype(np.float32)
    whole = head.std(s1, dn, "opt_v2", rows=1000)
    assert whole.shape == (70, 40) and whole.dtype == np.float32 and (whole > 0).all()
    np.testing.assert_allclose(head.std(s1, dn, "opt_v2", rows=16), whole, rtol=1e-5)
    assert not np.allclose(head.std(s1, dn, "opt_v1"), whole)  # the one-hot stage input counts
    with pytest.raises(ValueError, match="unknown output"):
        head.std(s1, dn, "opt_v4")


def test_fold_chains_take_each_stage_from_its_own_fold_run(tmp_path):
    """The ensemble's member k chains stage 1, 2 and 3 of fold k, not the final models the fold folders
    of stages 2 and 3 were started from."""
    from conftest import build_tiny_pipeline

    from training.train_uncertainty import fold_chains

    def weights(module):
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    saved = {}
    for fold in (0, 1):
        for number, stage in enumerate(("stage1", "stage2", "stage3")):
            saved[fold, stage] = build_tiny_pipeline(seed=10 * fold + number)
            saved[fold, stage].save_pretrained(tmp_path / stage / f"fold{fold}")
        (tmp_path / "stage3" / f"fold{fold}_train").mkdir()  # a fold run's work folder is no member
    chains = fold_chains(tmp_path)
    assert len(chains) == 2
    for fold, chain in enumerate(chains):
        for stage in ("stage1", "stage2", "stage3"):
            assert torch.equal(weights(getattr(chain, stage)), weights(getattr(saved[fold, stage], stage)))
        assert not torch.equal(weights(chain.stage1), weights(saved[fold, "stage3"].stage1))


def test_the_yardsticks_on_hand_made_outputs():
    """An output flat at the real tile's median: its error is the real tile's deviation, so the oracle
    ranks it perfectly; brightness and stage change are flat there (no ranking); stage change follows
    what stages 2 and 3 changed."""
    from gac_pipeline.bands import METRIC_BAND_INDICES
    from training.train_uncertainty import OUTPUT_NAMES, Residuals, reference_rows

    rng = np.random.default_rng(0)
    s2 = rng.uniform(500, 3000, (3, 12, 24, 24)).astype(np.float32)
    flat = np.broadcast_to(np.median(s2[:, list(METRIC_BAND_INDICES)].mean(axis=1), axis=(1, 2))[:, None, None, None],
                           s2.shape).copy()
    s1 = np.zeros((3, 2, 24, 24), np.float32)
    data = Residuals(torch.from_numpy(s1), torch.from_numpy(s2), {name: torch.from_numpy(flat) for name in OUTPUT_NAMES},
                     ["a", "b", "c"])
    rows = {row["source"]: row for row in reference_rows(data)}
    assert set(rows) == {"brightness", "local contrast", "stage change |opt_v3 - opt_v1|",
                         "real deviation |real - median| (oracle)"}
    oracle = rows["real deviation |real - median| (oracle)"]
    assert all(oracle[f"{name}_spearman"] == pytest.approx(1.0) for name in OUTPUT_NAMES)
    assert np.isnan(rows["brightness"]["opt_v3_spearman"]) and np.isnan(rows["stage change |opt_v3 - opt_v1|"]["opt_v3_spearman"])
    # opt_v3 = opt_v1 + the error itself where stage 3 "changed" it: the change map ranks opt_v1's error exactly
    error = np.abs(flat[:, :1] - s2[:, list(METRIC_BAND_INDICES)].mean(axis=1, keepdims=True))
    data.outputs["opt_v3"] = torch.from_numpy(flat + error)
    rows = {row["source"]: row for row in reference_rows(data)}
    assert rows["stage change |opt_v3 - opt_v1|"]["opt_v1_spearman"] == pytest.approx(1.0)
