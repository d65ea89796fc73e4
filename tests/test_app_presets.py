"""The app's preset box: typed Hub ids and folders, the bounded cache of loaded presets, the run device."""

import functools
import importlib.util
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants

import gac_pipeline.presets
from app import examples, handlers, ui
from tests.conftest import build_tiny_pipeline

REPO = "test-org/gac-typed"
COMMIT = "c" * 40
SLIDER = next(iter(ui.SLIDER_CHOICES))


def _quiet(*args, **kwargs) -> None:
    """A stand-in for ``gr.Progress``."""


def _run_translate(pair, preset, *, seed=0, reference=False, progress=_quiet, handler=None) -> dict:
    """``ui.run_translate`` (or a wrapped ``handler``) of one bundled pair, as a dict of its outputs."""
    outputs = (handler or ui.run_translate)(str(pair.s1_path), str(pair.s2_path) if reference else None, preset, 0,
                                            pair.biome, seed, ["1", "2", "3"], SLIDER, progress=progress)
    return dict(zip(ui.TRANSLATE_OUTPUTS, outputs, strict=True))


@pytest.fixture
def fresh_caches(monkeypatch):
    """Empty preset caches for one test (the session's loaded presets come back afterwards)."""
    monkeypatch.setattr(handlers, "_loaded", OrderedDict())
    monkeypatch.setattr(handlers, "_failed", OrderedDict())
    examples.clear_cache()
    yield
    examples.clear_cache()


@pytest.fixture
def hub_repo(tmp_path, monkeypatch):
    """``REPO`` in a fake Hugging Face cache (the tests run with HF_HUB_OFFLINE=1): one commit, ``main`` on it."""
    root = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    folder = root / f"models--{REPO.replace('/', '--')}"
    build_tiny_pipeline(2).save_pretrained(folder / "snapshots" / COMMIT)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    return folder


# ----------------------------------------------------------------------------- typed presets


def test_a_typed_hub_id_at_a_commit_loads_with_progress(hub_repo, real_pair, fresh_caches):
    shown = []
    values = _run_translate(real_pair, f"  {REPO}@{COMMIT} ", progress=lambda fraction, desc=None: shown.append(desc))
    assert f"loading {REPO}@{COMMIT} …" in shown  # the progress bar says what is loading (and downloading)
    assert values["opt_v3"] is not None and "tiny-test" in values["summary"]
    assert list(handlers._loaded) == [f"{REPO}@{COMMIT}"]  # stripped, loaded once
    shown.clear()
    examples.clear_cache()
    _run_translate(real_pair, f"{REPO}@{COMMIT}", progress=lambda fraction, desc=None: shown.append(desc))
    assert not any(str(desc).startswith("loading") for desc in shown)  # from the cache: nothing to load


@pytest.mark.parametrize("text", ["mini", " hub ", f"{REPO}@{COMMIT}", REPO, f"{REPO}@v1.0", "org/x@refs/pr/1",
                                  "/some/folder", "./checkpoint", "~/checkpoint"])
def test_well_formed_presets_pass_the_check_stripped(text):
    assert handlers.check_preset(text) == text.strip()


