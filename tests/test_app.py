"""The Gradio app: handlers as plain functions, then the real server driven by gradio_client."""

import importlib.util
import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from app import examples, handlers, panels, ui
from gac_pipeline.bands import BAND_CENTRES_NM, S2L2A_BANDS
from gac_pipeline.display import (
    COMPOSITES,
    change_map,
    colour_bar,
    composite,
    error_map,
    mean_absolute_change,
    rgb_composite,
)
from tests import bad_inputs
from tests.conftest import tiny_terramind

STAGES = ("opt_v1", "opt_v2", "opt_v3")


@pytest.fixture(scope="module")
def tiny_preset(saved_tiny_pipeline):
    return str(saved_tiny_pipeline)


@pytest.fixture(scope="module")
def with_reference(real_pair, tiny_preset, tmp_path_factory):
    return handlers.translate(real_pair.s1_path, real_pair.s2_path, tiny_preset, month=0,
                              biome=real_pair.biome, seed=0, out_dir=tmp_path_factory.mktemp("out"))


@pytest.fixture(scope="module")
def generate_pipeline():
    """A random-init pipeline whose stages 1 and 3 run in TerraMind generate mode (1 timestep)."""
    from gac_pipeline.configs import PipelineConfig, Stage1Config, Stage2Config, Stage3Config
    from gac_pipeline.pipeline import GACPipeline
    from gac_pipeline.stages import terramind_common as tc
    from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
    from gac_pipeline.stages.stage2_prithvi import Stage2Prithvi
    from gac_pipeline.stages.stage3_grounding import Stage3Grounding

    spec = tiny_terramind(tokenizer=tc.SMALL_TEST_GENERATOR["tokenizer"])
    spec.dim, spec.depth, spec.decoder_depth = 64, 1, 1
    stage2 = Stage2Config(embed_dim=32, depth=1, num_heads=2, lora_rank=2, head_width=8, head_blocks=1, cond_dim=4)
    return GACPipeline(
        Stage1TerraMind.build(Stage1Config(mode="generate", terramind=spec, timesteps=1, lora_rank=0)),
        Stage2Prithvi.build(stage2),
        Stage3Grounding.build(Stage3Config(mode="generate", terramind=spec, timesteps=1, lora_rank=0)),
        PipelineConfig(name="tiny-generate", description="random init, tests only"),
    )


@pytest.fixture(scope="module")
def generate_preset(generate_pipeline, tmp_path_factory):
    return str(generate_pipeline.save_pretrained(tmp_path_factory.mktemp("generate_pipeline")))


def _row(table, name):
    return table.set_index("image").loc[name]


# ----------------------------------------------------------------------------- handlers


def test_translate_with_reference_scores_every_stage_and_baseline(with_reference, real_pair):
    table = with_reference["table"]
    assert list(table["image"]) == [*STAGES, handlers.BASELINE_ROW, handlers.REFERENCE_ROW]
    assert list(table.columns) == list(handlers.TABLE_COLUMNS)
    for name in (*STAGES, handlers.BASELINE_ROW):
        row = _row(table, name)
        for column in ("PSNR (dB)", "SSIM", "SAM (deg)"):
            assert isinstance(row[column], float), (name, column, row[column])
        assert str(row["LPIPS"]).startswith("n/a (") or isinstance(row["LPIPS"], float)
        for column in ("structure r", "edge r", "sharpness (vs reference)"):
            assert isinstance(row[column], float), (name, column, row[column])
        # The tiny preset stores no references: no training median, and the cell says why.
        assert row["sharpness (vs train median)"].startswith("n/a (no training median"), row
    reference_row = _row(table, handlers.REFERENCE_ROW)
    assert isinstance(reference_row["SAR-edge"], float)
    # Against itself the reference is the ceiling of the luminance scores.
    assert reference_row["structure r"] == reference_row["edge r"] == reference_row["sharpness (vs reference)"] == 1.0
    assert reference_row["sharpness (vs train median)"].startswith("n/a (no training median")
    # The baseline is a constant image: no edges, so its SAR-edge score is undefined, not made up,
    # and it draws nothing, so it has no structure, edge agreement or texture.
    baseline = _row(table, handlers.BASELINE_ROW)
    assert str(baseline["SAR-edge"]).startswith("n/a")
    assert baseline["structure r"] == baseline["edge r"] == baseline["sharpness (vs reference)"] == 0.0
    assert with_reference["month"] == real_pair.month  # month 0 = taken from the file
    assert "UNTRAINED" in with_reference["label"]
    assert "UNTRAINED" in handlers.summary_markdown(with_reference)


def test_translate_writes_georeferenced_geotiffs(with_reference, real_pair):
    import rasterio

    tifs = [p for p in with_reference["files"] if p.endswith(".tif")]
    assert [p.rsplit("/", 1)[1] for p in tifs] == [f"{name}.tif" for name in STAGES]
    with rasterio.open(real_pair.s1_path) as source, rasterio.open(tifs[-1]) as written:
        assert written.count == 12 and written.crs == source.crs and written.transform == source.transform
    assert any(p.endswith("metrics.json") for p in with_reference["files"])


