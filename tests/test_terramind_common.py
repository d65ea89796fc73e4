"""Tests for gac_pipeline.stages.terramind_common with tiny random-init TerraMind models."""

import os

# Before anything imports huggingface_hub: a pretrained build must fail fast, not retry for ~27 s.
os.environ["HF_HUB_OFFLINE"] = "1"

import copy
import re
import time

import pytest
import torch
from terratorch.models.backbones.terramind.model import terramind_register

from gac_pipeline.stages import terramind_common as tc

TILE = 64


def _s1(batch: int = 2, size: int = TILE, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, size, size, generator=gen) * 4.0 + torch.tensor([-12.0, -19.0])[None, :, None, None]


def _s2(batch: int = 2, size: int = TILE, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 12, size, size, generator=gen) * 4000.0


@pytest.fixture(scope="module")
def stage1_generator():
    return tc.build_generator(
        None, input_modalities=["S1GRD"], timesteps=4, pretrained=False, small=tc.SMALL_TEST_GENERATOR
    )


@pytest.fixture(scope="module")
def stage3_generator():
    return tc.build_generator(
        None, input_modalities=["S1GRD", "S2L2A"], timesteps=4, pretrained=False, small=tc.SMALL_TEST_GENERATOR
    )


@pytest.fixture(scope="module")
def small_encoder():
    return tc.build_encoder(None, modalities=["S1GRD", "S2L2A"], pretrained=False, dim=64, depth=2, num_heads=2)


# ----------------------------------------------------------------------------- constants


def test_pretraining_stats_are_tuple_copies_of_terratorch(stage3_generator):
    snapshot = copy.deepcopy(terramind_register.v1_pretraining_mean)
    assert tc.TERRAMIND_SIZES == ("tiny", "small", "base", "large")
    for values, key, source in [
        (tc.S2L2A_MEAN, "untok_sen2l2a@224", terramind_register.v1_pretraining_mean),
        (tc.S2L2A_STD, "untok_sen2l2a@224", terramind_register.v1_pretraining_std),
        (tc.S1GRD_MEAN, "untok_sen1grd@224", terramind_register.v1_pretraining_mean),
        (tc.S1GRD_STD, "untok_sen1grd@224", terramind_register.v1_pretraining_std),
    ]:
        assert isinstance(values, tuple)
        assert values == tuple(float(v) for v in source[key])
    assert len(tc.S2L2A_MEAN) == 12 and len(tc.S1GRD_MEAN) == 2
    # Building models must leave terratorch's module-level dicts alone.
    tc.build_generator(None, input_modalities=["S1GRD"], timesteps=2, pretrained=False, small=tc.SMALL_TEST_GENERATOR)
    assert terramind_register.v1_pretraining_mean == snapshot


# ----------------------------------------------------------------------------- generation


def test_stage1_generate_shape_and_finite(stage1_generator):
    out = tc.generate(stage1_generator, {"S1GRD": _s1()}, seed=0)
    assert out.shape == (2, 12, TILE, TILE)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert stage1_generator.mod_name_mapping["S1GRD"] == "untok_sen1grd@224"


def test_stage3_generate_with_sar_and_optical(stage3_generator):
    # The optical input is the untokenized pixel modality; S2L2A tokens are the output.
    assert stage3_generator.mod_name_mapping["S2L2A"] == "untok_sen2l2a@224"
    assert stage3_generator.output_modalities == ["tok_sen2l2a@224"]
    s1, s2 = _s1(), _s2()
    s1_before, s2_before = s1.clone(), s2.clone()
    out = tc.generate(stage3_generator, {"S1GRD": s1, "S2L2A": s2}, seed=0, timesteps=2)
    assert out.shape == (2, 12, TILE, TILE)
    assert torch.isfinite(out).all()
    assert torch.equal(s1, s1_before) and torch.equal(s2, s2_before)  # inputs untouched
    # A stage-3 model also runs on SAR alone.
    assert tc.generate(stage3_generator, {"S1GRD": s1[:1]}, seed=0).shape == (1, 12, TILE, TILE)


