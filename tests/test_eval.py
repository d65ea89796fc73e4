"""The ablation evaluation on a tiny random-init pipeline and the bundled data."""

import math
import shutil

import pandas as pd
import pytest
import torch

from eval.__main__ import main
from eval.ablation import PER_TILE_COLUMNS, SUMMARY_COLUMNS, VARIANTS, load_results, run_ablation
from gac_pipeline.control import ControlConfig, UNetControl
from gac_pipeline.data import DEFAULT_DATA_DIR, evaluation_pairs, list_pairs
from gac_pipeline.references import References
from tests.conftest import build_tiny_pipeline
from training.common import load_split

EXPECTED_ORDER = ["mean_baseline", "linear_baseline", "unet_control", "v1", "v1+v2", "v1+v3", "v1+v2+v3"]


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
    refs.save(directory)
    return directory


@pytest.fixture(scope="module")
def result(preset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    return out, run_ablation(DEFAULT_DATA_DIR, preset=str(preset), out_dir=out, max_tiles=3, bootstrap=200,
                             progress=False)


def test_files_variants_and_intervals(result):
    out, res = result
    assert VARIANTS == tuple(EXPECTED_ORDER)
    for name in ("per_tile.csv", "summary.csv", "meta.json"):
        assert (out / name).is_file()
    summary = res.summary
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert summary["variant"].tolist() == EXPECTED_ORDER
    assert (summary["n"] == 3).all()
    for metric in ("psnr", "ssim", "sam_deg"):
        assert summary[metric].notna().all()
        assert (summary[f"{metric}_lo"] <= summary[metric] + 1e-9).all()
        assert (summary[metric] <= summary[f"{metric}_hi"] + 1e-9).all()
    # A constant image has no edges: the SAR-edge score is undefined there, and said so.
    mean_row = summary.set_index("variant").loc["mean_baseline"]
    assert math.isnan(mean_row["sar_edge"]) and "sar_edge undefined" in mean_row["note"]
    assert summary.set_index("variant").loc["v1+v2+v3", "sar_edge"] == pytest.approx(
        res.per_tile.query("variant == 'v1+v2+v3'")["sar_edge"].mean())
    assert "pipeline untrained" in summary.set_index("variant").loc["v1", "note"]
    assert "control untrained" in summary.set_index("variant").loc["unet_control", "note"]


def test_per_tile_rows_are_test_split_tiles(result):
    _, res = result
    per_tile = res.per_tile
    assert list(per_tile.columns) == PER_TILE_COLUMNS
    assert len(per_tile) == 7 * 3
    assert per_tile[["psnr_12", "ssim_12", "sam_deg_12", "sar_edge_reference"]].notna().all().all()
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
    assert meta["bootstrap"] == {"samples": 200, "ci": 0.95, "seed": 0}
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
    assert len(loaded.per_tile) == len(res.per_tile)
    assert loaded.meta["tiles"] == res.meta["tiles"]
    with pytest.raises(FileNotFoundError, match="no ablation results"):
        load_results(tmp_path)


def test_same_seed_same_summary(result, preset, tmp_path):
    _, res = result
    again = run_ablation(DEFAULT_DATA_DIR, preset=str(preset), out_dir=tmp_path, max_tiles=3, bootstrap=200,
                         progress=False)
    pd.testing.assert_frame_equal(again.summary, res.summary)


def test_folder_without_index_evaluates_every_pair(preset, tmp_path):
    data = tmp_path / "data"
    for info in list_pairs(DEFAULT_DATA_DIR, "validation")[:2]:
        shutil.copytree(info.directory, data / info.name)
    res = run_ablation(data, preset=str(preset), out_dir=tmp_path / "out", bootstrap=50, progress=False)
    assert res.meta["n_tiles"] == 2 and "no splits" in res.meta["split"]
    assert (res.summary["n"] == 2).all()
    assert res.per_tile["clear_land"].isna().all()  # nothing known without an index


def test_preset_without_references_keeps_rows_and_cli_prints(bare_preset, tmp_path, capsys):
    rc = main(["--data", str(DEFAULT_DATA_DIR), "--preset", str(bare_preset), "--out", str(tmp_path),
               "--max-tiles", "1", "--bootstrap", "20", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "unet_control" in printed and "SAR-edge of the real optical" in printed
    summary = load_results(tmp_path).summary.set_index("variant")
    for variant in ("mean_baseline", "linear_baseline", "unet_control"):
        assert summary.loc[variant, "n"] == 0
        assert summary.loc[variant, ["psnr", "ssim", "sam_deg", "sar_edge"]].isna().all()
        assert "no references" in summary.loc[variant, "note"]
    assert summary.loc["v1", "n"] == 1


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
