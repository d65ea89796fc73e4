"""The Evaluation tab's logic: reading ablation results, the table, the charts, the re-run."""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from app import evaluation
from app.handlers import AppError

FIXTURE = Path(__file__).parent / "fixtures" / "eval_results"  # the current format (make_eval_results.py)
LEGACY = Path(__file__).parent / "fixtures" / "eval_results_legacy"  # before subsets, new metrics, paired.csv
BASELINES = ["mean_baseline", "linear_baseline", "unet_control"]
STAGE_VARIANTS = ["v1", "v1+v2", "v1+v3", "v1+v2+v3"]
HAS_ABLATION = importlib.util.find_spec("eval") is not None and importlib.util.find_spec("eval.ablation") is not None


@pytest.fixture(scope="module")
def results():
    return evaluation.load_results(FIXTURE)


def _row(frame, variant, subset=None):
    if subset is not None:
        frame = frame[frame["subset"] == subset]
    return frame.set_index("variant").loc[variant]


def test_fixture_loads(results):
    assert evaluation.subsets_of(results.summary) == ["clear", "cloudy", "all"]
    for subset in ("clear", "cloudy", "all"):
        rows = results.summary[results.summary["subset"] == subset]
        assert list(rows["variant"]) == [*BASELINES, *STAGE_VARIANTS]
    assert results.meta["trained"] is False and results.meta["n_tiles"] == 5
    assert set(results.per_tile["variant"]) == {"mean_baseline", "linear_baseline", *STAGE_VARIANTS}
    assert set(results.paired["subset"]) == {"clear", "cloudy", "all"} and len(results.paired) == 3 * 4 * 5
    assert evaluation.headline_subset(results.summary) == "clear"


def test_table_groups_yardsticks_apart_and_shows_intervals(results):
    table = evaluation.results_table(results.summary)  # the headline: clear tiles
    assert list(table["variant"]) == [*BASELINES, *STAGE_VARIANTS]
    assert list(table["group"]) == ["baseline / control"] * 3 + ["GAC stages"] * 4
    summary = _row(results.summary, "v1+v2+v3", "clear")
    expected = f"{summary['psnr']:.2f} [{summary['psnr_lo']:.2f}, {summary['psnr_hi']:.2f}]"
    assert _row(table, "v1+v2+v3")["PSNR (dB) ↑"] == expected
    assert _row(table, "v1+v2+v3")["SAM (deg) ↓"].count("[") == 1
    assert _row(table, "v1+v2+v3")["n"] == 4 and _row(table, "v1+v2+v3")["clusters"] == 3
    structure = f"{summary['structure_r']:.3f} [{summary['structure_r_lo']:.3f}, {summary['structure_r_hi']:.3f}]"
    assert _row(table, "v1+v2+v3")["structure r ↑"] == structure
    assert _row(table, "v1+v2+v3")["sharpness (1 = as sharp as real)"].startswith(f"{summary['sharpness']:.3f} [")
    control = _row(table, "unet_control")
    assert control["n"] == 0 and control["PSNR (dB) ↑"] == "n/a" and "no control checkpoint" in control["note"]
    assert _row(table, "v1")["LPIPS ↓"] == "n/a"  # empty in the file: not computed, never made up


def test_table_shows_the_uncertainty_correlation():
    """uncertainty_spearman as "mean [lo, hi]" for the rows that have it, n/a elsewhere (committed results)."""
    if not (evaluation.RESULTS_DIR / "summary.csv").is_file():
        pytest.skip(f"{evaluation.RESULTS_DIR} is not committed yet")
    results = evaluation.load_results(evaluation.RESULTS_DIR)
    table = evaluation.results_table(results.summary, "clear")
    column = "uncertainty-error r_s ↑"
    assert column in table.columns
    for _, row in results.summary[results.summary["subset"] == "clear"].iterrows():
        cell = _row(table, row["variant"])[column]
        if np.isfinite(row["uncertainty_spearman"]) and np.isfinite(row["uncertainty_spearman_lo"]):
            assert cell == (f"{row['uncertainty_spearman']:.3f} [{row['uncertainty_spearman_lo']:.3f}, "
                            f"{row['uncertainty_spearman_hi']:.3f}]")
        elif not np.isfinite(row["uncertainty_spearman"]):
            assert cell == "n/a"
    assert _row(table, "mean_baseline")[column] == "n/a"