def test_generate_is_seeded(stage3_generator):
    inputs = {"S1GRD": _s1(), "S2L2A": _s2()}
    stage3_generator.train()
    first = tc.generate(stage3_generator, inputs, seed=7)
    assert stage3_generator.training  # mode restored
    stage3_generator.eval()
    torch.rand(3)  # disturb global RNG state in between: the seed must fully determine the sample
    second = tc.generate(stage3_generator, inputs, seed=7)
    other = tc.generate(stage3_generator, inputs, seed=8)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_generate_pads_non_square_tiles_and_crops_back(stage1_generator):
    s1 = torch.randn(1, 2, 32, 64) * 3 - 15
    out = tc.generate(stage1_generator, {"S1GRD": s1}, seed=0)
    assert out.shape == (1, 12, 32, 64)
    assert torch.isfinite(out).all()


def test_generate_rejects_bad_tiles(stage1_generator):
    with pytest.raises(ValueError, match="multiples of 16"):
        tc.generate(stage1_generator, {"S1GRD": torch.zeros(1, 2, 60, 60)}, seed=0)
    with pytest.raises(ValueError, match="not an input modality"):
        tc.generate(stage1_generator, {"S1GRD": _s1(), "S2L2A": _s2()}, seed=0)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        tc.generate(stage1_generator, {"S1GRD": torch.zeros(1, 3, 32, 32)}, seed=0)


def test_build_argument_validation():
    with pytest.raises(ValueError, match="unknown TerraMind size"):
        tc.build_generator("huge", input_modalities=["S1GRD"], timesteps=2, pretrained=False)
    with pytest.raises(ValueError, match="small config"):
        tc.build_generator(None, input_modalities=["S1GRD"], timesteps=2, pretrained=False)
    with pytest.raises(ValueError, match="input modalities"):
        tc.build_generator(None, input_modalities=["DEM"], timesteps=2, pretrained=False, small=tc.SMALL_TEST_GENERATOR)
    with pytest.raises(ValueError, match="fixes dim"):
        tc.build_encoder("tiny", modalities=["S1GRD"], pretrained=False, dim=64)
    with pytest.raises(ValueError, match="needs dim"):
        tc.build_encoder(None, modalities=["S1GRD"], pretrained=False)


# ----------------------------------------------------------------------------- pretrained offline


@pytest.mark.parametrize("kind", ["generator", "encoder"])
def test_pretrained_offline_raises_clear_error_fast(kind):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="not in the local Hugging Face cache and the Hub is unreachable"):
        if kind == "generator":
            tc.build_generator("tiny", input_modalities=["S1GRD", "S2L2A"], timesteps=2, pretrained=True)
        else:
            tc.build_encoder("tiny", modalities=["S1GRD"], pretrained=True)
    assert time.perf_counter() - start < 5.0


def test_pretrained_download_failure_is_translated(monkeypatch):
    # Online but the Hub fails: the same one-line error, whatever the client library raised.
    from huggingface_hub import errors

    def refuse(*args, **kwargs):
        raise errors.LocalEntryNotFoundError("connection refused")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", refuse)
    with pytest.raises(RuntimeError, match=r"TerraMind tiny weights .*TerraMind_v1_tiny\.pt@main"):
        tc.build_encoder("tiny", modalities=["S1GRD"], pretrained=True)


# ----------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("modalities", [("S1GRD",), ("S1GRD", "S2L2A")])
def test_small_encoder_token_grid(small_encoder, modalities):
    inputs = {"S1GRD": torch.randn(2, 2, 128, 128), "S2L2A": torch.randn(2, 12, 128, 128)}
    inputs = {k: inputs[k] for k in modalities}
    tokens = small_encoder(dict(inputs))[-1]
    assert tokens.shape == (2, 8 * 8, 64)  # merge_method="mean": one token per position
    grid = tc.encode_last(small_encoder, inputs)
    assert grid.shape == (2, tc.encoder_dim(small_encoder), 8, 8) == (2, 64, 8, 8)
    # Grid position (r, c) is token r * 8 + c.
    assert torch.allclose(grid[:, :, 2, 5], tokens[:, 2 * 8 + 5])


def test_registry_tiny_encoder_builds():
    encoder = tc.build_encoder("tiny", modalities=["S1GRD"], pretrained=False)
    assert tc.encoder_dim(encoder) == 192
    assert tc.encode_last(encoder, {"S1GRD": torch.randn(1, 2, 64, 64)}).shape == (1, 192, 4, 4)


# ----------------------------------------------------------------------------- LoRA regexes


