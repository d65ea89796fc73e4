"""The command line end to end on a real bundled tile, through a saved-and-reloaded pipeline."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

from gac_pipeline.cli import main

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
    assert -1 <= report["reference_sar_edge"] <= 1


def test_translate_without_reference_reports_reference_free_scores(saved_tiny_pipeline, real_pair, tmp_path):
    assert main(["translate", str(real_pair.s1_path), "--out", str(tmp_path), "--preset",
                 str(saved_tiny_pipeline), "--stages", "1,3", "--no-progress"]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["stages"]["opt_v2"]["ran"] is False
    assert report["stages"]["opt_v1"]["psnr"] is None and "sar_edge" in report["stages"]["opt_v1"]


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "gac_pipeline", "translate", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "--reference" in result.stdout
