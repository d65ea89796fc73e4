"""The pipeline follows the model's device and dtype; outputs come back as CPU float32 numpy."""

import numpy as np
import pytest
import torch

from gac_pipeline.cli import main
from gac_pipeline.io import read_s1


@pytest.fixture(scope="module")
def mini_outputs(real_pair):
    """(float32 pipeline's output, the same pipeline's output after .to(float64)), month/biome given."""
    from gac_pipeline.presets import load_preset

    pipeline = load_preset("mini")
    s1 = read_s1(real_pair.s1_path).data
    kwargs = {"month": 7, "biome": "temperate_continental", "uncertainty": 2}
    out32 = pipeline.translate(s1, **kwargs)
    pipeline.to(torch.float64)
    try:
        assert pipeline.placement() == (torch.device("cpu"), torch.float64)
        out64 = pipeline.translate(s1, **kwargs)
    finally:
        pipeline.to(torch.float32)
    return out32, out64


def test_float64_pipeline_runs_end_to_end_close_to_float32(mini_outputs):
    out32, out64 = mini_outputs
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        a, b = getattr(out32, name), getattr(out64, name)
        assert b.dtype == np.float32 and b.shape == a.shape == (12, 120, 120)
        assert np.isfinite(b).all()
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=0.5)  # DN; float32 rounding only
    assert not np.array_equal(out64.opt_v1, out64.opt_v2)  # the stages really ran in float64
    for name in ("opt_v1", "opt_v2", "opt_v3"):  # the uncertainty variants ran through it too
        assert out64.std[name].dtype == np.float32
        np.testing.assert_allclose(out64.std[name], out32.std[name], atol=0.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chain_runs_on_cuda(real_pair, tmp_path):
    from gac_pipeline.presets import load_preset

    pipeline = load_preset("mini")
    s1 = read_s1(real_pair.s1_path).data
    cpu = pipeline.translate(s1, month=7, uncertainty=2)
    pipeline.to("cuda")
    assert pipeline.placement()[0].type == "cuda"
    gpu = pipeline.translate(s1, month=7, uncertainty=2)
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        assert isinstance(getattr(gpu, name), np.ndarray) and getattr(gpu, name).dtype == np.float32
        np.testing.assert_allclose(getattr(gpu, name), getattr(cpu, name), rtol=1e-2, atol=5)
    result = pipeline.translate_file(real_pair.s1_path, tmp_path / "file", progress=False)
    assert all(path.is_file() for path in result["paths"].values())
    assert main(["translate", str(real_pair.s1_path), "--out", str(tmp_path / "cli"), "--preset", "mini",
                 "--device", "cuda", "--no-progress"]) == 0


def test_cli_accepts_device_cpu(real_pair, tmp_path, capsys):
    assert main(["translate", str(real_pair.s1_path), "--out", str(tmp_path), "--preset", "mini",
                 "--device", "cpu", "--no-progress"]) == 0
    assert (tmp_path / "opt_v3.tif").is_file()


@pytest.mark.parametrize("device,message", [("tpu", "--device must be auto, cpu or cuda"),
                                            ("cuda", "no CUDA device is available")])
def test_cli_bad_device_fails_with_one_line(real_pair, tmp_path, capsys, monkeypatch, device, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["translate", str(real_pair.s1_path), "--out", str(tmp_path / "out"), "--preset", "mini",
                 "--device", device, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before any work


def test_cli_auto_device_falls_back_to_cpu(monkeypatch):
    from gac_pipeline.cli import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