def _fullmatches(model, pattern):
    # peft applies a string target_modules with re.fullmatch on module names.
    return {name for name, _ in model.named_modules() if re.fullmatch(pattern, name)}


def test_lora_regexes_on_generator(stage3_generator):
    names = {name for name, _ in stage3_generator.named_modules()}
    expected = set()
    for i in range(tc.SMALL_TEST_GENERATOR["encoder_depth"]):
        expected |= {f"sampler.model.encoder.{i}.attn.{p}" for p in ("qkv", "proj")}
    cross = set()
    for i in range(tc.SMALL_TEST_GENERATOR["decoder_depth"]):
        expected |= {f"sampler.model.decoder.{i}.self_attn.{p}" for p in ("qkv", "proj")}
        cross |= {f"sampler.model.decoder.{i}.cross_attn.{p}" for p in ("q", "kv", "proj")}
    assert expected | cross <= names
    assert _fullmatches(stage3_generator, tc.lora_target_regex()) == expected | cross
    assert _fullmatches(stage3_generator, tc.decoder_cross_attention_regex()) == cross
    # Patch embeddings (and the tokenizer's own ViT blocks) are named `proj` too and must not match.
    patch_embeddings = {n for n in names if n.endswith(".proj") and "encoder_embeddings" in n}
    assert {"sampler.model.encoder_embeddings.untok_sen1grd@224.proj"} <= patch_embeddings
    tokenizer_attn = {n for n in names if n.startswith("tokenizer.") and n.endswith(("qkv", ".proj"))}
    assert tokenizer_attn
    for pattern in (tc.lora_target_regex(), tc.decoder_cross_attention_regex()):
        assert not any(re.fullmatch(pattern, n) for n in patch_embeddings | tokenizer_attn)


def test_lora_regex_on_encoder(small_encoder):
    expected = {f"encoder.{i}.attn.{p}" for i in range(2) for p in ("qkv", "proj")}
    assert _fullmatches(small_encoder, tc.lora_target_regex()) == expected
    assert not _fullmatches(small_encoder, tc.decoder_cross_attention_regex())


# ----------------------------------------------------------------------------- token loss


def test_teacher_forced_token_loss_has_gradients(stage3_generator):
    stage3_generator.zero_grad(set_to_none=True)
    loss = tc.teacher_forced_token_loss(stage3_generator, {"S1GRD": _s1(), "S2L2A": _s2(seed=3)}, _s2())
    assert loss.ndim == 0 and torch.isfinite(loss)
    # Untrained: close to uniform over TerraMind's 15360 S2L2A tokens.
    assert abs(loss.item() - torch.log(torch.tensor(15360.0)).item()) < 1.0
    loss.backward()
    for i in range(tc.SMALL_TEST_GENERATOR["decoder_depth"]):
        attn = stage3_generator.sampler.model.decoder[i].cross_attn
        for layer in (attn.q, attn.kv, attn.proj):
            assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    # Target tokens come from the frozen tokenizer.
    assert all(p.grad is None for p in stage3_generator.tokenizer.parameters())
    stage3_generator.zero_grad(set_to_none=True)


def test_teacher_forced_token_loss_decreases_when_fitting(stage1_generator):
    torch.manual_seed(0)
    inputs, target = {"S1GRD": _s1(batch=1)}, _s2(batch=1)
    params = [p for n, p in stage1_generator.named_parameters() if not n.startswith("tokenizer.")]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    stage1_generator.train()
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = tc.teacher_forced_token_loss(stage1_generator, inputs, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    stage1_generator.eval()
    assert losses[-1] < losses[0] - 0.5, losses


def test_teacher_forced_token_loss_validates_target(stage1_generator):
    with pytest.raises(ValueError, match="target must be"):
        tc.teacher_forced_token_loss(stage1_generator, {"S1GRD": _s1()}, _s2(size=32))


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow  # builds the 300 M-param registry model: python -m pytest -m slow
def test_registry_tiny_generator_random_init():
    model = tc.build_generator("tiny", input_modalities=["S1GRD", "S2L2A"], timesteps=2, pretrained=False)
    out = tc.generate(model, {"S1GRD": _s1(batch=1), "S2L2A": _s2(batch=1)}, seed=0)
    assert out.shape == (1, 12, TILE, TILE) and torch.isfinite(out).all()
    assert len(_fullmatches(model, tc.lora_target_regex())) == 12 * 2 + 4 * 5