def test_table_of_results_without_the_uncertainty_column_says_n_a(results):
    table = evaluation.results_table(results.summary)
    assert set(table["uncertainty-error r_s ↑"]) == {"n/a"}


def test_table_of_each_subset(results):
    everything = evaluation.results_table(results.summary, "all")
    assert _row(everything, "v1")["n"] == 5 and _row(everything, "v1")["clusters"] == 4
    row = _row(results.summary, "v1", "all")
    assert _row(everything, "v1")["PSNR (dB) ↑"].startswith(f"{row['psnr']:.2f} [")
    cloudy = evaluation.results_table(results.summary, "cloudy")
    # One cloudy tile, one scene cluster: the mean without an interval, and the note says why.
    assert _row(cloudy, "v1")["n"] == 1
    assert _row(cloudy, "v1")["PSNR (dB) ↑"] == f"{_row(results.summary, 'v1', 'cloudy')['psnr']:.2f}"
    assert "one scene cluster: no interval" in _row(cloudy, "v1")["note"]


def test_headline_falls_back_to_all_without_clear_tiles(results):
    summary = results.summary.copy()
    summary.loc[summary["subset"] == "clear", "n"] = 0
    assert evaluation.headline_subset(summary) == "cloudy"
    summary.loc[summary["subset"] == "cloudy", "n"] = 0
    assert evaluation.headline_subset(summary) == "all"
    assert evaluation.headline_subset(summary[summary["subset"] != "clear"]) == "all"


def test_stage_rows_after_yardsticks_whatever_the_file_order(results):
    shuffled = results.summary.iloc[::-1].reset_index(drop=True)
    table = evaluation.results_table(shuffled, "clear")
    assert list(table["group"]) == ["baseline / control"] * 3 + ["GAC stages"] * 4


def test_paired_table_one_row_per_comparison(results):
    table = evaluation.paired_table(results.paired, "clear")
    assert list(table["comparison"]) == ["v1+v2 - v1", "v1+v2+v3 - v1+v2", "v1+v2+v3 - unet_control",
                                         "v1+v2+v3 - best baseline (linear_baseline)"]
    paired = results.paired[(results.paired["subset"] == "clear")].set_index(["comparison", "metric"])
    row = paired.loc[("v1+v2 - v1", "psnr")]
    assert table.iloc[0]["Δ PSNR (dB) ↑"] == f"{row['mean_diff']:.2f} [{row['lo']:.2f}, {row['hi']:.2f}]"
    sharp = paired.loc[("v1+v2+v3 - v1+v2", "sharpness")]
    assert table.iloc[1]["Δ sharpness (real = 1)"].startswith(f"{sharp['mean_diff']:.3f} [")
    assert table.iloc[0]["n"] == 4 and table.iloc[0]["clusters"] == 3
    control = table.iloc[2]
    assert control["Δ PSNR (dB) ↑"] == "n/a" and control["n"] == 0 and "unet_control did not run" in control["note"]
    cloudy = evaluation.paired_table(results.paired, "cloudy")
    assert "one scene cluster: no interval" in cloudy.iloc[0]["note"] and "[" not in cloudy.iloc[0]["Δ SSIM ↑"]