def test_translate_without_reference_says_na(real_pair, tiny_preset, tmp_path):
    result = handlers.translate(real_pair.s1_path, None, tiny_preset, out_dir=tmp_path)
    table = result["table"]
    assert handlers.REFERENCE_ROW not in set(table["image"])
    assert result["images"]["reference"] is None
    for name in STAGES:
        row = _row(table, name)
        assert row["PSNR (dB)"] == row["SSIM"] == row["LPIPS"] == "n/a (no reference)"
        assert row["structure r"] == row["edge r"] == row["sharpness (vs reference)"] == "n/a (no reference)"
        assert isinstance(row["SAR-edge"], float)  # reference-free, always scored
        assert row["sharpness (vs train median)"].startswith("n/a (no training median")


def test_sharpness_against_the_presets_training_median(real_pair, saved_tiny_pipeline, tmp_path):
    import shutil

    from gac_pipeline.io import read_s1, read_s2
    from gac_pipeline.metrics import gradient_energy
    from gac_pipeline.references import References

    preset = tmp_path / "preset"
    shutil.copytree(saved_tiny_pipeline, preset)
    s2 = read_s2(real_pair.s2_path).data
    References.fit(read_s1(real_pair.s1_path).data[None], s2[None], source="the test pair").save(preset)
    median = gradient_energy(s2)  # one training tile: its own energy

    result = handlers.translate(real_pair.s1_path, None, str(preset), out_dir=tmp_path / "no_ref")
    table = result["table"]
    for name in STAGES:
        cell = _row(table, name)["sharpness (vs train median)"]
        assert isinstance(cell, float) and cell > 0, (name, cell)
    assert _row(table, handlers.BASELINE_ROW)["sharpness (vs train median)"] == 0.0
    scores = json.loads((tmp_path / "no_ref" / "metrics.json").read_text())
    assert scores["training_gradient_energy"] == pytest.approx(median)
    assert scores["scores"]["opt_v3"]["sharpness_vs_training_reason"] is None
    # Three significant digits, so an untrained stage's tiny ratio is not shown as the flat image's 0.
    assert float(f"{scores['scores']['opt_v3']['sharpness_vs_training']:.3g}") == _row(table, "opt_v3")[
        "sharpness (vs train median)"]

    with_ref = handlers.translate(real_pair.s1_path, real_pair.s2_path, str(preset), out_dir=tmp_path / "ref")
    reference_row = _row(with_ref["table"], handlers.REFERENCE_ROW)
    assert reference_row["sharpness (vs train median)"] == 1.0  # the reference is the training tile


def test_composites_use_one_fixed_stretch(with_reference, real_pair, tiny_preset, tmp_path):
    again = handlers.translate(real_pair.s1_path, real_pair.s2_path, tiny_preset, biome=real_pair.biome,
                               out_dir=tmp_path)
    for name in ("sar", *STAGES, "reference"):
        image = again["images"][name]
        assert image.dtype == np.uint8 and image.shape[2] == 3
        np.testing.assert_array_equal(image, with_reference["images"][name])
    # Fixed, not per-image: a dark and a bright copy of a tile are not stretched to look alike.
    dn = np.full((12, 4, 4), 1500.0, np.float32)
    assert rgb_composite(dn).max() == 128 and rgb_composite(dn * 2).min() == 255
    assert rgb_composite(dn)[0, 0].tolist() == [128, 128, 128]


@pytest.mark.parametrize("writer, expected", [
    (bad_inputs.write_not_a_tiff, "not_a_tiff.tif"),
    (bad_inputs.write_sar_bands, "sar_3_bands.tif"),
    (bad_inputs.write_truncated, "truncated.tif"),
    (bad_inputs.write_all_nan, "all_nan.tif"),
])
def test_bad_sar_gives_one_line_message(writer, expected, tmp_path, tiny_preset):
    with pytest.raises(handlers.AppError) as caught:
        handlers.translate(writer(tmp_path), None, tiny_preset, out_dir=tmp_path / "out")
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_reference_on_another_grid_is_refused(tmp_path, tiny_preset):
    sar = bad_inputs.write_raster(tmp_path / "sar.tif", bad_inputs.sar_db())
    for reference in (bad_inputs.write_s2_wrong_size(tmp_path), bad_inputs.write_s2_other_crs(tmp_path)):
        with pytest.raises(handlers.AppError, match="expected the same grid"):
            handlers.translate(sar, reference, tiny_preset, out_dir=tmp_path / "out")


@pytest.mark.parametrize("options, expected", [
    ({"month": 13}, "month must be"),
    ({"biome": "jungle"}, "unknown biome"),
    ({"stages": ["2", "3"]}, "stage 1 must run"),
    ({"preset": "/no/such/preset"}, "could not be loaded"),
])
def test_bad_options_give_one_line_message(options, expected, real_pair, tiny_preset, tmp_path):
    kwargs = {"preset": tiny_preset, "out_dir": tmp_path} | options
    with pytest.raises(handlers.AppError, match=expected) as caught:
        handlers.translate(real_pair.s1_path, **kwargs)
    assert "\n" not in str(caught.value)


def test_linear_sar_needs_units(tmp_path, tiny_preset):
    path = bad_inputs.write_linear_no_units(tmp_path)
    with pytest.raises(handlers.AppError, match="linear power"):
        handlers.translate(path, None, tiny_preset, out_dir=tmp_path / "a")
    result = handlers.translate(path, None, tiny_preset, units="linear", out_dir=tmp_path / "b")
    assert any("converted linear power to dB" in note for note in result["notes"])


def test_failed_preset_is_a_message_not_an_exception():
    pipeline, message = handlers.load_pipeline("/no/such/preset")
    assert pipeline is None and message.startswith("preset '/no/such/preset' could not be loaded")


