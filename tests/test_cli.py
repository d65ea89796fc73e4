"""The command line end to end on a real bundled tile, through a saved-and-reloaded pipeline."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from gac_pipeline.cli import main
from gac_pipeline.io import read_s1, read_s2
from gac_pipeline.metrics import gradient_energy
from gac_pipeline.references import References

REPO = Path(__file__).resolve().parent.parent


def test_translate_real_tile_with_reference(saved_tiny_pipeline, real_pair, tmp_path):
    out = tmp_path / "out"
    code = main(["translate", str(real_pair.s1_path), "--out", str(out), "--reference", str(real_pair.s2_path),
                 "--preset", str(saved_tiny_pipeline), "--no-progress", "--biome", real_pair.biome])
    assert code == 0
    with rasterio.open(real_pair.s1_path) as source:
        crs, transform = source.crs, source.transform
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        with rasterio.open(out / f"{name}.tif") as dataset:
            assert dataset.count == 12 and dataset.crs == crs and dataset.transform == transform
            assert dataset.descriptions[1] == "B02"
            assert np.isfinite(dataset.read()).all()
    report = json.loads((out / "metrics.json").read_text())
    assert "UNTRAINED" in report["pipeline"] and report["month"] == real_pair.month
    for entry in report["stages"].values():
        assert entry["ran"] and isinstance(entry["psnr"], float) and isinstance(entry["ssim"], float)
        assert entry["lpips"] is None or isinstance(entry["lpips"], float)
        assert entry["lpips"] is not None or entry["lpips_reason"]
        assert all(isinstance(entry[key], float) for key in ("structure_r", "edge_r", "sharpness"))
        # This preset stores no references, so no training median: null and why.
        assert entry["sharpness_vs_training"] is None and "no references" in entry["sharpness_vs_training_reason"]
    assert -1 <= report["reference_sar_edge"] <= 1
    assert report["schema_version"] == 3 and report["training_gradient_energy"] is None
    assert report["reference_sharpness_vs_training"] is None


def test_translate_without_reference_reports_reference_free_scores(saved_tiny_pipeline, real_pair, tmp_path):
    assert main(["translate", str(real_pair.s1_path), "--out", str(tmp_path), "--preset",
                 str(saved_tiny_pipeline), "--stages", "1,3", "--no-progress"]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["stages"]["opt_v2"]["ran"] is False
    assert report["stages"]["opt_v1"]["psnr"] is None and "sar_edge" in report["stages"]["opt_v1"]
    for key in ("structure_r", "edge_r", "sharpness", "sharpness_vs_training"):
        assert report["stages"]["opt_v1"][key] is None
    assert report["stages"]["opt_v1"]["sharpness_vs_training_reason"]


def test_translate_uses_the_presets_training_median(saved_tiny_pipeline, real_pair, tmp_path):
    preset = tmp_path / "preset"
    shutil.copytree(saved_tiny_pipeline, preset)
    s1, s2 = read_s1(real_pair.s1_path).data, read_s2(real_pair.s2_path).data
    references = References.fit(s1[None], s2[None], source="the test pair itself")
    references.save(preset)
    assert references.training_gradient_energy == pytest.approx(gradient_energy(s2), rel=1e-12)  # one tile: its own energy

    out = tmp_path / "out"
    assert main(["translate", str(real_pair.s1_path), "--out", str(out), "--preset", str(preset),
                 "--reference", str(real_pair.s2_path), "--no-progress"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["training_gradient_energy"] == pytest.approx(references.training_gradient_energy, rel=1e-12)
    assert report["reference_sharpness_vs_training"] == pytest.approx(1.0, rel=1e-12)  # the reference is the training tile
    for name, entry in report["stages"].items():
        with rasterio.open(out / f"{name}.tif") as dataset:
            written = np.nan_to_num(dataset.read().astype(np.float32))
        expected = gradient_energy(written) / references.training_gradient_energy
        assert entry["sharpness_vs_training"] == pytest.approx(expected, rel=1e-9) and entry["sharpness_vs_training_reason"] is None
        # Against the reference: the same tile here, so the same ratio.
        assert entry["sharpness"] == pytest.approx(expected, rel=1e-9)


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "gac_pipeline", "translate", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "--reference" in result.stdout


def test_a_bad_input_is_refused_before_the_model_libraries_load(tmp_path):
    """A wrong path or a non-TIFF costs seconds, not the ~20 s import of terratorch and torchmetrics."""
    not_a_tiff = tmp_path / "notes.tif"
    not_a_tiff.write_text("not a raster")
    check = ("import sys; from gac_pipeline.cli import main; "
             f"codes = [main(['translate', p, '--out', {str(tmp_path / 'out')!r}]) "
             f"for p in ({str(tmp_path / 'missing.tif')!r}, {str(not_a_tiff)!r})]; "
             "print(codes, sorted(m for m in ('terratorch', 'torchmetrics') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.stdout.strip() == "[2, 2] []", result.stderr
    assert "missing.tif: file not found" in result.stderr and "notes.tif: not a readable raster" in result.stderr


def test_preview_png_has_a_labelled_column_per_image(saved_tiny_pipeline, real_pair, tmp_path):
    from PIL import Image

    from gac_pipeline.cli import PREVIEW_GAP_PX, PREVIEW_LABEL_PX

    common = ["translate", str(real_pair.s1_path), "--preset", str(saved_tiny_pipeline), "--no-progress", "--preview"]
    assert main([*common, "--out", str(tmp_path / "sar_only")]) == 0
    assert main([*common, "--out", str(tmp_path / "with_reference"), "--reference", str(real_pair.s2_path)]) == 0
    for folder, columns in (("sar_only", 4), ("with_reference", 5)):  # SAR | v1 | v2 | v3 [| reference]
        with Image.open(tmp_path / folder / "preview.png") as image:
            assert image.format == "PNG" and image.mode == "RGB"
            # The 120-px tile upscaled x3 (nearest neighbour) under a label strip.
            assert image.size == (columns * 360 + (columns - 1) * PREVIEW_GAP_PX, PREVIEW_LABEL_PX + 360)
            pixels = np.asarray(image)
        assert (pixels[PREVIEW_LABEL_PX:PREVIEW_LABEL_PX + 3, :3] == pixels[PREVIEW_LABEL_PX, 0]).all()  # 3x3 blocks
    assert not (tmp_path / "sar_only" / "uncertainty.tif").exists()


def test_timesteps_reach_the_pipeline(saved_tiny_pipeline, real_pair, tmp_path, capsys):
    common = ["translate", str(real_pair.s1_path), "--preset", str(saved_tiny_pipeline), "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "bad"), "--timesteps", "0"]) == 2
    assert "timesteps must be a whole number >= 1" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "steps"), "--timesteps", "3"]) == 0
    for name in ("opt_v1", "opt_v2", "opt_v3"):  # regress mode ignores the steps
        with rasterio.open(tmp_path / "plain" / f"{name}.tif") as a, rasterio.open(tmp_path / "steps" / f"{name}.tif") as b:
            assert np.array_equal(a.read(), b.read(), equal_nan=True)


def test_out_that_is_a_file_is_one_line(real_pair, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder\n")
    for out in (taken, taken / "sub"):
        assert main(["translate", str(real_pair.s1_path), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --out") and "is a file, expected a folder" in err and "\n" not in err


def test_stages_with_spaces_and_a_rerun_leave_nothing_stale(saved_tiny_pipeline, real_pair, tmp_path):
    common = ["translate", str(real_pair.s1_path), "--out", str(tmp_path), "--preset", str(saved_tiny_pipeline),
              "--no-progress"]
    assert main([*common, "--preview"]) == 0 and (tmp_path / "preview.png").is_file()
    assert main([*common, "--stages", "1, 3", "--biome", "Alpine"]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["biome"] == "alpine"
    assert [report["stages"][name]["ran"] for name in ("opt_v1", "opt_v2", "opt_v3")] == [True, False, True]
    assert not (tmp_path / "preview.png").exists()  # from the run before, with other options


def test_a_reference_on_a_scene_too_large_to_score_is_refused(saved_tiny_pipeline, real_pair, tmp_path, capsys,
                                                              monkeypatch):
    from gac_pipeline import cli

    monkeypatch.setattr(cli, "MAX_SCORED_PIXELS", 100 * 100)  # the 120-px tile is then "too large to score"
    assert main(["translate", str(real_pair.s1_path), "--out", str(tmp_path / "out"), "--preset",
                 str(saved_tiny_pipeline), "--reference", str(real_pair.s2_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--reference: scenes over 10000 pixels are written but not scored" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