def test_scatter_psnr_against_sharpness(results):
    figure = evaluation.scatter_figure(results.summary)  # the headline subset
    assert [trace.name for trace in figure.data] == list(evaluation.GROUPS)
    yardsticks, stages = figure.data
    # The control did not run: no point; the mean image has sharpness 0, a point on the axis.
    assert list(yardsticks.text) == ["mean_baseline", "linear_baseline"] and list(stages.text) == STAGE_VARIANTS
    for trace in figure.data:
        assert trace.type == "scatter" and trace.error_x.symmetric is False and trace.error_y.symmetric is False
        for variant, x, y, hover, up in zip(trace.text, trace.x, trace.y, trace.hovertext, trace.error_y.array,
                                            strict=True):
            row = _row(results.summary, variant, "clear")
            assert x == pytest.approx(row["psnr"]) and y == pytest.approx(row["sharpness"])
            assert up == pytest.approx(row["sharpness_hi"] - row["sharpness"])
            assert f"structure r {row['structure_r']:.3f} [{row['structure_r_lo']:.3f}" in hover
    assert figure.layout.shapes[0].y0 == 1.0  # as sharp as the real tile
    cloudy = evaluation.scatter_figure(results.summary, "cloudy")
    assert cloudy.data[1].x[0] == pytest.approx(_row(results.summary, "v1", "cloudy")["psnr"])


@pytest.mark.parametrize("metric", evaluation.CHART_METRICS)
def test_metric_chart_has_bars_with_asymmetric_error_bars(results, metric):
    figure = evaluation.metric_figure(results.summary, metric)
    assert [trace.name for trace in figure.data] == list(evaluation.GROUPS)
    yardsticks, stages = figure.data
    assert list(yardsticks.x) == BASELINES and list(stages.x) == STAGE_VARIANTS
    for trace in figure.data:
        assert trace.type == "bar" and trace.error_y.symmetric is False
        for variant, y, up, down in zip(trace.x, trace.y, trace.error_y.array, trace.error_y.arrayminus, strict=True):
            row = _row(results.summary, variant, "clear")
            if math.isnan(row[metric]):
                assert y is None or math.isnan(y)
                continue
            assert y == pytest.approx(row[metric])
            assert up == pytest.approx(row[f"{metric}_hi"] - row[metric])
            assert down == pytest.approx(row[metric] - row[f"{metric}_lo"])
    assert "(not run)" in figure.layout.xaxis.ticktext[BASELINES.index("unet_control")]
    assert not figure.layout.shapes  # no ceiling on charts other than SAR-edge


def test_sar_edge_chart_draws_the_real_optical_ceiling(results):
    figures = evaluation.metric_figures(results)
    assert list(figures) == list(evaluation.CHART_METRICS)
    ceiling = results.meta["sar_edge_ceiling_by_subset"]["clear"]  # the headline's tiles
    assert ceiling != results.meta["sar_edge_ceiling"]
    shapes = figures["sar_edge"].layout.shapes
    lines = [shape for shape in shapes if shape.type == "line"]
    assert len(lines) == 1 and lines[0].y0 == lines[0].y1 == pytest.approx(ceiling["mean"])
    bands = [shape for shape in shapes if shape.type == "rect"]
    assert (bands[0].y0, bands[0].y1) == (pytest.approx(ceiling["lo"]), pytest.approx(ceiling["hi"]))
    assert "real optical" in figures["sar_edge"].layout.annotations[0].text
    for metric in ("psnr", "ssim", "sam_deg"):
        assert not figures[metric].layout.shapes


def test_per_tile_chart_has_one_box_per_variant_with_values(results):
    figure = evaluation.per_tile_figure(results.per_tile, "psnr", [*BASELINES, *STAGE_VARIANTS])
    assert [trace.name for trace in figure.data] == ["mean_baseline", "linear_baseline", *STAGE_VARIANTS]
    v1 = results.per_tile[results.per_tile["variant"] == "v1"]
    assert list(figure.data[2].y) == pytest.approx(list(v1["psnr"]))
    assert figure.data[2].boxpoints == "all" and list(figure.data[2].text) == list(v1["tile"])
    clear = evaluation.per_tile_figure(results.per_tile, "sharpness", subset="clear")
    assert list(clear.data[2].text) == list(v1[v1["clear_land"]]["tile"]) and "(clear tiles)" in clear.layout.title.text
    cloudy = evaluation.per_tile_figure(results.per_tile, "psnr", subset="cloudy")
    assert all(len(trace.y) == 1 for trace in cloudy.data)
    # SAR-edge: the constant mean image has no edges (no box); the real optical is the ceiling box.
    edges = evaluation.per_tile_figure(results.per_tile, "sar_edge")
    names = [trace.name for trace in edges.data]
    assert "mean_baseline" not in names and names[-1] == "real optical (reference)"
    assert len(edges.data[-1].y) == results.meta["n_tiles"]