def test_a_hosted_space_refuses_typed_folders_but_keeps_its_choices_and_hub_ids(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACE_ID", "user/gac-demo")
    monkeypatch.setenv("GAC_PRESET", f"{tmp_path},mini")
    assert handlers.check_preset(str(tmp_path)) == str(tmp_path)  # offered by the Space itself
    assert handlers.check_preset(f"{REPO}@{COMMIT}") == f"{REPO}@{COMMIT}"
    for typed in ("/etc", "./checkpoint", "~/checkpoint"):
        with pytest.raises(handlers.AppError, match="cannot be typed on a hosted Space"):
            handlers.check_preset(typed)


@pytest.mark.parametrize(("text", "says"), [
    ("", "choose a preset"), ("   ", "choose a preset"), (None, "choose a preset"),
    (f"{REPO}@", "revision after '@' is empty"), (f"{REPO}@main branch", "revision after '@' is empty or has spaces"),
    ("my model", "is not a preset name"), ("a/b/c@main", "is not a preset name"), ("minii", "is not a preset name"),
    ("user/gac--x", "is not a preset name"), ("user/@abc", "is not a preset name"),
])
def test_a_malformed_preset_is_one_line_and_never_reaches_the_loader(text, says, monkeypatch, fresh_caches):
    def refuse(*args, **kwargs):
        raise AssertionError("a malformed preset must not be loaded")

    monkeypatch.setattr(gac_pipeline.presets, "load_preset", refuse)
    with pytest.raises(handlers.AppError, match=says) as caught:
        handlers.check_preset(text)
    message = str(caught.value)
    assert "\n" not in message and "user/name@commit" in message
    assert handlers.load_pipeline(text) == (None, message)
    assert not handlers._failed and not handlers._loaded  # a typo is not remembered as a failed load


def test_a_malformed_or_failing_preset_is_a_gr_error_and_the_app_keeps_working(real_pair, fresh_caches):
    import gradio as gr

    not_cached = f"preset '{REPO}@{COMMIT}' could not be loaded: .*not in the local Hugging Face cache"
    for preset, says in (("user/gac@", "revision after '@' is empty"), (f"{REPO}@{COMMIT}", not_cached)):
        with pytest.raises(gr.Error, match=says) as caught:
            _run_translate(real_pair, preset)
        assert "\n" not in caught.value.message
    assert _run_translate(real_pair, "mini")["opt_v1"] is not None  # the next request is served


# ----------------------------------------------------------------------------- bounded cache


def test_the_preset_cache_keeps_the_last_few_loaded_and_failed(monkeypatch, fresh_caches):
    calls = []

    def fake_load(preset, **kwargs):
        calls.append(preset)
        if preset.startswith("/bad"):
            raise RuntimeError(f"{preset}: not a checkpoint folder\nsecond line")
        return types.SimpleNamespace(name=preset)

    monkeypatch.setattr(gac_pipeline.presets, "load_preset", fake_load)
    limit = handlers.LOADED_MAX
    for index in range(limit + 2):
        assert handlers.load_pipeline(f"/model/{index}")[0].name == f"/model/{index}"
    assert list(handlers._loaded) == [f"/model/{index}" for index in range(2, limit + 2)]  # the oldest evicted
    handlers.load_pipeline("/model/2")  # a hit: not loaded again, now the most recent
    assert calls.count("/model/2") == 1 and list(handlers._loaded)[-1] == "/model/2"
    handlers.load_pipeline("/model/0")  # evicted earlier: loaded again, evicting the least recently used
    assert calls.count("/model/0") == 2 and "/model/3" not in handlers._loaded and len(handlers._loaded) == limit

    for index in range(handlers.FAILED_MAX + 4):
        pipeline, message = handlers.load_pipeline(f"/bad/{index}")
        assert pipeline is None
        assert message == f"preset '/bad/{index}' could not be loaded: /bad/{index}: not a checkpoint folder"
    assert len(handlers._failed) == handlers.FAILED_MAX and "/bad/0" not in handlers._failed
    last = f"/bad/{handlers.FAILED_MAX + 3}"
    handlers.load_pipeline(last)
    assert calls.count(last) == 1  # a remembered failure answers at once
    monkeypatch.setattr(handlers, "FAILED_RETRY_S", 0.0)
    handlers.load_pipeline(last)
    assert calls.count(last) == 2  # retried once the failure is old enough (the Hub may be back)
    assert handlers.training_gradient_energy.cache_info().maxsize == handlers.LOADED_MAX + handlers.FAILED_MAX


# ----------------------------------------------------------------------------- device


def test_run_device_is_cuda_when_a_gpu_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert handlers.run_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert handlers.run_device() == "cpu"


def test_the_pipeline_moves_to_the_run_device_inside_the_gpu_call(monkeypatch, real_pair, saved_tiny_pipeline):
    """ZeroGPU: the GPU exists only inside the ``spaces.GPU`` call, so the move must happen there."""
    from gac_pipeline.pipeline import GACPipeline

    running = []  # non-empty while the fake spaces.GPU call runs

    def gpu(duration=60):
        def decorate(function):
            @functools.wraps(function)
            def call(*args, **kwargs):
                running.append(duration)
                try:
                    return function(*args, **kwargs)
                finally:
                    running.pop()
            return call
        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    chosen, moves = [], []
    monkeypatch.setattr(handlers, "run_device", lambda: chosen.append(bool(running)) or "cpu")
    move = GACPipeline.to

    def spy(self, *args, **kwargs):
        moves.append((args, bool(running)))
        return move(self, *args, **kwargs)

    monkeypatch.setattr(GACPipeline, "to", spy)
    examples.clear_cache()
    translate_on_gpu = ui.on_gpu()(ui.run_translate)
    assert translate_on_gpu is not ui.run_translate  # wrapped by the fake spaces.GPU
    values = _run_translate(real_pair, str(saved_tiny_pipeline), seed=3, handler=translate_on_gpu)
    assert values["opt_v3"] is not None
    assert chosen == [True] and moves == [(("cpu",), True)]  # chosen and moved inside the decorated call
    examples.clear_cache()


def test_on_zerogpu_the_default_preset_is_loaded_at_start(monkeypatch, saved_tiny_pipeline, fresh_caches):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setenv("GAC_PRESET", str(saved_tiny_pipeline))
    spec = importlib.util.spec_from_file_location("gac_app_zero", Path(__file__).parent.parent / "app.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert list(handlers._loaded) == [str(saved_tiny_pipeline)]
    pipeline = handlers._loaded[str(saved_tiny_pipeline)]
    assert pipeline.placement()[0].type == "cpu"  # on CPU: it moves to the GPU inside each call


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_app_translates_on_cuda(real_pair, fresh_caches):
    values = _run_translate(real_pair, "mini", reference=True)
    pipeline, _ = handlers.load_pipeline("mini")
    assert pipeline.placement()[0].type == "cuda"  # moved for the call and left there on a GPU machine
    run = values["run"]
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        assert isinstance(run.dn[name], np.ndarray) and run.dn[name].dtype == np.float32
        assert np.isfinite(run.dn[name]).all()
    psnr = values["table"].set_index("image").loc["opt_v3", "PSNR (dB)"]
    assert isinstance(psnr, float) and psnr > 10
