"""The bad-input corpus (``tests/bad_inputs.py``) through all three interfaces, plus checkpoint safety.

Each file of ``bad_inputs.CORPUS`` is given to the CLI (exit 2, one line on stderr), the Python API
(``InputError`` with one line naming the file) and the app's ``/translate`` endpoint on one in-process
server (one-line error, then a good request still succeeds). The partly NaN/inf scene must instead run
everywhere, with the bad pixels masked (nodata in the outputs) and said so in the notes.
"""

import json
import re
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import load_file, save_file

from gac_pipeline import hub
from gac_pipeline.cli import main
from gac_pipeline.io import InputError, check_same_grid, read_s1, read_s2
from gac_pipeline.pipeline import GACPipeline
from gac_pipeline.stages.base import CheckpointError
from tests import bad_inputs

REFUSED = [pytest.param(case, id=case.name) for case in bad_inputs.CORPUS if case.expected]
PARTLY_NAN = next(case for case in bad_inputs.CORPUS if not case.expected)
TORCH_LOAD = r"torch\.load\((?:[^()]|\([^()]*\))*\)"  # a call, with arguments nested one level deep
MASKED_NOTE = "masked 15 NaN/inf/nodata pixels"  # write_partly_nan: 10 NaN, 3 +inf, 2 -inf


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    bad_inputs.write_all(folder)
    return folder


@pytest.fixture(scope="module")
def good_sar(corpus) -> Path:
    return bad_inputs.write_good_sar(corpus)


@pytest.fixture(scope="module")
def pipeline(saved_tiny_pipeline) -> GACPipeline:
    return GACPipeline.from_pretrained(saved_tiny_pipeline)


def _assert_one_line(message: str, path: Path, expected: str) -> None:
    assert "\n" not in message.strip(), message
    assert path.name in message, message
    assert re.search(expected, message.strip()), message


def _nan_where_masked(path: Path, source: Path) -> None:
    """Every band of an output is nodata (NaN) exactly where the source has a NaN/inf pixel."""
    with rasterio.open(path) as dataset, rasterio.open(source) as scene:
        written, expected = dataset.read(), ~np.isfinite(scene.read()).all(axis=0)
    assert expected.sum() == 15
    np.testing.assert_array_equal(np.isnan(written), np.broadcast_to(expected, written.shape))


# ----------------------------------------------------------------------------- CLI


def _cli(s1: Path, out: Path, preset: Path, reference: Path | None = None) -> int:
    argv = ["translate", str(s1), "--out", str(out), "--preset", str(preset), "--no-progress"]
    return main(argv + (["--reference", str(reference)] if reference else []))


@pytest.mark.parametrize("case", REFUSED)
def test_cli_refuses_with_one_line(case, corpus, good_sar, saved_tiny_pipeline, tmp_path, capsys):
    path = case.write(corpus)
    s1, reference = (path, None) if case.role == "sar" else (good_sar, path)
    code = _cli(s1, tmp_path / "out", saved_tiny_pipeline, reference)
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith("error: ")
    _assert_one_line(captured.err, path, case.expected)
    assert not list(tmp_path.rglob("*.tif"))  # refused before any output is written


def test_cli_runs_partly_nan_and_says_so(corpus, saved_tiny_pipeline, tmp_path, capsys):
    path = PARTLY_NAN.write(corpus)
    assert _cli(path, tmp_path, saved_tiny_pipeline) == 0
    printed = json.loads(capsys.readouterr().out)
    assert any(MASKED_NOTE in note for note in printed["notes"])
    _nan_where_masked(tmp_path / "opt_v3.tif", path)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert all(np.isfinite(stage["sar_edge"]) for stage in report["stages"].values())


# ----------------------------------------------------------------------------- Python API