def test_per_tile_chart_leaves_out_infinite_values_and_says_so(results):
    per_tile = results.per_tile.copy()
    per_tile.loc[per_tile.index[-1], "psnr"] = np.inf
    figure = evaluation.per_tile_figure(per_tile, "psnr")
    assert "1 infinite value(s) left out" in figure.layout.title.text
    assert all(np.isfinite(trace.y).all() for trace in figure.data)
    empty = evaluation.per_tile_figure(per_tile, "lpips")
    assert not empty.data and "no finite per-tile values" in empty.layout.annotations[0].text
    with pytest.raises(AppError, match="unknown metric"):
        evaluation.per_tile_figure(per_tile, "accuracy")


def test_view_of_committed_style_results(results):
    view = evaluation.build_view(FIXTURE, per_tile_metric="ssim")
    assert view.directory == str(FIXTURE) and len(view.table) == 7
    assert view.subset == "clear" and view.subsets == ["clear", "cloudy", "all"]
    assert set(view.figures) == set(evaluation.CHART_METRICS)
    assert view.per_tile.layout.title.text == "Per-tile SSIM (clear tiles)"
    assert len(view.paired) == 4 and view.scatter.data
    assert evaluation.per_tile_view(view.directory, "sam_deg_12").layout.yaxis.title.text == "SAM (deg), 12 bands"
    assert evaluation.per_tile_view(None, "psnr") is None
    cloudy = evaluation.subset_view(view.directory, "cloudy", "psnr")
    assert cloudy.subset == "cloudy" and list(cloudy.table["n"]) == [1, 1, 0, 1, 1, 1, 1]
    assert evaluation.subset_view(None, "all") is None
    with pytest.raises(AppError, match="no 'snowy' subset"):
        evaluation.subset_view(view.directory, "snowy")


def test_ui_outputs_match_the_wiring():
    """The tab's handlers return one value per output component the events list."""
    from app import ui

    demo = ui.build_demo(results_dir=FIXTURE)
    outputs = {getattr(fn.fn, "__name__", ""): len(fn.outputs) for fn in demo.fns.values()}
    view = evaluation.build_view(FIXTURE)
    assert outputs["run_evaluation"] == len(ui._evaluation_outputs(view))
    assert outputs["show_subset"] == len(ui.show_subset(str(FIXTURE), "all", "psnr"))
    assert outputs["show_subset"] == len(ui.show_subset(None, "all", "psnr"))


