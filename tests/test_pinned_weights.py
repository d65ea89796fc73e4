"""Foundation-model weights fetched at pinned Hub revisions and loaded exactly.

A fake Hugging Face cache (the real on-disk layout: ``models--org--name/snapshots/<commit>/``
and ``refs/main``) holds tiny random-init TerraMind/Prithvi files at two commits, ``main``
pointing at the newer one; everything else is the production code path, offline.
"""

import json
import logging

import numpy as np
import pytest
import torch
from conftest import tiny_configs
from huggingface_hub import constants

from gac_pipeline import hub
from gac_pipeline.configs import PipelineConfig, Stage2Config, TerraMindSpec
from gac_pipeline.pipeline import GACPipeline
from gac_pipeline.stages import terramind_common as tm
from gac_pipeline.stages.base import CheckpointError
from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
from gac_pipeline.stages.stage2_prithvi import Stage2Prithvi, build_prithvi
from gac_pipeline.stages.stage3_grounding import Stage3Grounding

OLD, NEW = "a" * 40, "b" * 40
PRITHVI_REPO, PRITHVI_FILE = "test-org/prithvi-tiny", "prithvi_tiny.pt"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """Returns ``put(repo, filename, commit, state, main=False)`` writing into a fake HF cache."""
    root = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))

    def put(repo: str, filename: str, commit: str, state: dict, *, main: bool = False) -> None:
        folder = root / f"models--{repo.replace('/', '--')}"
        (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        torch.save(state, folder / "snapshots" / commit / filename)
        if main:
            (folder / "refs").mkdir(exist_ok=True)
            (folder / "refs" / "main").write_text(commit)

    return put


def _seeded(build, seed: int):
    torch.manual_seed(seed)
    return build()


def _tiny_encoder(modalities=("S1GRD", "S2L2A")):
    return tm.build_encoder("tiny", modalities=list(modalities), pretrained=False)


@pytest.fixture
def terramind_tiny(hub_cache):
    """TerraMind tiny files at OLD and NEW (main); like the published file, they hold more than
    an encoder needs (both input embeddings and a decoder weight)."""
    file = tm.terramind_weights("tiny")
    states = {}
    for seed, commit in ((1, OLD), (2, NEW)):
        state = dict(_seeded(_tiny_encoder, seed).state_dict())
        state["decoder.0.mlp.fc1.weight"] = torch.zeros(3, 3)
        hub_cache(file.repo, file.filename, commit, state, main=commit == NEW)
        states[commit] = state
    return states


@pytest.fixture
def prithvi_tiny(hub_cache, monkeypatch):
    """A published-format (MAE: ``encoder.``/``decoder.`` keys) Prithvi file for the tiny test config."""
    from terratorch.models.backbones import prithvi_vit

    monkeypatch.setitem(prithvi_vit.pretrained_weights, "prithvi_eo_tiny",
                        {"hf_hub_id": PRITHVI_REPO, "hf_hub_filename": PRITHVI_FILE})
    config = tiny_configs()[1]
    states = {}
    for seed, commit in ((3, OLD), (4, NEW)):
        encoder = _seeded(lambda: build_prithvi(config), seed).state_dict()
        state = {f"encoder.{k}": v for k, v in encoder.items()}
        state["decoder.decoder_pred.weight"] = torch.zeros(4, 4)
        hub_cache(PRITHVI_REPO, PRITHVI_FILE, commit, state, main=commit == NEW)
        states[commit] = encoder
    return states


def _assert_state_equal(module, state, *, skip=()):
    own = module.state_dict()
    for key, value in own.items():
        if key not in skip:
            assert torch.equal(value, state[key]), key


def test_encoder_loads_the_pinned_commit_not_the_branch(terramind_tiny, caplog):
    pinned = tm.build_encoder("tiny", modalities=["S1GRD"], pretrained=True, revision=OLD)
    _assert_state_equal(pinned, terramind_tiny[OLD])
    with caplog.at_level(logging.WARNING, logger="gac_pipeline.hub"):
        following = tm.build_encoder("tiny", modalities=["S1GRD"], pretrained=True)  # main -> NEW
    _assert_state_equal(following, terramind_tiny[NEW])
    assert "is not pinned to a commit" in caplog.text and "@main" in caplog.text


def test_unknown_commit_offline_is_one_clear_line(terramind_tiny):
    with pytest.raises(RuntimeError, match=r"TerraMind_v1_tiny\.pt@c{40}") as info:
        tm.build_encoder("tiny", modalities=["S1GRD"], pretrained=True, revision="c" * 40)
    assert "\n" not in str(info.value)


def test_a_published_file_missing_a_weight_is_refused(hub_cache, terramind_tiny):
    file = tm.terramind_weights("tiny")
    state = dict(terramind_tiny[OLD])
    del state["encoder.0.attn.qkv.weight"]
    hub_cache(file.repo, file.filename, OLD, state)
    with pytest.raises(hub.CheckpointSafetyError, match=r"1 weights missing .*encoder\.0\.attn\.qkv\.weight"):
        tm.build_encoder("tiny", modalities=["S1GRD"], pretrained=True, revision=OLD)
    state["encoder.0.attn.qkv.weight"] = torch.zeros(2, 2)
    hub_cache(file.repo, file.filename, OLD, state)
    with pytest.raises(hub.CheckpointSafetyError, match="1 with the wrong shape"):
        tm.build_encoder("tiny", modalities=["S1GRD"], pretrained=True, revision=OLD)


def test_buffers_a_published_file_lacks_keep_their_computed_values(hub_cache, terramind_tiny):
    """Fixed sin-cos position tables and bias-free LayerNorms' zero biases are buffers, not
    learned: a file saved without them still loads, and the model keeps the computed values."""
    file = tm.terramind_weights("tiny")
    reference = _tiny_encoder(["S1GRD"])
    buffers = {name for name, _ in reference.named_buffers()}
    assert any(name.endswith("pos_emb") for name in buffers) and any(name.endswith(".bias") for name in buffers)
    hub_cache(file.repo, file.filename, OLD, {k: v for k, v in terramind_tiny[OLD].items() if k not in buffers})
    loaded = tm.build_encoder("tiny", modalities=["S1GRD"], pretrained=True, revision=OLD)
    _assert_state_equal(loaded, terramind_tiny[OLD])  # the stored buffers equal the computed ones


@pytest.mark.parametrize("mode", ["regress", "generate"])
def test_pretrained_on_a_custom_size_is_refused_not_silently_random(mode):
    config = tiny_configs(mode)[0]
    config.terramind.pretrained = True
    with pytest.raises(ValueError, match="no pretrained weights; use pretrained=False"):
        Stage1TerraMind.build(config)


def test_generator_loads_both_published_files_exactly():
    def build():
        return tm.build_generator(None, input_modalities=["S1GRD"], timesteps=2, pretrained=False,
                                  small=tm.SMALL_TEST_GENERATOR)

    source, target = _seeded(build, 1), _seeded(build, 2)
    # The published layouts: TerraMind's encoder-decoder keys, and the tokenizer's own keys.
    terramind_state = {k.removeprefix("sampler.model."): v for k, v in source.state_dict().items()
                       if k.startswith("sampler.model.")}
    tokenizer_state = source.tokenizer["tok_sen2l2a@224"].state_dict()
    tm.load_generator_weights(target, terramind_state, tokenizer_state)
    _assert_state_equal(target, source.state_dict())
    s1 = {"S1GRD": torch.randn(1, 2, 32, 32)}
    assert torch.equal(tm.generate(source, s1, seed=5), tm.generate(target, s1, seed=5))
    del tokenizer_state[next(iter(tokenizer_state))]
    with pytest.raises(hub.CheckpointSafetyError, match="S2L2A tokenizer weights: 1 weights missing"):
        tm.load_generator_weights(_seeded(build, 3), terramind_state, tokenizer_state)


def test_prithvi_loads_the_pinned_commit(prithvi_tiny):
    config = tiny_configs()[1]
    config.pretrained, config.revision = True, OLD
    _assert_state_equal(build_prithvi(config), prithvi_tiny[OLD])
    config.revision = None
    _assert_state_equal(build_prithvi(config), prithvi_tiny[NEW])


def test_hub_style_pipeline_round_trip_with_pinned_bases(terramind_tiny, prithvi_tiny, tmp_path):
    """Pretrained bases at pinned commits: only adapters and heads are saved, the bases are
    fetched again at the recorded commits, and outputs match exactly."""
    c1, c2, c3 = tiny_configs()
    c1.terramind = c3.terramind = TerraMindSpec(size="tiny", pretrained=True, revision=OLD)
    c2.pretrained, c2.revision = True, OLD
    torch.manual_seed(0)
    pipeline = GACPipeline(Stage1TerraMind.build(c1), Stage2Prithvi.build(c2), Stage3Grounding.build(c3),
                           PipelineConfig(name="hub-style-test", description="tiny pinned bases, tests only"))
    for name, parameter in pipeline.named_parameters():
        if "lora_B" in name or ".out." in name:
            torch.nn.init.normal_(parameter, std=0.05)
    pipeline.save_pretrained(tmp_path / "saved")

    recorded = json.loads((tmp_path / "saved" / "pipeline_config.json").read_text())
    assert set(recorded["files"]) >= {"stage2/adapter/adapter_model.safetensors", "stage2/head.safetensors",
                                      "stage3/adapter/adapter_model.safetensors", "stage3/head.safetensors"}
    assert not any(name.startswith(("stage2/model", "stage3/model")) for name in recorded["files"])
    assert recorded["base_models"]["stage2"] == [{"repo": PRITHVI_REPO, "filename": PRITHVI_FILE,
                                                  "revision": OLD, "pinned": True}]
    assert [entry["revision"] for entry in recorded["base_models"]["stage3"]] == [OLD]

    loaded = GACPipeline.from_pretrained(tmp_path / "saved")
    s1 = np.random.default_rng(0).normal(-12, 3, (2, 48, 48)).astype(np.float32)
    a, b = pipeline.translate(s1, seed=1), loaded.translate(s1, seed=1)
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not any("not pinned" in note for note in b.notes)

    # Saved from a branch instead: every output says which base is not pinned.
    pipeline.stage2.config.revision = None
    pipeline.save_pretrained(tmp_path / "branch")
    notes = GACPipeline.from_pretrained(tmp_path / "branch").translate(s1, seed=1).notes
    expected = f"stage 2 base {PRITHVI_REPO}/{PRITHVI_FILE}@main is not pinned to a commit: its owners can change"
    assert len(notes) == 1 and notes[0].startswith(expected)


@pytest.mark.parametrize(("key", "value"), [("r", 4), ("lora_alpha", 32), ("target_modules", r".*blocks\.\d+\.mlp"),
                                            ("peft_type", "LOHA")])
def test_an_adapter_config_that_disagrees_with_the_stage_config_is_refused(prithvi_tiny, tmp_path, key, value):
    """adapter_config.json is read on load: LoRA settings other than config.json's (e.g. an alpha
    that would silently rescale every adapter) are refused with one line, through from_pretrained too."""
    c1, c2, c3 = tiny_configs()
    c2.pretrained, c2.revision = True, OLD
    pipeline = GACPipeline(Stage1TerraMind.build(c1), Stage2Prithvi.build(c2), Stage3Grounding.build(c3),
                           PipelineConfig(name="adapter-test", description="tiny pinned base, tests only"))
    folder = pipeline.save_pretrained(tmp_path / "saved")
    Stage2Prithvi.load(folder / "stage2")  # as saved: loads

    adapter_config = folder / "stage2" / "adapter" / "adapter_config.json"
    saved = json.loads(adapter_config.read_text())
    saved[key] = value
    adapter_config.write_text(json.dumps(saved))
    with pytest.raises(CheckpointError) as info:
        Stage2Prithvi.load(folder / "stage2")
    message = str(info.value)
    assert "\n" not in message and f"disagrees with config.json: {key} {value!r} (config.json: " in message

    # Through the pipeline, with the hash updated as an honest re-upload would have it.
    config = json.loads((folder / "pipeline_config.json").read_text())
    config["files"]["stage2/adapter/adapter_config.json"] = hub.sha256(adapter_config)
    (folder / "pipeline_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"disagrees with config.json: {key} "):
        GACPipeline.from_pretrained(folder)


def test_pin_records_the_commits_main_points_to(hub_cache, tmp_path):
    from training.init_presets import write_hub_preset

    files = [tm.terramind_weights("base"), tm.s2l2a_tokenizer_weights(),
             hub.HubFile("ibm-nasa-geospatial/Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt")]
    for file in files:  # pinning only fetches; contents do not matter here
        hub_cache(file.repo, file.filename, NEW, {"w": torch.zeros(1)}, main=True)
    write_hub_preset(tmp_path, pin=True)
    config = json.loads((tmp_path / "pipeline_config.json").read_text())
    entries = [entry for stage in config["base_models"].values() for entry in stage]
    assert len(entries) == 5 and all(e["revision"] == NEW and e["pinned"] for e in entries)
    spec = json.loads((tmp_path / "stage3" / "config.json").read_text())["terramind"]
    assert spec["revision"] == spec["tokenizer_revision"] == NEW
    assert json.loads((tmp_path / "stage2" / "config.json").read_text())["revision"] == NEW
    Stage2Config.load(tmp_path / "stage2" / "config.json")  # still a valid config


def test_the_hub_preset_offline_names_every_file_to_download(tmp_path, monkeypatch):
    from gac_pipeline.presets import PRESETS_DIR, load_preset

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = json.loads((PRESETS_DIR / "hub" / "pipeline_config.json").read_text())
    files = {f"{e['repo']}/{e['filename']}@{e['revision']}" for stage in config["base_models"].values() for e in stage}
    assert {file.split("/")[1] for file in files} == {"TerraMind-1.0-base", "TerraMind-1.0-Tokenizer-S2L2A",
                                                      "Prithvi-EO-2.0-300M"}
    with pytest.raises(RuntimeError) as info:
        load_preset("hub")
    message = str(info.value)
    assert "\n" not in message and all(file in message for file in files)

    # What is fetched comes from the hash-checked stage configs, not from base_models (a record
    # only): a copy with the record in an older format fails the same way.
    import shutil

    old_format = shutil.copytree(PRESETS_DIR / "hub", tmp_path / "hub-old-format")
    config["base_models"] = {"terramind": {"repo": "ibm-esa-geospatial/TerraMind-1.0-base", "revision": "main"}}
    (old_format / "pipeline_config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="GAC-hub weights are not in the local Hugging Face cache"):
        GACPipeline.from_pretrained(old_format)


@pytest.mark.slow  # two 300 M-param registry generators: python -m pytest -m slow
def test_registry_generator_from_pinned_published_files(hub_cache):
    """The registry generator's key layout is exactly the two published files' layouts."""
    source = _seeded(lambda: tm.build_generator("tiny", input_modalities=["S1GRD"], timesteps=2,
                                                pretrained=False), 1)
    model_file, tokenizer_file = tm.terramind_weights("tiny"), tm.s2l2a_tokenizer_weights()
    hub_cache(model_file.repo, model_file.filename, OLD,
              {k.removeprefix("sampler.model."): v for k, v in source.state_dict().items()
               if k.startswith("sampler.model.")})
    hub_cache(tokenizer_file.repo, tokenizer_file.filename, OLD, source.tokenizer["tok_sen2l2a@224"].state_dict())
    loaded = _seeded(lambda: tm.build_generator("tiny", input_modalities=["S1GRD"], timesteps=2, pretrained=True,
                                                revision=OLD, tokenizer_revision=OLD), 2)
    s1 = {"S1GRD": torch.randn(1, 2, 32, 32)}
    assert torch.equal(tm.generate(source, s1, seed=5), tm.generate(loaded, s1, seed=5))


def test_our_checkpoint_from_a_hub_repo_at_a_revision(tmp_path, monkeypatch):
    """``from_pretrained(repo_id, revision=)`` and ``--preset repo@revision`` read the Hub cache
    offline and honour the revision: two commits of one repo hold different weights."""
    from conftest import build_tiny_pipeline

    from gac_pipeline.presets import load_preset

    root = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    folder = root / "models--test-org--gac-tiny"
    for seed, commit in ((1, OLD), (2, NEW)):
        build_tiny_pipeline(seed).save_pretrained(folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(NEW)

    s1 = np.random.default_rng(0).normal(-12, 3, (2, 32, 32)).astype(np.float32)
    old = GACPipeline.from_pretrained("test-org/gac-tiny", revision=OLD).translate(s1).opt_v3
    assert np.array_equal(old, build_tiny_pipeline(1).translate(s1).opt_v3)
    assert np.array_equal(load_preset(f"test-org/gac-tiny@{OLD}").translate(s1).opt_v3, old)
    new = load_preset("test-org/gac-tiny").translate(s1).opt_v3  # main -> NEW
    assert np.array_equal(new, build_tiny_pipeline(2).translate(s1).opt_v3) and not np.array_equal(new, old)
    with pytest.raises(RuntimeError, match=f"test-org/gac-tiny@{'c' * 40}: not in the local Hugging Face cache"):
        GACPipeline.from_pretrained("test-org/gac-tiny", revision="c" * 40)