@pytest.mark.parametrize("case", REFUSED)
def test_api_raises_input_error_naming_the_file(case, corpus, good_sar, pipeline, tmp_path):
    path = case.write(corpus)
    if case.role == "sar":
        calls = [lambda: read_s1(path), lambda: pipeline.translate_file(path, tmp_path / "out", progress=False)]
    else:
        sar = read_s1(good_sar)
        calls = [lambda: check_same_grid(sar, read_s2(path), good_sar, path)]
    for call in calls:
        with pytest.raises(InputError) as caught:
            call()
        assert isinstance(caught.value, ValueError)
        _assert_one_line(str(caught.value), path, case.expected)
        assert str(caught.value).startswith(f"{path.name}: ")
    assert not list(tmp_path.rglob("*.tif"))


def test_api_runs_partly_nan_and_says_so(corpus, pipeline, tmp_path):
    path = PARTLY_NAN.write(corpus)
    sar = read_s1(path)
    assert (~sar.valid_mask).sum() == 15 and np.isfinite(sar.data).all()
    result = pipeline.translate_file(path, tmp_path, progress=False)
    assert any(MASKED_NOTE in note for note in result["notes"])
    for written in result["paths"].values():
        _nan_where_masked(written, path)


# ----------------------------------------------------------------------------- app server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(saved_tiny_pipeline):
    """One in-process app for the whole module: ``(client, url)``."""
    from gradio_client import Client

    from app.ui import build_demo

    demo = build_demo(presets=("mini", str(saved_tiny_pipeline))).queue(default_concurrency_limit=1, max_size=8)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, max_file_size="64mb")
    try:
        yield Client(url, verbose=False, download_files=False), url
    finally:
        demo.close()


def _translate(server, preset: Path, s1: Path, reference: Path | None = None) -> tuple:
    from gradio_client import handle_file

    from app.ui import SLIDER_CHOICES

    client, _ = server
    return client.predict(handle_file(str(s1)), handle_file(str(reference)) if reference else None, str(preset),
                          0, "unknown", 0, ["1", "2", "3"], next(iter(SLIDER_CHOICES)), api_name="/translate")


def _assert_good_request(server, preset: Path, good_sar: Path) -> None:
    outputs = _translate(server, preset, good_sar, good_sar.parent / "s2_shuffled.tif")
    assert all(image is not None for image in outputs[:5])  # SAR, opt_v1..3, reference
    assert isinstance(outputs[6]["data"][0][1], float)  # opt_v1 PSNR against the reference


@pytest.mark.parametrize("case", REFUSED)
def test_app_refuses_with_one_line_then_serves(case, corpus, good_sar, server, saved_tiny_pipeline):
    from gradio_client.exceptions import AppError

    path = case.write(corpus)
    s1, reference = (path, None) if case.role == "sar" else (good_sar, path)
    with pytest.raises(AppError) as caught:
        _translate(server, saved_tiny_pipeline, s1, reference)
    assert "unexpected error" not in str(caught.value)  # a handled refusal, not a caught crash
    _assert_one_line(str(caught.value), path, case.expected)
    _assert_good_request(server, saved_tiny_pipeline, good_sar)


def test_app_runs_partly_nan_and_says_so(corpus, server, saved_tiny_pipeline):
    outputs = _translate(server, saved_tiny_pipeline, PARTLY_NAN.write(corpus))
    assert outputs[1] is not None and MASKED_NOTE in outputs[7]  # opt_v1 image; the summary's notes


def test_app_still_alive_after_the_corpus(server, saved_tiny_pipeline, good_sar):
    _assert_good_request(server, saved_tiny_pipeline, good_sar)
    with urllib.request.urlopen(server[1], timeout=10) as response:
        assert response.status == 200


# ----------------------------------------------------------------------------- checkpoint safety
# Covered in test_stages_pipeline.test_checkpoint_errors: SHA-256 mismatch, a .pkl file, shape mismatch.


def _copy(saved_tiny_pipeline: Path, folder: Path) -> Path:
    return Path(shutil.copytree(saved_tiny_pipeline, folder / "checkpoint"))


def _record(root: Path, relative: str) -> None:
    """Record ``relative``'s current hash in pipeline_config.json, as a tamperer would."""
    config_path = root / hub.PIPELINE_CONFIG
    config = json.loads(config_path.read_text())
    config["files"][relative] = hub.sha256(root / relative)
    config_path.write_text(json.dumps(config))