def test_failed_hub_load_is_cached_and_mini_still_works():
    first_started = time.perf_counter()
    pipeline, message = handlers.load_pipeline("hub")  # offline (conftest): the weights are not reachable
    first_s = time.perf_counter() - first_started
    assert pipeline is None and message.startswith("preset 'hub' could not be loaded") and "\n" not in message
    assert "hub" in handlers._failed  # remembered: asking again is answered from it, not tried again
    again_started = time.perf_counter()
    assert handlers.load_pipeline("hub") == (None, message)
    again_s = time.perf_counter() - again_started
    assert again_s < 0.05 and (first_s > again_s * 10 or first_s < 0.05)
    mini, error = handlers.load_pipeline("mini")
    assert error is None and mini.config.name == "GAC-mini"


def test_preset_timesteps_read_from_configs(generate_preset, tiny_preset):
    assert handlers.preset_timesteps("mini") == (10, False)  # regress mode: steps have no effect
    assert handlers.preset_timesteps("hub") == (10, True)  # zero-shot generate mode
    assert handlers.preset_timesteps(generate_preset) == (1, True)
    assert handlers.preset_timesteps(tiny_preset)[1] is False
    assert handlers.preset_timesteps("someone/not-local@v1") == (10, None)


def test_timesteps_override_one_call_and_restore(generate_pipeline, tiny_pipeline):
    s1 = np.random.default_rng(0).normal(-15.0, 3.0, (2, 32, 32)).astype(np.float32)
    three = generate_pipeline.translate(s1, seed=1, timesteps=3)
    assert generate_pipeline.stage1.config.timesteps == generate_pipeline.stage3.config.timesteps == 1
    one = generate_pipeline.translate(s1, seed=1)
    assert not np.array_equal(three.opt_v1, one.opt_v1)
    for stage in (generate_pipeline.stage1, generate_pipeline.stage3):
        stage.config.timesteps = 3
    try:
        configured = generate_pipeline.translate(s1, seed=1)
    finally:
        for stage in (generate_pipeline.stage1, generate_pipeline.stage3):
            stage.config.timesteps = 1
    for name, image in three.versions().items():
        np.testing.assert_array_equal(image, configured.versions()[name])
    # Regress mode has no diffusion steps: the override changes nothing.
    np.testing.assert_array_equal(tiny_pipeline.translate(s1, timesteps=7).opt_v3, tiny_pipeline.translate(s1).opt_v3)
    with pytest.raises(ValueError, match="timesteps must be"):
        generate_pipeline.translate(s1, timesteps=0)


def test_translate_file_takes_timesteps(generate_pipeline, tmp_path):
    import rasterio

    sar = bad_inputs.sar_db(32, 32)
    path = bad_inputs.write_raster(tmp_path / "sar.tif", sar)
    written = generate_pipeline.translate_file(path, tmp_path / "out", seed=2, timesteps=3, progress=False)
    assert generate_pipeline.stage1.config.timesteps == generate_pipeline.stage3.config.timesteps == 1
    expected = generate_pipeline.translate(sar, month=written["month"], seed=2, timesteps=3)
    with rasterio.open(written["paths"]["opt_v3"]) as opt_v3:
        np.testing.assert_allclose(opt_v3.read(), expected.opt_v3, rtol=1e-5, atol=1e-2)
    with pytest.raises(ValueError, match="timesteps must be"):
        generate_pipeline.translate_file(path, tmp_path / "bad", timesteps=-1)
    assert not (tmp_path / "bad").exists()  # refused before any file is written


def test_translate_passes_timesteps(generate_preset, real_pair, tmp_path):
    result = handlers.translate(real_pair.s1_path, None, generate_preset, timesteps=2, out_dir=tmp_path)
    assert result["timesteps"] == 2
    assert "diffusion timesteps: 2" in handlers.summary_markdown(result)
    pipeline, _ = handlers.load_pipeline(generate_preset)
    assert pipeline.stage1.config.timesteps == 1  # the preset itself is unchanged
    skipped = handlers.translate(real_pair.s1_path, None, generate_preset, stages=["1", "2"], out_dir=tmp_path)
    assert skipped["timesteps"] == 1  # the preset's steps (stage 1 generates; stage 3 did not run)


@pytest.mark.parametrize("timesteps", [0, 51, 2.5, "many"])
def test_bad_timesteps_give_one_line_message(timesteps, real_pair, tiny_preset, tmp_path):
    with pytest.raises(handlers.AppError, match="timesteps must be a whole number from 1 to 50") as caught:
        handlers.translate(real_pair.s1_path, None, tiny_preset, timesteps=timesteps, out_dir=tmp_path)
    assert "\n" not in str(caught.value)


def test_on_gpu_is_a_no_op_without_spaces():
    from app.ui import on_gpu

    def double(value):
        return 2 * value

    wrapped = on_gpu(duration=10)(double)
    assert wrapped(21) == 42
    if importlib.util.find_spec("spaces") is None:
        assert wrapped is double