def test_legacy_results_without_paired_csv_load(tmp_path):
    """Results written before subsets, the structure metrics and paired.csv existed still show."""
    assert not (LEGACY / "paired.csv").exists()
    results = evaluation.load_results(LEGACY)
    assert evaluation.subsets_of(results.summary) == ["all"] and results.paired.empty
    assert results.summary["sharpness"].isna().all()
    view = evaluation.build_view(LEGACY)
    assert view.table is not None and view.subset == "all" and len(view.table) == 7
    assert _row(view.table, "v1")["sharpness (1 = as sharp as real)"] == "n/a"
    assert "written before paired.csv existed" in view.paired.iloc[0]["note"]
    assert not view.scatter.data and "no variant has both" in view.scatter.layout.annotations[0].text
    assert "not in these results" in evaluation.per_tile_view(str(LEGACY), "sharpness").layout.annotations[0].text
    assert "over tiles" in view.markdown  # the old intervals were over tiles, and it says so
    # The current format without paired.csv: everything else still shows.
    for name in ("summary.csv", "per_tile.csv", "meta.json"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    view = evaluation.build_view(tmp_path)
    assert view.table is not None and view.subset == "clear" and view.scatter.data
    assert "written before paired.csv existed" in view.paired.iloc[0]["note"]


def test_description_says_what_was_evaluated_and_flags_untrained(results):
    text = evaluation.describe(results)
    assert "untrained model" in text and "**untrained**" in text
    assert "5 tile(s) (test)" in text and "`mini`" in text and results.meta["preset_description"] in text
    assert "95% percentile bootstrap over scene clusters" in text and results.meta["command"] in text
    assert "clear: 4 tile(s) in 3 scene cluster(s)" in text and "cloudy: 1 tile(s) in 1 scene cluster(s)" in text
    assert "LPIPS n/a: " + results.meta["lpips_reason"] in text
    trained = evaluation.EvalResults(results.summary, results.per_tile, {**results.meta, "trained": True},
                                     results.directory)
    text = evaluation.describe(trained)
    assert "untrained" not in text and ", trained ·" in text


def test_missing_results_give_a_note_with_the_command(tmp_path):
    view = evaluation.build_view(tmp_path / "eval" / "results")
    assert view.table is None and view.figures is None and view.per_tile is None and view.directory is None
    assert evaluation.CREATE_COMMAND in view.markdown
    assert "missing summary.csv, per_tile.csv, meta.json" in view.markdown  # paired.csv is optional
    with pytest.raises(FileNotFoundError, match="missing summary.csv"):
        evaluation.load_results(tmp_path)


def test_unreadable_results_give_a_note(tmp_path):
    for name in evaluation.RESULT_FILES:
        shutil.copy(FIXTURE / name, tmp_path / name)
    (tmp_path / "paired.csv").write_text("subset,comparison\nclear,v1+v2 - v1\n")
    assert "unreadable results" in evaluation.build_view(tmp_path).markdown
    (tmp_path / "paired.csv").write_text((FIXTURE / "paired.csv").read_text())
    (tmp_path / "summary.csv").write_text("variant,n\nv1,3\n")
    view = evaluation.build_view(tmp_path)
    assert view.table is None and "unreadable results" in view.markdown and "missing columns" in view.markdown
    (tmp_path / "summary.csv").write_text((FIXTURE / "summary.csv").read_text())
    (tmp_path / "meta.json").write_text("{not json")
    assert "unreadable results" in evaluation.build_view(tmp_path).markdown


def test_committed_results_follow_the_format():
    if not evaluation.RESULTS_DIR.is_dir():
        pytest.skip(f"{evaluation.RESULTS_DIR} is not committed yet")
    view = evaluation.build_view(evaluation.RESULTS_DIR)
    assert view.table is not None, view.markdown
    assert set(view.table["variant"]) >= set(STAGE_VARIANTS)


@pytest.mark.skipif(not HAS_ABLATION, reason="eval/ablation.py not present")
def test_rerun_writes_a_new_folder_and_shows_it(tmp_path):
    committed = sorted(evaluation.RESULTS_DIR.rglob("*")) if evaluation.RESULTS_DIR.exists() else None
    results = evaluation.rerun(tmp_path / "rerun", bootstrap=50, max_tiles=2)
    assert results.directory == tmp_path / "rerun" and results.meta["n_tiles"] == 2
    assert list(results.summary["variant"]) == [*BASELINES, "v1+unsharp", *STAGE_VARIANTS] * 3  # mini stores a filter
    assert (tmp_path / "rerun" / "paired.csv").is_file() and not results.paired.empty
    view = evaluation.view_of(results, rerun=True)
    assert "Re-run in this session" in view.markdown and "committed results are unchanged" in view.markdown
    assert len(view.table) == 8 and set(view.figures) == set(evaluation.CHART_METRICS)
    assert view.subset == evaluation.headline_subset(results.summary) and len(view.paired) == 5
    assert json.loads((tmp_path / "rerun" / "meta.json").read_text())["bootstrap"]["samples"] == 50
    after = sorted(evaluation.RESULTS_DIR.rglob("*")) if evaluation.RESULTS_DIR.exists() else None
    assert after == committed
    with pytest.raises(AppError, match="refusing to overwrite"):
        evaluation.rerun(evaluation.RESULTS_DIR)
