"""The output rules through the Python API, the CLI and the app: Cloud-Optimized float32 GeoTIFFs
with NaN nodata where the SAR was masked, DN clipped at 0, and provenance tags."""

import json
import shutil

import numpy as np
import rasterio
import torch

from app import handlers
from gac_pipeline import __version__, hub
from gac_pipeline.cli import main
from gac_pipeline.configs import Stage3Config
from gac_pipeline.hub import PIPELINE_CONFIG
from gac_pipeline.io import read_output
from gac_pipeline.pipeline import GACPipeline
from tests import bad_inputs

VERSIONS = ("opt_v1", "opt_v2", "opt_v3")


class Darken(torch.nn.Module):
    """A stage-3 stand-in whose output is far below 0 DN everywhere."""

    config = Stage3Config(mode="regress")

    def forward(self, s1_db: torch.Tensor, opt_v2: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
        return opt_v2 - 1e6


def test_negative_dn_are_clipped_at_zero(tiny_pipeline, tmp_path):
    dark = GACPipeline(tiny_pipeline.stage1, tiny_pipeline.stage2, Darken(), tiny_pipeline.config)
    sar = bad_inputs.sar_db(48, 40)
    output = dark.translate(sar)
    assert (output.opt_v3 == 0).all()
    assert output.opt_v1.min() >= 0 and output.opt_v2.min() >= 0

    written = dark.translate_file(bad_inputs.write_raster(tmp_path / "sar.tif", sar), tmp_path / "out", progress=False)
    with rasterio.open(written["paths"]["opt_v3"]) as dataset:
        assert (dataset.read() == 0).all()


def _check_outputs(out_dir, preset_dir) -> None:
    """Outputs of ``bad_inputs.write_nodata``'s scene, run with seed 3 and stages 1,3."""
    base_models = json.loads((preset_dir / PIPELINE_CONFIG).read_text())["base_models"]
    for name in VERSIONS:
        with rasterio.open(out_dir / f"{name}.tif") as dataset:
            assert dataset.dtypes == ("float32",) * 12 and np.isnan(dataset.nodata)
            assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and dataset.profile["tiled"]
            data, tags = dataset.read(), dataset.tags()
        # The SAR's first row is its nodata value (-9999): NaN in every band, never -9999.
        assert np.isnan(data[:, 0]).all() and not np.isnan(data[:, 1:]).any()
        assert data[:, 1:].min() >= 0
        assert {key: tags.get(key) for key in ("preset", "trained", "base_models", "stage", "stages_run", "seed",
                                               "input", "TIFFTAG_SOFTWARE")} == {
            "preset": preset_dir.name, "trained": "false", "base_models": json.dumps(base_models, sort_keys=True),
            "stage": name, "stages_run": "1,3", "seed": "3", "input": "nodata.tif",
            "TIFFTAG_SOFTWARE": f"gac_pipeline {__version__}"}


def test_cli_outputs(saved_tiny_pipeline, tmp_path):
    s1 = bad_inputs.write_nodata(tmp_path)
    assert main(["translate", str(s1), "--out", str(tmp_path / "out"), "--preset", str(saved_tiny_pipeline),
                 "--seed", "3", "--stages", "1,3", "--no-progress"]) == 0
    _check_outputs(tmp_path / "out", saved_tiny_pipeline)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["schema_version"] == 3


def test_cli_uint16_outputs_are_the_float32_ones_rounded(saved_tiny_pipeline, tmp_path):
    s1 = bad_inputs.write_nodata(tmp_path)
    outputs = {}
    for dtype in ("float32", "uint16"):
        assert main(["translate", str(s1), "--out", str(tmp_path / dtype), "--preset", str(saved_tiny_pipeline),
                     "--dtype", dtype, "--no-progress"]) == 0
        outputs[dtype] = {name: read_output(tmp_path / dtype / f"{name}.tif") for name in VERSIONS}
        with rasterio.open(tmp_path / dtype / "opt_v3.tif") as dataset:
            assert dataset.dtypes == (dtype,) * 12
        assert json.loads((tmp_path / dtype / "metrics.json").read_text())["stages"]["opt_v3"]["sar_edge"] is not None
    for name in VERSIONS:
        exact, rounded = outputs["float32"][name], outputs["uint16"][name]
        assert np.array_equal(np.isnan(exact), np.isnan(rounded)) and np.isnan(exact[:, 0]).all()
        np.testing.assert_array_equal(rounded[:, 1:], np.clip(np.rint(exact[:, 1:]), 1, 65535))


def test_app_outputs(saved_tiny_pipeline, tmp_path):
    s1 = bad_inputs.write_nodata(tmp_path)
    handlers.translate(s1, None, str(saved_tiny_pipeline), seed=3, stages=["1", "3"], out_dir=tmp_path / "out")
    _check_outputs(tmp_path / "out", saved_tiny_pipeline)


def test_a_hub_preset_is_recorded_at_its_commit(saved_tiny_pipeline, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = shutil.copytree(saved_tiny_pipeline, tmp_path / "snapshots" / commit)  # the Hub cache's layout
    monkeypatch.setattr(hub, "resolve_checkpoint", lambda repo_id, revision: snapshot)
    assert GACPipeline.from_pretrained("org/gac-tiny", "main").preset == f"org/gac-tiny@{commit}"
    monkeypatch.undo()
    assert GACPipeline.from_pretrained(saved_tiny_pipeline).preset == saved_tiny_pipeline.name