@pytest.mark.parametrize("suffix", [s for s in hub.PICKLE_SUFFIXES if s != ".pkl"])
def test_checkpoint_pickles_are_refused(saved_tiny_pipeline, tmp_path, suffix):
    root = _copy(saved_tiny_pipeline, tmp_path)
    (root / "stage2" / f"weights{suffix}").write_bytes(b"\x80\x04K\x01.")  # pickle of 1
    with pytest.raises(hub.CheckpointSafetyError, match="pickled files are refused"):
        GACPipeline.from_pretrained(root)


class _RunsCode:
    """A pickle that would create a file when unpickled without ``weights_only``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_hub_downloads_no_pickles_and_published_pt_files_load_weights_only(tmp_path):
    """Hub snapshots fetch only JSON/safetensors/Markdown; the foundation models' published ``.pt``
    files are unpickled only with ``weights_only=True``: code inside one never runs."""
    import pickle

    assert not any(pattern.endswith(hub.PICKLE_SUFFIXES) for pattern in hub.ALLOWED_PATTERNS)
    repo = Path(__file__).resolve().parent.parent
    ours = [call for folder in ("gac_pipeline", "training") for path in (repo / folder).rglob("*.py")
            for call in re.findall(TORCH_LOAD, path.read_text())]
    assert ours and all("weights_only=True" in call for call in ours), ours

    marker, evil = tmp_path / "code-ran", tmp_path / "evil.pt"
    torch.save({"w": _RunsCode(marker)}, evil)
    with pytest.raises(pickle.UnpicklingError):
        hub.load_torch_weights(evil)
    assert not marker.exists()
    with_metadata, not_weights = tmp_path / "with-metadata.pt", tmp_path / "not-weights.pt"
    torch.save({"w": torch.zeros(1), "epoch": 3}, with_metadata)
    assert list(hub.load_torch_weights(with_metadata)) == ["w"]
    torch.save({"epoch": 3, "note": "no tensors"}, not_weights)
    with pytest.raises(hub.CheckpointSafetyError, match="not a state dict of tensors"):
        hub.load_torch_weights(not_weights)


def test_checkpoint_paths_escaping_the_folder_are_refused(saved_tiny_pipeline, tmp_path):
    root = _copy(saved_tiny_pipeline, tmp_path)
    (tmp_path / "outside.json").write_text("{}")
    _record(root, "../outside.json")
    with pytest.raises(hub.CheckpointSafetyError, match=r"\.\./outside\.json: path escapes the checkpoint folder"):
        GACPipeline.from_pretrained(root)

    root = _copy(saved_tiny_pipeline, tmp_path / "linked")
    shutil.move(root / "stage3", tmp_path / "stage3_elsewhere")
    (root / "stage3").symlink_to(tmp_path / "stage3_elsewhere")  # same files, hashes still match
    with pytest.raises(hub.CheckpointSafetyError, match="stage3.*escapes the checkpoint folder"):
        GACPipeline.from_pretrained(root)


@pytest.mark.parametrize("change, expected", [
    ("drop", r"missing \['decoder\.blocks\.0\.depthwise\.bias'\], unexpected \[\]"),
    ("add", r"missing \[\], unexpected \['smuggled\.weight'\]"),
], ids=["missing-key", "unexpected-key"])
def test_checkpoint_missing_or_unexpected_keys_fail_clearly(saved_tiny_pipeline, tmp_path, change, expected):
    import torch

    root = _copy(saved_tiny_pipeline, tmp_path)
    weights = root / "stage1" / "model.safetensors"
    state = load_file(weights)
    if change == "drop":
        del state["decoder.blocks.0.depthwise.bias"]
    else:
        state["smuggled.weight"] = torch.zeros(3)
    save_file(state, weights)
    _record(root, "stage1/model.safetensors")  # the hash matches: only the key check can catch it
    with pytest.raises(CheckpointError, match=expected) as caught:
        GACPipeline.from_pretrained(root)
    assert "stage1/model.safetensors: keys do not match" in str(caught.value) and "\n" not in str(caught.value)
