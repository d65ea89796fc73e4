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

FIXTURE = Path(__file__).parent / "fixtures" / "eval_results"
BASELINES = ["mean_baseline", "linear_baseline", "unet_control"]
STAGE_VARIANTS = ["v1", "v1+v2", "v1+v3", "v1+v2+v3"]
HAS_ABLATION = importlib.util.find_spec("eval") is not None and importlib.util.find_spec("eval.ablation") is not None


@pytest.fixture(scope="module")
def results():
    return evaluation.load_results(FIXTURE)


def _row(frame, variant):
    return frame.set_index("variant").loc[variant]


def test_fixture_loads(results):
    assert list(results.summary["variant"]) == [*BASELINES, *STAGE_VARIANTS]
    assert results.meta["trained"] is False and results.meta["n_tiles"] == 5
    assert set(results.per_tile["variant"]) == {"mean_baseline", "linear_baseline", *STAGE_VARIANTS}


def test_table_groups_yardsticks_apart_and_shows_intervals(results):
    table = evaluation.results_table(results.summary)
    assert list(table["variant"]) == [*BASELINES, *STAGE_VARIANTS]
    assert list(table["group"]) == ["baseline / control"] * 3 + ["GAC stages"] * 4
    summary = _row(results.summary, "v1+v2+v3")
    expected = f"{summary['psnr']:.2f} [{summary['psnr_lo']:.2f}, {summary['psnr_hi']:.2f}]"
    assert _row(table, "v1+v2+v3")["PSNR (dB) ↑"] == expected
    assert _row(table, "v1+v2+v3")["SAM (deg) ↓"].count("[") == 1
    control = _row(table, "unet_control")
    assert control["n"] == 0 and control["PSNR (dB) ↑"] == "n/a" and "no control checkpoint" in control["note"]
    assert _row(table, "v1")["LPIPS ↓"] == "n/a"  # empty in the file: not computed, never made up


def test_stage_rows_after_yardsticks_whatever_the_file_order(results):
    shuffled = results.summary.iloc[::-1].reset_index(drop=True)
    table = evaluation.results_table(shuffled)
    assert list(table["group"]) == ["baseline / control"] * 3 + ["GAC stages"] * 4


@pytest.mark.parametrize("metric", evaluation.CHART_METRICS)
def test_metric_chart_has_bars_with_asymmetric_error_bars(results, metric):
    figure = evaluation.metric_figure(results.summary, metric)
    assert [trace.name for trace in figure.data] == list(evaluation.GROUPS)
    yardsticks, stages = figure.data
    assert list(yardsticks.x) == BASELINES and list(stages.x) == STAGE_VARIANTS
    for trace in figure.data:
        assert trace.type == "bar" and trace.error_y.symmetric is False
        for variant, y, up, down in zip(trace.x, trace.y, trace.error_y.array, trace.error_y.arrayminus, strict=True):
            row = _row(results.summary, variant)
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
    ceiling = results.meta["sar_edge_ceiling"]
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
    assert set(view.figures) == set(evaluation.CHART_METRICS)
    assert view.per_tile.layout.title.text == "Per-tile SSIM"
    assert evaluation.per_tile_view(view.directory, "sam_deg_12").layout.yaxis.title.text == "SAM (deg), 12 bands"
    assert evaluation.per_tile_view(None, "psnr") is None


def test_description_says_what_was_evaluated_and_flags_untrained(results):
    text = evaluation.describe(results)
    assert "untrained model" in text and "**untrained**" in text
    assert "5 tile(s) (test)" in text and "`mini`" in text and results.meta["preset_description"] in text
    assert "95% percentile bootstrap" in text and results.meta["command"] in text
    assert "LPIPS n/a: " + results.meta["lpips_reason"] in text
    trained = evaluation.EvalResults(results.summary, results.per_tile, {**results.meta, "trained": True},
                                     results.directory)
    text = evaluation.describe(trained)
    assert "untrained" not in text and ", trained ·" in text


def test_missing_results_give_a_note_with_the_command(tmp_path):
    view = evaluation.build_view(tmp_path / "eval" / "results")
    assert view.table is None and view.figures is None and view.per_tile is None and view.directory is None
    assert evaluation.CREATE_COMMAND in view.markdown
    assert "missing summary.csv, per_tile.csv, meta.json" in view.markdown
    with pytest.raises(FileNotFoundError, match="missing summary.csv"):
        evaluation.load_results(tmp_path)


def test_unreadable_results_give_a_note(tmp_path):
    for name in evaluation.RESULT_FILES:
        shutil.copy(FIXTURE / name, tmp_path / name)
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
    assert list(results.summary["variant"]) == [*BASELINES, *STAGE_VARIANTS]
    view = evaluation.view_of(results, rerun=True)
    assert "Re-run in this session" in view.markdown and "committed results are unchanged" in view.markdown
    assert len(view.table) == 7 and set(view.figures) == set(evaluation.CHART_METRICS)
    assert json.loads((tmp_path / "rerun" / "meta.json").read_text())["bootstrap"]["samples"] == 50
    after = sorted(evaluation.RESULTS_DIR.rglob("*")) if evaluation.RESULTS_DIR.exists() else None
    assert after == committed
    with pytest.raises(AppError, match="refusing to overwrite"):
        evaluation.rerun(evaluation.RESULTS_DIR)