def test_app_module_imports_offline_without_loading_a_model():
    loaded = (list(handlers._loaded), list(handlers._failed))
    spec = importlib.util.spec_from_file_location("gac_app_entry", Path(__file__).parent.parent / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.demo.title == "GAC SAR → optical"
    assert (list(handlers._loaded), list(handlers._failed)) == loaded  # no preset loaded at import


def test_skipped_stage_passes_through(real_pair, tiny_preset, tmp_path):
    result = handlers.translate(real_pair.s1_path, None, tiny_preset, stages=["1", "3"], out_dir=tmp_path)
    np.testing.assert_array_equal(result["images"]["opt_v1"], result["images"]["opt_v2"])
    assert any("stage 2" in note and "skipped" in note for note in result["notes"])


def test_training_mean_is_from_the_train_split():
    mean = handlers.training_mean()
    assert mean.shape == (12,) and np.all((mean > 0) & (mean < 10000))


# ----------------------------------------------------------------------------- translate tab: panels


@pytest.fixture(scope="module")
def shown_run(with_reference):
    return panels.run_of(with_reference)


@pytest.fixture(scope="module")
def without_reference(real_pair, tiny_preset, tmp_path_factory):
    return handlers.translate(real_pair.s1_path, None, tiny_preset, out_dir=tmp_path_factory.mktemp("no_ref"))


def _select(x: int, y: int):
    import gradio as gr

    return gr.SelectData(None, {"index": [x, y], "value": None})


def _no_model_runs(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a redraw must not run the models")

    for target in (handlers, examples):
        monkeypatch.setattr(target, "translate", refuse)
    monkeypatch.setattr(handlers, "load_pipeline", refuse)


def _drawn(outputs) -> dict:
    return dict(zip(ui.DRAWN, outputs[:len(ui.DRAWN)], strict=True))


def test_panels_are_upscaled_nearest_neighbour_to_at_least_384_px(shown_run):
    assert panels.PANELS[-1] == "uncertainty" and panels.render(shown_run)["uncertainty"] is None
    factor = shown_run.factor
    assert factor == 4 and shown_run.shape == (120, 120)  # a bundled 120-px tile shows 480 px wide
    images = panels.render(shown_run)
    for key in panels.PANELS[:-1]:  # all but the uncertainty map (None: the option is off)
        image = images[key]
        assert image.dtype == np.uint8 and image.shape == (480, 480, 3), key
        blocks = image.reshape(120, factor, 120, factor, 3)
        assert (blocks == blocks[:, :1, :, :1]).all(), key  # every source pixel is a flat factor x factor block
    np.testing.assert_array_equal(images["opt_v2"][::factor, ::factor], composite(shown_run.dn["opt_v2"],
                                                                                  "true colour"))
    assert panels.upscale_factor(1024, 1024) == 1 and panels.upscale_factor(200, 100) == 2


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_composite_switch_redraws_every_panel_without_running_the_model(name, shown_run, monkeypatch):
    _no_model_runs(monkeypatch)
    outputs = ui.show_composite(shown_run, name, next(iter(ui.SLIDER_CHOICES)), None)
    drawn, (description, change_bar, error_bar) = _drawn(outputs), outputs[len(ui.DRAWN):]
    factor = shown_run.factor
    for key in panels.OPTICAL:
        np.testing.assert_array_equal(drawn[key], panels.upscale(composite(shown_run.dn[key], name), factor))
    np.testing.assert_array_equal(drawn["sar"], panels.upscale(shown_run.sar, factor))
    left, right = drawn["slider"]
    np.testing.assert_array_equal(left, drawn["opt_v1"])
    np.testing.assert_array_equal(right, drawn["opt_v2"])
    assert COMPOSITES[name] in description
    np.testing.assert_array_equal(change_bar, colour_bar("change", name, width=panels.MIN_PANEL_PX))
    np.testing.assert_array_equal(error_bar, colour_bar("error", name, width=panels.MIN_PANEL_PX))
    if name != "true colour":  # the panels really change with the composite
        assert not np.array_equal(drawn["opt_v3"], panels.render(shown_run)["opt_v3"])


@pytest.mark.parametrize("name", ["true colour", "NDVI"])
def test_change_maps_are_of_the_shown_run(name, shown_run):
    drawn = ui.draw(shown_run, name, next(iter(ui.SLIDER_CHOICES)))
    dn, factor = shown_run.dn, shown_run.factor
    np.testing.assert_array_equal(drawn["change_v2"], panels.upscale(change_map(dn["opt_v2"], dn["opt_v1"], name),
                                                                     factor))
    np.testing.assert_array_equal(drawn["change_v3"], panels.upscale(change_map(dn["opt_v3"], dn["opt_v2"], name),
                                                                     factor))


def test_error_maps_only_with_a_reference(shown_run, without_reference):
    drawn = ui.draw(shown_run, "SWIR", next(iter(ui.SLIDER_CHOICES)))
    for stage in STAGES:
        expected = error_map(shown_run.dn[stage], shown_run.dn["reference"], "SWIR")
        np.testing.assert_array_equal(drawn[f"error_{stage}"], panels.upscale(expected, shown_run.factor))
    assert drawn["error_note"] == "" and drawn["error_column"].visible is True

    bare = ui.draw(panels.run_of(without_reference), "SWIR", "opt_v3 ↔ reference")
    assert all(bare[f"error_{stage}"] is None for stage in STAGES) and bare["reference"] is None
    assert bare["error_note"] == ui.NO_REFERENCE_NOTE and bare["error_column"].visible is False
    assert bare["slider"] is None  # nothing to compare opt_v3 with
    assert bare["change_v2"] is not None and bare["change_v3"] is not None


def test_change_column_is_the_mean_absolute_change_in_reflectance(with_reference, without_reference):
    for result in (with_reference, without_reference):
        column = result["table"].set_index("image")[handlers.CHANGE_COLUMN]
        dn = result["dn"]
        assert column["opt_v1"] == "n/a (first stage)"
        for before, after in (("opt_v1", "opt_v2"), ("opt_v2", "opt_v3")):
            expected = mean_absolute_change(dn[after], dn[before])
            assert expected > 0 and column[after] == float(f"{expected:.3g}"), (after, column[after], expected)
        assert column[handlers.BASELINE_ROW] == "n/a (not a stage)"
    assert with_reference["table"].set_index("image").loc[handlers.REFERENCE_ROW, handlers.CHANGE_COLUMN] == "—"


def test_change_column_is_zero_for_a_skipped_stage(real_pair, tiny_preset, tmp_path):
    result = handlers.translate(real_pair.s1_path, None, tiny_preset, stages=["1", "3"], out_dir=tmp_path)
    assert result["table"].set_index("image").loc["opt_v2", handlers.CHANGE_COLUMN] == 0.0


def test_clicked_pixel_charts_every_spectrum_and_is_marked(shown_run, monkeypatch):
    _no_model_runs(monkeypatch)
    factor = shown_run.factor
    x, y = 37 * factor + 2, 81 * factor + 1  # displayed pixels: column 37, row 81 of the tile
    pixel, *drawn_outputs, figure = ui.select_pixel(shown_run, "NDVI", next(iter(ui.SLIDER_CHOICES)), _select(x, y))
    assert pixel == (81, 37)
    assert [trace.name for trace in figure.data] == [*STAGES, "reference"]  # one trace per image
    for trace in figure.data:
        assert list(trace.x) == list(BAND_CENTRES_NM) and list(trace.customdata) == list(S2L2A_BANDS)
        expected = shown_run.dn[trace.name][:, 81, 37] / 10000
        np.testing.assert_allclose(np.array(trace.y, dtype=float), expected, rtol=1e-6)
    drawn = _drawn(drawn_outputs)
    for key in panels.PANELS[:-1]:  # all but the uncertainty map (None: the option is off)
        image, plain = drawn[key], panels.render(shown_run, "NDVI")[key]
        changed = np.argwhere((image != plain).any(axis=2))
        assert len(changed) > 0 and (image[tuple(changed.T)] == panels.CROSSHAIR_COLOUR).all(), key
        # The crosshair surrounds the pixel and leaves the pixel itself visible.
        block = (slice(81 * factor, 82 * factor), slice(37 * factor, 38 * factor))
        np.testing.assert_array_equal(image[block], plain[block])
        rows, columns = changed[:, 0], changed[:, 1]
        assert rows.min() < 81 * factor and rows.max() >= 82 * factor
        assert columns.min() < 37 * factor and columns.max() >= 38 * factor
    # The mark stays when the composite changes.
    redrawn = _drawn(ui.show_composite(shown_run, "true colour", next(iter(ui.SLIDER_CHOICES)), pixel))
    np.testing.assert_array_equal(redrawn["opt_v1"], panels.mark_pixel(panels.render(shown_run)["opt_v1"], pixel,
                                                                       factor))


def test_spectrum_without_reference_has_three_traces(without_reference):
    run = panels.run_of(without_reference)
    figure = panels.spectrum_figure(run, panels.pixel_at((10_000, -5), run))  # clipped to the tile
    assert [trace.name for trace in figure.data] == list(STAGES)
    assert figure.layout.title.text == "Spectrum at row 0, column 119"


def test_warning_when_month_or_biome_not_seen_in_training(tmp_path):
    assert handlers.conditioning_warning(["SAR read as VV, VH"]) == ""
    line = handlers.conditioning_warning(["stage 2: month 3 not seen in training: used unknown",
                                          "stage 2: biome alpine not seen in training: used unknown"])
    assert line.startswith("**Warning:**") and "month 3" in line and "biome alpine" in line

    # A month mini's stage 2 never saw in training gets the warning on the page.
    pipeline, _ = handlers.load_pipeline("mini")
    unseen = min(set(range(1, 13)) - set(pipeline.stage2.config.seen_months))
    pair = handlers.example_pairs(1)[0]
    outputs = ui.run_translate(str(pair.s1_path), str(pair.s2_path), "mini", unseen, pair.biome, 0, ["1", "2", "3"],
                               next(iter(ui.SLIDER_CHOICES)), progress=lambda *args, **kwargs: None)
    warning = outputs[ui.TRANSLATE_OUTPUTS.index("warning")]
    assert warning.startswith("**Warning:**") and f"month {unseen} not seen in training" in warning
    # Without stage 2 nothing was conditioned on the month: no warning.
    skipped = ui.run_translate(str(pair.s1_path), None, "mini", unseen, pair.biome, 0, ["1", "3"],
                               next(iter(ui.SLIDER_CHOICES)), progress=lambda *args, **kwargs: None)
    assert skipped[ui.TRANSLATE_OUTPUTS.index("warning")] == ""


def test_translate_tab_outputs_match_the_wiring(shown_run):
    """Each handler returns one value per output component its events list."""
    demo = ui.build_demo(warm_examples=False)
    outputs: dict[str, set[int]] = {}
    for fn in demo.fns.values():
        outputs.setdefault(getattr(fn.fn, "__name__", ""), set()).add(len(fn.outputs))
    assert outputs["run_translate"] == {len(ui.TRANSLATE_OUTPUTS)}  # the button and a clicked example
    choice = next(iter(ui.SLIDER_CHOICES))
    assert outputs["show_composite"] == {len(ui.show_composite(shown_run, "SWIR", choice, None))}
    assert outputs["select_pixel"] == {len(ui.select_pixel(shown_run, "SWIR", choice, _select(1, 1)))}
    assert outputs["show_slider"] == {1}
    assert outputs["show_variant_mean"] == {len(ui.show_variant_mean(shown_run, "SWIR", choice, None, True))}
    assert outputs["pick_example"] == {4}
    assert "warm_up" not in outputs  # no background warm-up asked for


# ----------------------------------------------------------------------------- examples and the result cache


def test_every_bundled_test_tile_is_an_example_with_a_thumbnail():
    from gac_pipeline.data import evaluation_pairs

    bundled = examples.examples()
    expected = {pair.name for pair in evaluation_pairs() if pair.s2_path is not None}
    assert {example.pair.name for example in bundled} == expected and len(bundled) == len(expected)
    assert len({example.pair.biome for example in bundled[:2]}) == 2  # different biomes first
    for example in bundled:
        assert example.thumbnail.dtype == np.uint8 and example.thumbnail.shape == (120, 120, 3)
        assert example.caption.startswith(f"{example.pair.biome}, ")
    assert examples.caption(bundled[0].pair) == "alpine, Jun 2017"


def test_result_cache_answers_a_repeated_request_without_running(real_pair, tiny_preset, monkeypatch):
    calls = []
    real_translate = handlers.translate

    def counted(*args, **kwargs):
        calls.append(args)
        return real_translate(*args, **kwargs)

    monkeypatch.setattr(handlers, "translate", counted)
    examples.clear_cache()
    first = examples.translate(real_pair.s1_path, real_pair.s2_path, tiny_preset, 0, real_pair.biome, 0,
                               ["3", "1", "2"], timesteps=7)  # regress-mode preset: timesteps do not matter
    again = examples.translate(str(real_pair.s1_path), real_pair.s2_path, tiny_preset, 0, real_pair.biome, 0,
                               ["1", "2", "3"])
    assert len(calls) == 1 and again["cached"] is True and "cached" not in first
    assert again["dn"] is first["dn"] and again["files"] == first["files"]
    assert "from the app's cache" in handlers.summary_markdown(again)
    other_seed = examples.translate(real_pair.s1_path, real_pair.s2_path, tiny_preset, 0, real_pair.biome, 1)
    assert len(calls) == 2 and "cached" not in other_seed
    # Outputs cleaned up meanwhile: run again rather than offer missing files.
    for path in first["files"]:
        Path(path).unlink()
    rerun = examples.translate(real_pair.s1_path, real_pair.s2_path, tiny_preset, 0, real_pair.biome, 0)
    assert len(calls) == 3 and "cached" not in rerun and all(Path(path).is_file() for path in rerun["files"])
    # A memory budget, least recently used out first: room for one result only.
    assert examples.result_bytes(rerun) > 2 * 2**20 and len(examples._results) == 2
    monkeypatch.setattr(examples, "CACHE_MAX_BYTES", examples.result_bytes(rerun) + 1)
    examples.translate(real_pair.s1_path, None, tiny_preset, 0, real_pair.biome, 0)
    assert len(calls) == 4 and len(examples._results) == 1
    assert examples.translate(real_pair.s1_path, None, tiny_preset, 0, real_pair.biome, 0)["cached"] is True
    examples.clear_cache()


def test_warm_up_caches_the_examples(tiny_preset, monkeypatch):
    pairs = handlers.example_pairs(2)
    examples.clear_cache()
    assert examples.warm(tiny_preset, pairs) == 2
    calls = []
    monkeypatch.setattr(handlers, "translate", lambda *a, **k: calls.append(a))
    for pair in pairs:  # what a click on the example asks for: answered from the cache
        outputs = ui.run_translate(str(pair.s1_path), str(pair.s2_path), tiny_preset, 0, pair.biome, 0,
                                   ["1", "2", "3"], next(iter(ui.SLIDER_CHOICES)), "auto", 10,
                                   progress=lambda *args, **kwargs: None)
        values = dict(zip(ui.TRANSLATE_OUTPUTS, outputs, strict=True))
        assert values["opt_v1"] is not None and "from the app's cache" in values["summary"]
    assert calls == []
    assert examples.warm("/no/such/preset", pairs) == 0  # a preset that cannot load stops the warm-up, no raise
    examples.clear_cache()


# ----------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def client(tiny_preset):
    from gradio_client import Client

    from app.ui import build_demo

    demo = build_demo(presets=("mini", tiny_preset)).queue(default_concurrency_limit=1, max_size=8)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                max_file_size="64mb")
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
    finally:
        demo.close()


# The slider choice of the first release: still accepted, so older clients keep working.
FIRST_SLIDER_CHOICE = "opt_v1 ↔ opt_v3 (what stages 2+3 changed)"


def _call(client, s1, reference=None, preset="mini", *extra):
    """``/translate`` with the arguments of the first release; ``extra`` appends the newer ones."""
    from gradio_client import handle_file

    reference = handle_file(str(reference)) if reference else None
    return client.predict(handle_file(str(s1)), reference, preset, 0, "unknown", 0, ["1", "2", "3"],
                          FIRST_SLIDER_CHOICE, *extra, api_name="/translate")


def test_server_translates_and_recovers_from_bad_file(client, real_pair, tiny_preset, tmp_path):
    from gradio_client.exceptions import AppError

    outputs = _call(client, real_pair.s1_path, real_pair.s2_path)
    sar, v1, v2, v3, reference, slider, table, summary, files = outputs[:9]
    assert all(image is not None for image in (sar, v1, v2, v3, reference, slider))
    assert table["headers"] == list(handlers.TABLE_COLUMNS) and len(table["data"]) == 5
    assert isinstance(table["data"][0][1], float)  # PSNR of opt_v1
    assert "GAC-mini" in summary and "trained from random init" in summary
    assert len(files) == 4
    # Appended outputs (the states and the error maps' column are not sent to API clients).
    change_v2, change_v3, *errors, error_note, warning, spectrum, uncertainty = outputs[9:]
    assert change_v2 is not None and change_v3 is not None and all(error is not None for error in errors)
    assert len(errors) == 3 and error_note == "" and spectrum is None
    assert uncertainty is None  # the uncertainty option is off by default
    assert warning == ""  # mini saw June (the pair's month) and the "unknown" biome in training

    with pytest.raises(AppError, match="sar_3_bands.tif"):
        _call(client, bad_inputs.write_sar_bands(tmp_path))
    # The server is still healthy: a good request right after succeeds.
    again = _call(client, real_pair.s1_path, preset=tiny_preset)
    assert again[1] is not None and again[4] is None  # opt_v1 image, no reference panel
    assert again[6]["data"][0][1] == "n/a (no reference)"
    assert again[9] is not None and list(again[11:14]) == [None] * 3  # change maps, no error maps
    assert again[14] == ui.NO_REFERENCE_NOTE


def test_server_takes_units_and_timesteps(client, real_pair):
    from gradio_client.exceptions import AppError

    outputs = _call(client, real_pair.s1_path, None, "mini", "db", 12, "NDVI")
    assert outputs[1] is not None
    # The number box's own bounds (1..50) refuse it before the handler, also with one line.
    with pytest.raises(AppError, match="less than minimum value 1"):
        _call(client, real_pair.s1_path, None, "mini", "db", 0)


def test_server_uncertainty_option_is_appended_last(client, real_pair, tiny_preset):
    outputs = _call(client, real_pair.s1_path, None, tiny_preset, "auto", 10, "true colour", True, False)
    assert outputs[-1] is not None  # the uncertainty map, after every earlier output
    assert "Uncertainty" in outputs[7]


def test_server_takes_a_typed_folder_and_recovers_from_a_malformed_preset(client, real_pair, saved_tiny_pipeline,
                                                                          tmp_path):
    from gradio_client.exceptions import AppError

    typed = shutil.copytree(saved_tiny_pipeline, tmp_path / "typed-checkpoint")  # not one of the choices
    outputs = _call(client, real_pair.s1_path, None, f" {typed} ")
    assert outputs[1] is not None and "tiny-test" in outputs[7]
    with pytest.raises(AppError, match="'my model@main' is not a preset name") as caught:
        _call(client, real_pair.s1_path, None, "my model@main")
    assert "\n" not in str(caught.value)
    with pytest.raises(AppError, match=r"preset '/no/such/checkpoint' could not be loaded: .*not a checkpoint folder"):
        _call(client, real_pair.s1_path, None, "/no/such/checkpoint")
    assert _call(client, real_pair.s1_path, None, "mini")[1] is not None  # still serving


# ----------------------------------------------------------------------------- uncertainty


@pytest.fixture(scope="module")
def uncertain_outputs(real_pair, tiny_preset):
    """``run_translate`` of one tile with the uncertainty option off and on (tiny preset, regress mode)."""
    examples.clear_cache()
    run = {flag: ui.run_translate(str(real_pair.s1_path), str(real_pair.s2_path), tiny_preset, 0, real_pair.biome, 0,
                                  ["1", "2", "3"], next(iter(ui.SLIDER_CHOICES)), "auto", None, "true colour", flag,
                                  progress=lambda *args, **kwargs: None)
           for flag in (False, True)}
    examples.clear_cache()
    return {flag: dict(zip(ui.TRANSLATE_OUTPUTS, outputs, strict=True)) for flag, outputs in run.items()}


def test_uncertainty_off_gives_no_map_and_the_plain_outputs(uncertain_outputs):
    off, on = uncertain_outputs[False], uncertain_outputs[True]
    assert off["uncertainty"] is None and off["uncertainty_column"].visible is False
    assert off["run"].std is None and not off["run"].mean
    # The first variant is the plain run: every panel and score is the same with the option on.
    for key in ("sar", *panels.OPTICAL, *panels.CHANGES, *panels.ERRORS):
        np.testing.assert_array_equal(on[key], off[key], err_msg=key)
    assert on["table"].equals(off["table"])


def test_uncertainty_on_gives_a_map_and_the_mean_option_swaps_the_panels(uncertain_outputs, monkeypatch):
    on = uncertain_outputs[True]
    run = on["run"]
    assert on["uncertainty_column"].visible is True and "8 dihedral transforms" in on["summary"]
    assert run.std is not None and run.std.shape == run.shape and set(run.mean) == set(STAGES)
    image = on["uncertainty"]
    assert image.dtype == np.uint8 and image.shape == (*(side * run.factor for side in run.shape), 3)
    np.testing.assert_array_equal(image, panels.upscale(panels.uncertainty_map(run.std), run.factor))
    # The map's fixed scale: 0 DN is the bottom colour, the top and above the top colour, NaN black.
    tones = panels.uncertainty_map(np.array([[0.0, 200.0, 5000.0, np.nan]]))[0]
    assert (tones[0] == panels.UNCERTAINTY_LUT[0]).all() and (tones[1] == panels.UNCERTAINTY_LUT[-1]).all()
    assert (tones[2] == tones[1]).all() and (tones[3] == 0).all()
    assert panels.uncertainty_bar().shape == (26, panels.MIN_PANEL_PX, 3)
    # The download list has the CLI's uncertainty.tif with the option on, and not without it.
    assert not any(Path(f).name == "uncertainty.tif" for f in uncertain_outputs[False]["files"])
    [path] = [f for f in on["files"] if Path(f).name == "uncertainty.tif"]
    with rasterio.open(path) as dataset:
        assert dataset.descriptions == ("opt_v1_std", "opt_v2_std", "opt_v3_std") and dataset.dtypes[0] == "float32"
        np.testing.assert_allclose(dataset.read(3), run.std, rtol=1e-6)

    _no_model_runs(monkeypatch)
    choice = next(iter(ui.SLIDER_CHOICES))
    plain = dict(zip(ui.DRAWN, ui.show_variant_mean(run, "true colour", choice, None, False)[:-1], strict=True))
    mean = dict(zip(ui.DRAWN, ui.show_variant_mean(run, "true colour", choice, None, True)[:-1], strict=True))
    for key in STAGES:
        np.testing.assert_array_equal(plain[key], on[key])
        expected = panels.upscale(composite(run.mean[key], "true colour"), run.factor)
        np.testing.assert_array_equal(mean[key], expected)
    assert any(not np.array_equal(mean[key], plain[key]) for key in STAGES)  # a tiny random model is not invariant
    np.testing.assert_array_equal(mean["sar"], plain["sar"])
    np.testing.assert_array_equal(mean["reference"], plain["reference"])
    np.testing.assert_array_equal(mean["uncertainty"], plain["uncertainty"])
    # The spectrum at a clicked pixel follows the choice.
    figure = ui.show_variant_mean(run, "true colour", choice, (2, 3), True)[-1]
    trace = next(trace for trace in figure.data if trace.name == "opt_v3")
    np.testing.assert_allclose(trace.y, run.mean["opt_v3"][:, 2, 3] / 10000, rtol=1e-6)


def test_uncertainty_is_part_of_the_cache_key(real_pair, tiny_preset):
    args = (real_pair.s1_path, real_pair.s2_path, tiny_preset, 0, real_pair.biome, 0, ["1", "2", "3"], None, None)
    assert examples.cache_key(*args) == examples.cache_key(*args, 0)
    assert examples.cache_key(*args) != examples.cache_key(*args, 8)


def test_summary_heading_is_short_and_the_provenance_a_list():
    result = {"trained": True, "name": "GAC-mini", "description": "small pipeline | stage 1: trained | stage 2: kept",
              "label": "unused", "month": 6, "biome": "alpine", "stages": ("1", "2", "3"), "timesteps": None,
              "timings_s": {"total": 1.0}, "notes": []}
    text = handlers.summary_markdown(result)
    assert text.startswith("### GAC-mini [trained]\n\nsmall pipeline:\n- stage 1: trained\n- stage 2: kept")


def test_preset_choices_come_from_gac_preset_or_the_space_config(monkeypatch, tmp_path):
    from app import handlers

    monkeypatch.setattr(handlers, "SPACE_CONFIG", tmp_path / "space_config.json")
    monkeypatch.delenv("GAC_PRESET", raising=False)
    assert handlers.preset_choices() == ["mini", "hub"]
    (tmp_path / "space_config.json").write_text('{"preset": "me/gac@abc123,mini"}')
    assert handlers.preset_choices() == ["me/gac@abc123", "mini"]
    monkeypatch.setenv("GAC_PRESET", " mini , me/other@def , mini")
    assert handlers.preset_choices() == ["mini", "me/other@def"]


def test_the_file_names_are_part_of_the_cache_key(real_pair, tiny_preset, tmp_path):
    """The same bytes under another name may carry another month (read from the name) and are tagged by name."""
    import shutil

    january, august = tmp_path / "S1A_20170115_a.tif", tmp_path / "S1A_20170815_b.tif"
    shutil.copy(real_pair.s1_path, january)
    shutil.copy(real_pair.s1_path, august)
    options = (tiny_preset, 0, "unknown", 0, ["1", "2", "3"], None, None)
    assert examples.cache_key(str(january), None, *options) != examples.cache_key(str(august), None, *options)


def test_cache_key_refuses_bad_timesteps_even_where_unused(real_pair):
    """The mini preset runs no diffusion, so the steps are not in the key, but a bad value is still refused,
    as ``handlers.translate`` refuses it."""
    options = (real_pair.s1_path, None, "mini", 0, "unknown", 0, ["1", "2", "3"], None)
    assert examples.cache_key(*options, None) == examples.cache_key(*options, 10)
    with pytest.raises(handlers.AppError, match="timesteps"):
        examples.cache_key(*options, handlers.MAX_TIMESTEPS + 1)
