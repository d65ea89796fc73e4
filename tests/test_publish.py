"""``python -m gac_pipeline publish model|space``: staged folders, cards, and uploads to a loopback Hub.

Everything is offline: dry runs touch no network, and uploads go to ``tests/hub_server.py``
(in-process, 127.0.0.1). While it runs, huggingface_hub's endpoint constants point at it (what
``HF_ENDPOINT`` sets when the library is imported) and offline mode is lifted for it alone.
"""

import json
import os
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard, SpaceCard

from gac_pipeline import cli, publish
from gac_pipeline.configs import PipelineConfig
from gac_pipeline.data import DEFAULT_DATA_DIR, evaluation_pairs, list_pairs
from gac_pipeline.presets import PRESETS, load_preset
from gac_pipeline.references import load_for_preset
from tests.hub_server import GITATTRIBUTES, HubServer

ROOT = Path(__file__).resolve().parent.parent
MINI = PRESETS["mini"]
SPACE_RESULTS = ("summary.csv", "per_tile.csv", "paired.csv", "meta.json")


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], capsys) -> dict:
    assert cli.main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def staged_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "staged"
    assert cli.main(["publish", "model", "me/gac-mini", "--from", "mini", "--dry-run", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def staged_space(tmp_path_factory):
    out = tmp_path_factory.mktemp("space") / "staged"
    assert cli.main(["publish", "space", "me/gac-demo", "--model", "mini", "--dry-run", str(out)]) == 0
    return out


@pytest.fixture
def loopback_hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    with HubServer() as server:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setenv("HF_TOKEN", "hf_loopback_only")  # never a real token, even to 127.0.0.1
        yield server


# ------------------------------------------------------------------------------------ dry runs


def test_model_dry_run_is_the_checkpoint_plus_a_card(staged_model):
    staged = files(staged_model)
    # save_pretrained, references/ and training.json reproduce the preset byte for byte; the card is added.
    assert staged.keys() == files(MINI).keys() | {"README.md"}
    assert all(staged[name] == data for name, data in files(MINI).items())
    card = ModelCard.load(staged_model / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "apache-2.0" and meta["pipeline_tag"] == "image-to-image"
    assert "datasets" not in meta and "base_model" not in meta  # mini: no Hub dataset, no pretrained base
    assert {"sentinel-1", "sentinel-2", "sar-to-optical"} <= set(meta["tags"])
    assert "python -m training.train_mini" in card.text and "3-fold cross-validation" in card.text
    assert 'GACPipeline.from_pretrained("me/gac-mini", revision="<commit>")' in card.text
    assert "--preset me/gac-mini@<commit>" in card.text


@pytest.fixture
def mini_evaluated(tmp_path):
    """The committed eval summary, its meta.json describing the current presets/mini."""
    config = PipelineConfig.load(MINI / "pipeline_config.json")
    meta = json.loads((ROOT / "eval" / "results" / "meta.json").read_text())
    meta.update(preset="mini", preset_description=config.description, trained=config.trained)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "summary.csv").write_bytes((ROOT / "eval" / "results" / "summary.csv").read_bytes())
    return config, tmp_path


def test_model_card_scores_come_from_the_eval_summary(mini_evaluated):
    import pandas as pd

    config, eval_dir = mini_evaluated
    training = json.loads((MINI / "training.json").read_text())
    card = publish.model_card(config, "me/gac-mini", training, publish.evaluation(str(MINI), config, eval_dir))
    # model-index: the pipeline output's clear-tile scores.
    summary = pd.read_csv(eval_dir / "summary.csv").set_index(["subset", "variant"])
    output = summary.loc[("clear", "v1+v2+v3")]
    scores = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert scores == pytest.approx({m: output[m] for m in ("psnr", "ssim", "structure_r")}, abs=1e-4)
    assert all(r.dataset_split == "test" and r.dataset_config == "clear" for r in card.data.eval_results)
    # The body's table: every variant, the baselines and the control, with intervals.
    for variant, name in publish.VARIANT_NAMES.items():
        row = summary.loc[("clear", variant)]
        assert f"| {name} | {row['n']} | {row['psnr']:.3f} [{row['psnr_lo']:.3f}, {row['psnr_hi']:.3f}] |" in card.text


def test_eval_summary_of_other_weights_is_not_used(mini_evaluated):
    config, eval_dir = mini_evaluated
    assert publish.evaluation("mini", config, eval_dir) is not None
    assert publish.evaluation("hub", config, eval_dir) is None  # another preset
    meta = json.loads((eval_dir / "meta.json").read_text())
    (eval_dir / "meta.json").write_text(json.dumps({**meta, "preset_description": "retrained since"}))
    assert publish.evaluation("mini", config, eval_dir) is None  # same name, other weights


def test_model_card_of_unevaluated_weights_has_no_scores(saved_tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "tiny"
    report = run_cli(["publish", "model", "me/tiny", "--from", str(saved_tiny_pipeline), "--dry-run", str(out)], capsys)
    assert report["files"] == len(files(out))
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results is None and "model-index" not in card.content
    assert "No evaluation summary of these weights" in card.text and "UNTRAINED" in card.text


def test_model_card_names_the_base_models():
    bases = PipelineConfig.load(PRESETS["hub"] / "pipeline_config.json")
    card = publish.model_card(bases, "me/gac-hub", None, None)
    assert card.data.base_model == ["ibm-esa-geospatial/TerraMind-1.0-base",
                                    "ibm-esa-geospatial/TerraMind-1.0-Tokenizer-S2L2A",
                                    "ibm-nasa-geospatial/Prithvi-EO-2.0-300M"]
    assert "(not pinned to a commit)" in card.text
    # the hardware the hub preset's architectures need (bench.hub_memory), not the small pipeline's line
    assert f"## Hardware\n\n{publish.HUB_SIZE_HARDWARE}" in card.text and "GB of RAM" in card.text
    mini = publish.model_card(PipelineConfig.load(MINI / "pipeline_config.json"), "me/gac-mini", None, None)
    assert "## Hardware\n\nNo foundation-model weights" in mini.text and "GB of RAM" not in mini.text


def test_dry_run_refuses_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert cli.main(["publish", "space", "me/x", "--model", "mini", "--dry-run", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "mine"


def test_space_dry_run_is_self_contained(staged_space):
    staged = files(staged_space)
    data = DEFAULT_DATA_DIR.relative_to(ROOT).as_posix()
    pairs = list_pairs(DEFAULT_DATA_DIR, "train") + list_pairs(DEFAULT_DATA_DIR, "test")
    copied = (["app.py", "eval/__init__.py", "eval/__main__.py", "eval/ablation.py"]
              + [f"eval/results/{name}" for name in SPACE_RESULTS]
              + [f"{data}/README.md", f"{data}/LICENSE.configilm", "requirements.txt"]
              + [p.relative_to(ROOT).as_posix() for folder in ("app", "gac_pipeline", "presets/mini")
                 for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
              + [(p.directory / name).relative_to(ROOT).as_posix() for p in pairs for name in ("S1GRD.tif", "S2L2A.tif")])
    assert staged.keys() == set(copied) | {"README.md", "space_config.json", f"{data}/index.csv"}
    assert all(staged[name] == (ROOT / name).read_bytes() for name in copied)
    assert not any(name.startswith(("tests/", "training/", "bench/")) for name in staged)
    requirements = [line.split("#")[0].strip() for line in staged["requirements.txt"].decode().splitlines()]
    packages = {line.split("==")[0].lower() for line in requirements if line}
    assert "torch" in packages and "gradio" in packages
    assert not packages & {"pytest", "playwright", "bitsandbytes"} and not any(p.startswith("-") for p in packages)

    # The app reads the same examples and training tiles from the Space's own data folder.
    space_data = staged_space / data
    assert [p.name for p in evaluation_pairs(space_data)] == [p.name for p in evaluation_pairs(DEFAULT_DATA_DIR)]
    assert [p.name for p in list_pairs(space_data, "train")] == [p.name for p in list_pairs(DEFAULT_DATA_DIR, "train")]
    assert json.loads(staged["space_config.json"]) == {"preset": "mini"}

    card = SpaceCard.load(staged_space / "README.md").data.to_dict()
    assert card["sdk"] == "gradio" and card["sdk_version"] == version("gradio") and card["app_file"] == "app.py"
    assert card["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "models" not in card and "datasets" not in card  # mini loads nothing from the Hub


def test_space_of_the_hub_preset_names_its_base_models(tmp_path):
    publish.stage_space("hub", tmp_path / "space", "me/gac-hub-demo")
    assert (tmp_path / "space" / "presets" / "hub" / "pipeline_config.json").is_file()
    assert json.loads((tmp_path / "space" / "space_config.json").read_text()) == {"preset": "hub,mini"}
    assert SpaceCard.load(tmp_path / "space" / "README.md").data.models == [
        "ibm-esa-geospatial/TerraMind-1.0-base", "ibm-esa-geospatial/TerraMind-1.0-Tokenizer-S2L2A",
        "ibm-nasa-geospatial/Prithvi-EO-2.0-300M"]


def test_space_refuses_a_local_folder(saved_tiny_pipeline, tmp_path, capsys):
    assert cli.main(["publish", "space", "me/x", "--model", str(saved_tiny_pipeline), "--dry-run",
                     str(tmp_path / "s")]) == 2
    assert "publish model" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_staged_space_serves_translate_offline_from_its_own_folder(staged_space, tmp_path):
    from gradio_client import Client, handle_file

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from this checkout
    env.update(HF_HUB_OFFLINE="1", GRADIO_SERVER_PORT=str(port), OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    with open(tmp_path / "space.log", "w") as log:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=staged_space, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not _listening(port):
                assert server.poll() is None, (tmp_path / "space.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the staged Space did not start in 180 s"
                time.sleep(1)
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
            pair = evaluation_pairs(staged_space / "data" / "bigearthnet")[0]
            outputs = client.predict(s1_file=handle_file(str(pair.s1_path)),
                                     reference_file=handle_file(str(pair.s2_path)), api_name="/translate")
        finally:
            server.terminate()
            server.wait(timeout=30)
    tables = [output for output in outputs if isinstance(output, dict) and "headers" in output]
    assert tables and isinstance(tables[0]["data"][0][1], float)  # opt_v1's PSNR against the reference


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------ uploads


def test_model_upload_mirrors_the_staged_folder(loopback_hub, staged_model, capsys):
    report = run_cli(["publish", "model", "me/gac-mini", "--from", "mini", "--branch", "dev", "--private"], capsys)
    repo = loopback_hub.repo("me/gac-mini")
    commit = report["commit"]
    assert report["pin"] == f"me/gac-mini@{commit}" and repo.branches["dev"] == commit and repo.private
    assert repo.received == [files(staged_model)]  # one commit, exactly the staged files, same bytes
    assert repo.commits[commit] == {**files(staged_model), ".gitattributes": GITATTRIBUTES}
    assert repo.commits[repo.branches["main"]] == {".gitattributes": GITATTRIBUTES}  # main untouched

    # Publishing again replaces the files (stale ones are deleted) in a new commit on the branch.
    repo.commits[commit] = {**repo.commits[commit], "stale.json": b"{}"}
    again = run_cli(["publish", "model", "me/gac-mini", "--from", "mini", "--branch", "dev"], capsys)
    assert "stale.json" not in repo.commits[again["commit"]] and repo.branches["dev"] == again["commit"]


def test_pushed_model_loads_back_with_identical_outputs(loopback_hub, real_pair, capsys):
    from gac_pipeline.io import read_s1

    commit = run_cli(["publish", "model", "me/gac-mini", "--from", "mini"], capsys)["commit"]
    fetched = load_preset(f"me/gac-mini@{commit}")  # snapshot_download from the loopback Hub into a fresh cache
    assert fetched.preset == f"me/gac-mini@{commit}"
    sar = read_s1(real_pair.s1_path)
    ours, theirs = load_preset("mini").translate(sar.data, month=6, seed=0), fetched.translate(sar.data, month=6, seed=0)
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
    references = load_for_preset(f"me/gac-mini@{commit}")  # the baselines and control travel with it
    assert references is not None and references.control is not None


def test_space_upload_pins_a_hub_model_and_requests_hardware(loopback_hub, tmp_path, capsys):
    model = run_cli(["publish", "model", "me/gac-mini", "--from", "mini"], capsys)["commit"]
    argv = ["publish", "space", "me/gac-demo", "--model", "me/gac-mini", "--hardware", "t4-small"]
    run_cli([*argv, "--dry-run", str(tmp_path / "staged")], capsys)
    staged = files(tmp_path / "staged")
    assert json.loads(staged["space_config.json"]) == {"preset": f"me/gac-mini@{model},mini"}
    assert SpaceCard.load(tmp_path / "staged" / "README.md").data.models == ["me/gac-mini"]

    report = run_cli(argv, capsys)
    space = loopback_hub.repo("me/gac-demo", "space")
    assert space.sdk == "gradio" and space.hardware == "t4-small" and report["hardware_requested"] == "t4-small"
    assert space.received == [staged] and space.branches["main"] == report["commit"]


def test_unknown_hardware_fails_before_any_upload(loopback_hub, capsys):
    assert cli.main(["publish", "space", "me/x", "--model", "mini", "--hardware", "a-lot"]) == 2
    assert "a-lot" in capsys.readouterr().err and loopback_hub.requests == []
