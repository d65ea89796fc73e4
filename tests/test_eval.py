"""The ablation evaluation on a tiny random-init pipeline and the bundled data."""

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from eval import figure
from eval.__main__ import main
from eval.ablation import (
    COMPARISONS,
    PAIRED_COLUMNS,
    PAIRED_METRICS,
    PER_TILE_COLUMNS,
    SUMMARY_COLUMNS,
    VARIANTS,
    cluster_bootstrap,
    load_results,
    paired_differences,
    run_ablation,
    run_pipeline,
    summarise,
)
from gac_pipeline.control import ControlConfig, UNetControl
from gac_pipeline.data import DEFAULT_DATA_DIR, PairDataset, evaluation_pairs, list_pairs, scene_clusters
from gac_pipeline.display import rgb_composite, sar_false_colour
from gac_pipeline.metrics import compute_metrics
from gac_pipeline.references import References, load_for_preset, unsharp_mask
from gac_pipeline.uncertainty import error_spearman
from tests.conftest import build_tiny_pipeline
from training.common import load_split

EXPECTED_ORDER = ["mean_baseline", "linear_baseline", "unet_control", "v1+unsharp", "v1", "v1+v2", "v1+v3", "v1+v2+v3"]


@pytest.fixture(scope="module")
def bare_preset(tmp_path_factory):
    """A tiny pipeline folder with no references."""
    return build_tiny_pipeline().save_pretrained(tmp_path_factory.mktemp("bare_preset"))


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A tiny pipeline folder plus references fitted on the train split, with a tiny control."""
    directory = build_tiny_pipeline().save_pretrained(tmp_path_factory.mktemp("preset"))
    train = load_split(DEFAULT_DATA_DIR, "train")
    refs = References.fit(train.s1, train.s2, source=f"bundled train split, {len(train)} clear_land tiles")
    torch.manual_seed(0)
    refs.control = UNetControl.build(ControlConfig(width=4, levels=2))
    refs.control.start_at_mean(torch.from_numpy(refs.mean_dn).float())
    torch.nn.init.normal_(refs.control.out.weight, std=0.05)
    refs.unsharp = {"size": 3, "gain": 2.0}
    refs.save(directory)
    return directory


@pytest.fixture(scope="module")
def result(preset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    return out, run_ablation(DEFAULT_DATA_DIR, preset=str(preset), out_dir=out, max_tiles=3, bootstrap=200,
                             progress=False)


def _subset(frame, subset):
    return frame[frame["subset"] == subset].set_index("variant")


def test_files_variants_and_intervals(result):
    out, res = result
    assert VARIANTS == tuple(EXPECTED_ORDER)
    for name in ("per_tile.csv", "summary.csv", "paired.csv", "meta.json"):
        assert (out / name).is_file()
    summary = res.summary
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert summary["variant"].tolist() == EXPECTED_ORDER * 3
    assert summary["subset"].tolist() == ["clear"] * 8 + ["cloudy"] * 8 + ["all"] * 8
    everything = _subset(summary, "all")
    assert (everything["n"] == 3).all() and (everything["n_clusters"] == 3).all()
    for metric in ("psnr", "ssim", "sam_deg", "structure_r", "edge_r", "sharpness"):
        assert everything[metric].notna().all()
        assert (everything[f"{metric}_lo"] <= everything[metric] + 1e-9).all()
        assert (everything[metric] <= everything[f"{metric}_hi"] + 1e-9).all()
    # A constant image has no edges: the SAR-edge score is undefined there, and said so.
    mean_row = everything.loc["mean_baseline"]
    assert math.isnan(mean_row["sar_edge"]) and "sar_edge undefined" in mean_row["note"]
    assert mean_row["structure_r"] == 0 and mean_row["sharpness"] == 0  # flat: no structure, no texture
    assert everything.loc["v1+v2+v3", "sar_edge"] == pytest.approx(
        res.per_tile.query("variant == 'v1+v2+v3'")["sar_edge"].mean())
    assert everything.loc["v1+v2+v3", "sharpness"] == pytest.approx(
        res.per_tile.query("variant == 'v1+v2+v3'")["sharpness"].mean())
    assert "pipeline untrained" in everything.loc["v1", "note"]
    assert "pipeline untrained" in everything.loc["v1+unsharp", "note"]  # it sharpens the untrained v1
    assert "control untrained" in everything.loc["unet_control", "note"]


def test_subsets_split_clear_and_cloudy_tiles(result):
    _, res = result
    per_tile = res.per_tile
    clear_tiles = per_tile[per_tile["clear_land"].eq(True)]
    cloudy_tiles = per_tile[per_tile["clear_land"].eq(False)]
    assert not clear_tiles.empty and not cloudy_tiles.empty  # the first 3 test tiles have both kinds
    for subset, tiles in (("clear", clear_tiles), ("cloudy", cloudy_tiles)):
        rows = _subset(res.summary, subset)
        v1 = tiles[tiles["variant"] == "v1"]
        assert rows.loc["v1", "n"] == len(v1) and rows.loc["v1", "n_clusters"] == v1["cluster"].nunique()
        assert rows.loc["v1", "psnr"] == pytest.approx(v1["psnr"].mean())
    # The cloudy tile is alone in its cluster: a mean, no interval, and the note says why.
    cloudy = _subset(res.summary, "cloudy").loc["v1"]
    assert cloudy["n"] == 1 and math.isnan(cloudy["psnr_lo"]) and "one scene cluster" in cloudy["note"]
    counts = res.meta["bootstrap"]["subsets"]
    assert counts["all"] == {"tiles": 3, "clusters": 3}
    assert counts["clear"]["tiles"] + counts["cloudy"]["tiles"] == 3


def test_per_tile_rows_are_test_split_tiles(result):
    _, res = result
    per_tile = res.per_tile
    assert list(per_tile.columns) == PER_TILE_COLUMNS
    assert len(per_tile) == len(VARIANTS) * 3
    assert per_tile[["psnr_12", "ssim_12", "sam_deg_12", "sar_edge_reference", "structure_r", "edge_r",
                     "sharpness"]].notna().all().all()
    names = res.meta["tiles"]
    assert per_tile.drop_duplicates("tile")["cluster"].tolist() == scene_clusters(names)
    test_names = {info.name for info in list_pairs(DEFAULT_DATA_DIR, "test")}
    assert set(per_tile["tile"]) <= test_names
    assert res.meta["tiles"] == [info.name for info in evaluation_pairs(DEFAULT_DATA_DIR)[:3]]
    # Stage 2 changes the image on a random-init pipeline, so the variants really differ.
    by_variant = per_tile.groupby("variant")["psnr"].mean()
    assert by_variant["v1"] != by_variant["v1+v2"]


def test_meta_records_provenance(result):
    _, res = result
    meta = res.meta
    assert meta["n_tiles"] == 3 and meta["seed"] == 0 and meta["trained"] is False
    bootstrap = meta["bootstrap"]
    assert {key: bootstrap[key] for key in ("samples", "ci", "seed", "unit", "n_clusters")} == {
        "samples": 200, "ci": 0.95, "seed": 0, "unit": "scene clusters", "n_clusters": 3}
    assert meta["headline_subset"] == "clear" and sorted(tile for cluster in meta["clusters"] for tile in cluster) == sorted(meta["tiles"])
    assert set(meta["sar_edge_ceiling_by_subset"]) == {"clear", "cloudy", "all"}
    assert meta["sar_edge_ceiling_by_subset"]["all"] == meta["sar_edge_ceiling"]
    assert meta["bands"] == "B02,B03,B04,B08"
    assert meta["references_source"].startswith("bundled train split")
    ceiling = meta["sar_edge_ceiling"]
    assert ceiling["lo"] <= ceiling["mean"] <= ceiling["hi"]
    assert "--max-tiles 3" in meta["command"] and meta["created"].endswith("+00:00")
    assert meta["preset_label"].endswith("[UNTRAINED (random weights)]")


def test_load_results_round_trip(result, tmp_path):
    out, res = result
    loaded = load_results(out)
    pd.testing.assert_frame_equal(loaded.summary, res.summary, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.paired, res.paired, check_dtype=False)
    assert len(loaded.per_tile) == len(res.per_tile)
    assert loaded.meta["tiles"] == res.meta["tiles"]
    with pytest.raises(FileNotFoundError, match="no ablation results"):
        load_results(tmp_path)


def test_same_seed_same_summary(result, preset, tmp_path):
    _, res = result
    again = run_ablation(DEFAULT_DATA_DIR, preset=str(preset), out_dir=tmp_path, max_tiles=3, bootstrap=200,
                         progress=False)
    pd.testing.assert_frame_equal(again.summary, res.summary)
    pd.testing.assert_frame_equal(again.paired, res.paired)


def test_folder_without_index_evaluates_every_pair(preset, tmp_path):
    data = tmp_path / "data"
    for info in list_pairs(DEFAULT_DATA_DIR, "validation")[:2]:
        shutil.copytree(info.directory, data / info.name)
    res = run_ablation(data, preset=str(preset), out_dir=tmp_path / "out", bootstrap=50, progress=False)
    assert res.meta["n_tiles"] == 2 and "no splits" in res.meta["split"]
    assert res.per_tile["clear_land"].isna().all()  # nothing known without an index
    assert (_subset(res.summary, "all")["n"] == 2).all()
    for subset in ("clear", "cloudy"):  # unknown clear_land: only in "all"
        rows = _subset(res.summary, subset)
        assert (rows["n"] == 0).all() and rows["psnr"].isna().all()
        assert rows["note"].str.contains(f"no {subset} tiles").all()


def test_preset_without_references_keeps_rows_and_cli_prints(bare_preset, tmp_path, capsys):
    rc = main(["--data", str(DEFAULT_DATA_DIR), "--preset", str(bare_preset), "--out", str(tmp_path),
               "--max-tiles", "1", "--bootstrap", "20", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "unet_control" in printed and "SAR-edge of the real optical" in printed
    loaded = load_results(tmp_path)
    summary = _subset(loaded.summary, "all")
    for variant in ("mean_baseline", "linear_baseline", "unet_control"):
        assert summary.loc[variant, "n"] == 0
        assert summary.loc[variant, ["psnr", "ssim", "sam_deg", "sar_edge", "sharpness"]].isna().all()
        assert "no references" in summary.loc[variant, "note"]
    assert summary.loc["v1+unsharp", "n"] == 0 and "no unsharp-mask setting" in summary.loc["v1+unsharp", "note"]
    assert summary.loc["v1", "n"] == 1
    # Differences with a variant that did not run: n = 0 and the reason, never numbers.
    paired = loaded.paired[loaded.paired["subset"] == "all"].set_index(["comparison", "metric"])
    control = paired.loc[("v1+v2+v3 - unet_control", "psnr")]
    assert control["n"] == 0 and math.isnan(control["mean_diff"]) and "unet_control did not run" in control["note"]
    baseline = paired.loc[("v1+v2+v3 - best baseline", "psnr")]
    assert baseline["n"] == 0 and "no baseline" in baseline["note"]
    assert paired.loc[("v1+v2 - v1", "psnr"), "n"] == 1


@pytest.mark.parametrize("case", ["missing folder", "no pairs"])
def test_cli_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    data = tmp_path / "data"
    if case == "no pairs":
        data.mkdir()
    assert main(["--data", str(data), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(data) in err and "\n" not in err


def test_cli_unknown_preset_exits_2(tmp_path, capsys):
    assert main(["--data", str(DEFAULT_DATA_DIR), "--preset", str(tmp_path / "no-such-preset"),
                 "--out", str(tmp_path / "out"), "--max-tiles", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-preset" in err and "\n" not in err


# ----------------------------------------------------------------------------- statistics


def test_cluster_bootstrap_draws_whole_clusters():
    """Tiles of one cluster are drawn together: only cluster mixtures appear as replicates."""
    values, clusters = [0.0, 0.0, 10.0], [0, 0, 1]
    estimate = cluster_bootstrap(values, clusters, seed=0, resamples=500)
    assert estimate.mean == pytest.approx(10 / 3) and (estimate.n, estimate.n_clusters) == (3, 2)
    # Two clusters drawn with replacement: {A, A} -> 0, {A, B} -> 10/3, {B, B} -> 10. Resampling
    # the three tiles instead also gives 20/3 (tiles 0, 10, 10).
    replicates = set(np.round(estimate.distribution, 9))
    assert replicates == {0.0, round(10 / 3, 9), 10.0}
    assert (estimate.lo, estimate.hi) == (0.0, 10.0)
    tiles = cluster_bootstrap(values, [0, 1, 2], seed=0, resamples=500)
    assert round(20 / 3, 9) in set(np.round(tiles.distribution, 9))


def test_cluster_bootstrap_interval_narrows_with_independent_clusters():
    """The same values: as one cluster per pair of equal tiles, and as independent tiles."""
    values = np.repeat(np.arange(6.0), 2)  # each value twice
    paired = cluster_bootstrap(values, np.repeat(np.arange(6), 2), seed=1, resamples=2000)
    single = cluster_bootstrap(values, np.arange(12), seed=1, resamples=2000)
    assert paired.mean == single.mean == pytest.approx(2.5)
    # Twins counted as independent evidence make the interval too narrow.
    assert (paired.hi - paired.lo) > 1.2 * (single.hi - single.lo)


def test_cluster_bootstrap_edge_cases():
    one = cluster_bootstrap([1.0, 3.0], [4, 4], seed=0, resamples=50)
    assert one.mean == 2.0 and one.lo is None and one.hi is None and one.n_clusters == 1
    assert cluster_bootstrap([np.nan, np.nan], [0, 1]).mean is None
    skip = cluster_bootstrap([1.0, np.nan, 3.0, 5.0], [0, 1, 1, 2], seed=0, resamples=50)
    assert skip.mean == 3.0 and skip.n == 3 and skip.n_clusters == 3
    again = cluster_bootstrap([1.0, np.nan, 3.0, 5.0], [0, 1, 1, 2], seed=0, resamples=50)
    assert (again.lo, again.hi) == (skip.lo, skip.hi)  # seeded


def _hand_made_per_tile() -> pd.DataFrame:
    """Three tiles (two touching: one cluster), clear, clear, cloudy; v1 and v1+v2 and the two baselines."""
    rows = []
    scores = {"v1": [20.0, 22.0, 10.0], "v1+v2": [21.0, 25.0, 9.0], "mean_baseline": [19.0, 19.0, 14.0],
              "linear_baseline": [18.0, 21.0, 13.0]}
    for variant, psnrs in scores.items():
        for tile, cluster, clear, value in zip(("a_1_1", "a_1_2", "b_5_5"), (0, 0, 1), (True, True, False), psnrs,
                                               strict=True):
            rows.append({"variant": variant, "tile": tile, "cluster": cluster, "clear_land": clear, "psnr": value,
                         "ssim": value / 100, "sam_deg": 1.0, "sar_edge": np.nan, "structure_r": value / 50,
                         "edge_r": 0.1, "sharpness": value / 40, "lpips": np.nan, "psnr_12": value,
                         "ssim_12": 0.5, "sam_deg_12": 1.0, "sar_edge_reference": 0.2, "sar_edge_gap": np.nan})
    per_tile = pd.DataFrame(rows, columns=PER_TILE_COLUMNS)
    per_tile.loc[(per_tile["variant"] == "v1+v2") & (per_tile["tile"] == "a_1_1"), "sharpness"] = np.nan
    return per_tile


def test_paired_differences_are_means_of_per_tile_differences():
    per_tile = _hand_made_per_tile()
    summary = summarise(per_tile, seed=0, bootstrap=100)
    paired = paired_differences(per_tile, summary, seed=0, bootstrap=100)
    assert list(paired.columns) == PAIRED_COLUMNS
    assert len(paired) == 3 * len(COMPARISONS) * len(PAIRED_METRICS)
    rows = paired.set_index(["subset", "comparison", "metric"])
    # v1+v2 - v1: per tile +1, +3 (clear), -1 (cloudy).
    assert rows.loc[("clear", "v1+v2 - v1", "psnr"), "mean_diff"] == pytest.approx(2.0)
    assert rows.loc[("all", "v1+v2 - v1", "psnr"), "mean_diff"] == pytest.approx(1.0)
    assert rows.loc[("all", "v1+v2 - v1", "structure_r"), "mean_diff"] == pytest.approx(1.0 / 50)
    # Sharpness of v1+v2 is undefined on one tile: the difference is over the tiles where both are
    # defined ((25 - 22) / 40 and (9 - 10) / 40), not a difference of the two variants' means.
    sharp = rows.loc[("all", "v1+v2 - v1", "sharpness")]
    assert sharp["mean_diff"] == pytest.approx(1 / 40) and sharp["n"] == 2 and "undefined on 1 of 3" in sharp["note"]
    clear = rows.loc[("clear", "v1+v2 - v1", "psnr")]
    assert (clear["n"], clear["n_clusters"]) == (2, 1) and math.isnan(clear["lo"])  # one cluster: no interval
    assert "one scene cluster" in clear["note"]
    everything = rows.loc[("all", "v1+v2 - v1", "psnr")]
    assert (everything["n"], everything["n_clusters"]) == (3, 2)
    assert everything["lo"] == pytest.approx(-1.0) and everything["hi"] == pytest.approx(2.0)  # {cloudy}, {pair}
    # The best baseline is picked per subset by mean PSNR: clear 19.5 (linear) > 19 (mean image),
    # cloudy 14 (mean image) > 13 (linear).
    assert rows.loc[("clear", "v1+v2+v3 - best baseline", "psnr"), "b"] == "linear_baseline"
    assert rows.loc[("cloudy", "v1+v2+v3 - best baseline", "psnr"), "b"] == "mean_baseline"
    # v1+v2+v3 and the control did not run here: rows with n = 0 and a note, no numbers.
    missing = rows.loc[("all", "v1+v2+v3 - unet_control", "psnr")]
    assert missing["n"] == 0 and math.isnan(missing["mean_diff"]) and "did not run" in missing["note"]


def test_paired_differences_match_per_tile_csv(result):
    _, res = result
    per_tile = res.per_tile.set_index(["variant", "tile"])
    for (a, b) in (("v1+v2", "v1"), ("v1+v2+v3", "unet_control")):
        for metric in ("psnr", "ssim", "structure_r", "sharpness"):
            differences = per_tile.loc[a, metric] - per_tile.loc[b, metric]
            row = res.paired.query("subset == 'all' and a == @a and b == @b and metric == @metric").iloc[0]
            assert row["mean_diff"] == pytest.approx(differences.mean()) and row["n"] == 3
            assert row["lo"] <= row["mean_diff"] + 1e-9 <= row["hi"] + 2e-9
    best = res.paired.query("subset == 'all' and comparison == 'v1+v2+v3 - best baseline'")["b"].iloc[0]
    means = _subset(res.summary, "all").loc[["mean_baseline", "linear_baseline"], "psnr"]
    assert best == means.idxmax()


def test_unsharp_baseline_scores_the_stored_filter_on_opt_v1(result):
    _, res = result
    pair = evaluation_pairs(DEFAULT_DATA_DIR)[0]
    item = PairDataset([pair])[0]
    opt_v1 = run_pipeline(build_tiny_pipeline(), item, seed=0, stages=("1",)).opt_v1
    expected = compute_metrics(unsharp_mask(opt_v1, 3, 2.0), item["s1"].numpy(), item["s2"].numpy())
    scored = res.per_tile.set_index(["variant", "tile"]).loc[("v1+unsharp", pair.name)]
    assert scored["psnr"] == pytest.approx(expected["psnr"]) and scored["ssim"] == pytest.approx(expected["ssim"])
    assert scored["psnr"] != pytest.approx(res.per_tile.set_index(["variant", "tile"]).loc[("v1", pair.name), "psnr"])


def test_uncertainty_spearman_per_tile_and_in_the_summary(result, preset, tmp_path):
    _, res = result
    per_tile = res.per_tile.set_index(["variant", "tile"])["uncertainty_spearman"]
    measured = ("v1", "v1+v2", "v1+v2+v3")  # the opt_v1, opt_v2, opt_v3 maps of the full chain's run
    for variant in VARIANTS:
        values = per_tile.loc[variant]
        assert (np.isfinite(values) & (values.abs() <= 1)).all() if variant in measured else values.isna().all()
    # The v1+v2+v3 value of the first tile, recomputed from its own run.
    pair = evaluation_pairs(DEFAULT_DATA_DIR)[0]
    output = run_pipeline(build_tiny_pipeline(), PairDataset([pair])[0], seed=0, uncertainty=8)
    target = PairDataset([pair])[0]["s2"].numpy()
    assert per_tile.loc[("v1+v2+v3", pair.name)] == pytest.approx(error_spearman(output.std["opt_v3"], output.opt_v3,
                                                                               target))
    everything = _subset(res.summary, "all")
    row = everything.loc["v1+v2+v3"]
    assert row["uncertainty_spearman"] == pytest.approx(per_tile.loc["v1+v2+v3"].mean())
    assert row["uncertainty_spearman_lo"] <= row["uncertainty_spearman"] <= row["uncertainty_spearman_hi"]
    assert everything["uncertainty_spearman"].isna().tolist() == [v not in measured for v in VARIANTS]
    assert "uncertainty_spearman" not in everything.loc["v1+v3", "note"]  # not measured: said once, in meta.json
    assert res.meta["uncertainty"] == "8 dihedral transforms" and "--uncertainty 8" in res.meta["command"]
    off = run_ablation(DEFAULT_DATA_DIR, preset=str(preset), out_dir=tmp_path, max_tiles=1, bootstrap=20,
                       uncertainty=0, progress=False)
    assert off.per_tile["uncertainty_spearman"].isna().all() and off.meta["uncertainty"] is None


# ----------------------------------------------------------------------------- figure


def test_figure_writes_a_grid_of_the_expected_size(preset, tmp_path, capsys):
    out = tmp_path / "grid" / "grid.png"
    assert figure.main(["--out", str(out), "--preset", str(preset), "--tiles", "2"]) == 0
    assert str(out) in capsys.readouterr().out
    image = np.asarray(Image.open(out).convert("RGB"))
    panel = 120 * figure.DEFAULT_SCALE
    height = figure.HEADER + 2 * (figure.ROW_TITLE + panel + figure.CAPTION) + figure.FOOTER
    assert image.shape == (height, 6 * panel + 7 * figure.PAD, 3)
    assert image.shape[:2][::-1] == figure.grid_size(2, 120)
    # The first two clear test tiles, sorted by name; panels are exact nearest-neighbour upscales.
    pairs = sorted((info for info in evaluation_pairs(DEFAULT_DATA_DIR) if info.clear_land), key=lambda i: i.name)
    item = PairDataset(pairs[:1])[0]
    top, scale = figure.HEADER + figure.ROW_TITLE, figure.DEFAULT_SCALE
    sar = image[top:top + panel, figure.PAD:figure.PAD + panel]
    assert np.array_equal(sar, sar_false_colour(item["s1"].numpy()).repeat(scale, 0).repeat(scale, 1))
    left = figure.PAD + 4 * (panel + figure.PAD)
    control = image[top:top + panel, left:left + panel]
    expected = rgb_composite(load_for_preset(str(preset)).predict("unet_control", item["s1"].numpy()))
    assert np.array_equal(control, expected.repeat(scale, 0).repeat(scale, 1))
    left = figure.PAD + 5 * (panel + figure.PAD)
    real = image[top:top + panel, left:left + panel]
    assert np.array_equal(real, rgb_composite(item["s2"].numpy()).repeat(scale, 0).repeat(scale, 1))


def test_figure_without_a_control_draws_na(bare_preset, tmp_path):
    out = tmp_path / "grid.png"
    assert figure.main(["--out", str(out), "--preset", str(bare_preset), "--tiles", "1"]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    panel, top = 120 * figure.DEFAULT_SCALE, figure.HEADER + figure.ROW_TITLE
    left = figure.PAD + 4 * (panel + figure.PAD)
    assert (image[top:top + panel, left:left + panel] == 128).all()  # grey: no control to draw


def test_figure_cli_bad_input_exits_2(tmp_path, capsys):
    assert figure.main(["--out", str(tmp_path / "g.png"), "--data", str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err
    assert figure.main(["--out", str(tmp_path / "g.png"), "--tiles", "0"]) == 2


def test_plane_figure_draws_every_variant_of_a_subset(tmp_path):
    from eval.plane import main as plane_main

    fixture = Path(__file__).resolve().parent / "fixtures" / "eval_results"
    out = tmp_path / "plane.png"
    assert plane_main(["--results", str(fixture), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plane_main(["--results", str(tmp_path), "--out", str(out)]) == 2  # no summary.csv: one-line error
