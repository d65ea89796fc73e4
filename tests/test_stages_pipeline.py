"""Stages and the pipeline on tiny random-init models of the real architectures."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import build_tiny_pipeline, tiny_configs, tiny_terramind

from gac_pipeline.configs import PipelineConfig, Stage1Config, Stage3Config
from gac_pipeline.io import read_s1
from gac_pipeline.pipeline import GACPipeline
from gac_pipeline.stages.base import CheckpointError
from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
from gac_pipeline.stages.stage2_prithvi import Stage2Prithvi
from gac_pipeline.stages.stage3_grounding import Stage3Grounding
from gac_pipeline.stages.terramind_common import SMALL_TEST_GENERATOR


def _s1(h=128, w=128, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 2, h, w, generator=generator) * 3 + torch.tensor([-12.0, -19.0]).view(1, 2, 1, 1)


def test_stage1_regress_shape_and_gradient():
    stage = Stage1TerraMind.build(tiny_configs()[0])
    torch.nn.init.normal_(stage.decoder.out.weight, std=0.05)
    s1 = _s1(64, 96).requires_grad_(True)
    out = stage(s1)
    assert out.shape == (1, 12, 64, 96)
    out.mean().backward()  # regress mode is differentiable end to end
    assert s1.grad is not None and torch.isfinite(s1.grad).all()


def test_stage1_unet_branch_starts_at_zero_learns_and_round_trips(tmp_path):
    with_branch = Stage1TerraMind.build(dataclasses.replace(tiny_configs()[0], unet_branch_width=4))
    torch.nn.init.normal_(with_branch.decoder.out.weight, std=0.05)
    plain = Stage1TerraMind.build(tiny_configs()[0])
    assert plain.unet_branch is None and with_branch.unet_branch.config.width == 4
    plain.load_state_dict({k: v for k, v in with_branch.state_dict().items() if not k.startswith("unet_branch.")})
    s1 = _s1(32, 48)
    assert torch.equal(with_branch(s1), plain(s1))  # zero output layer: the start is the decoder alone
    with_branch(s1).mean().backward()
    assert with_branch.unet_branch.out.weight.grad.abs().sum() > 0  # and it trains
    torch.nn.init.normal_(with_branch.unet_branch.out.weight, std=0.05)
    assert not torch.equal(with_branch(s1), plain(s1))
    with_branch.save(tmp_path)
    loaded = Stage1TerraMind.load(tmp_path)
    assert torch.equal(loaded(s1), with_branch(s1))


def test_untrained_regress_head_predicts_the_standardization_mean():
    stage = Stage1TerraMind.build(tiny_configs()[0])  # zero-initialised output layer
    out = stage(_s1(32, 32))
    mean = torch.tensor(stage.config.standardization.s2_mean).view(1, 12, 1, 1)
    assert torch.allclose(out, mean.expand_as(out), atol=1e-3)


def test_stage2_residual_conditioning_and_lora_count():
    _, c2, _ = tiny_configs()
    stage = Stage2Prithvi.build(c2)
    opt_v1 = torch.rand(2, 12, 64, 64) * 3000
    assert torch.equal(stage(opt_v1), opt_v1)  # zero-init residual head: identity until trained
    torch.nn.init.normal_(stage.head.out.weight, std=0.05)
    for film in stage.head.films:
        torch.nn.init.normal_(film.to_scale_shift.weight, std=0.5)
    may = stage(opt_v1, month=torch.tensor([5, 5]), biome=torch.tensor([1, 1]))
    november = stage(opt_v1, month=torch.tensor([11, 11]), biome=torch.tensor([1, 1]))
    assert not torch.allclose(may, november)  # month conditioning reaches the output
    # LoRA on qkv (D -> 3D) and proj (D -> D) of every block: r * (in + out) each.
    d, r, depth = c2.embed_dim, c2.lora_rank, c2.depth
    lora = sum(p.numel() for n, p in stage.named_parameters() if "lora_" in n)
    assert lora == depth * r * ((d + 3 * d) + (d + d))
    frozen_base = [n for n, p in stage.prithvi.named_parameters() if "lora_" not in n and p.requires_grad]
    assert frozen_base == []


def test_stage2_sar_input_reads_the_sar_and_needs_it():
    _, c2, _ = tiny_configs()
    c2.sar_input = True
    stage = Stage2Prithvi.build(c2)
    torch.nn.init.normal_(stage.head.out.weight, std=0.05)
    opt_v1 = torch.rand(1, 12, 32, 32) * 3000
    a, b = stage(opt_v1, s1_db=_s1(32, 32, seed=0)), stage(opt_v1, s1_db=_s1(32, 32, seed=1))
    assert not torch.allclose(a, b)  # the SAR reaches the output
    with pytest.raises(ValueError, match="reads the SAR"):
        stage(opt_v1)
    pipeline = build_tiny_pipeline()
    pipeline.stage2 = stage
    assert pipeline.translate(_s1(32, 32)[0].numpy()).opt_v2.shape == (12, 32, 32)  # the pipeline passes it


def test_unseen_month_and_biome_act_as_unknown_and_say_so():
    _, c2, _ = tiny_configs()
    c2.seen_months, c2.seen_biomes = [0, 6], [0, 4]
    stage = Stage2Prithvi.build(c2)
    torch.nn.init.normal_(stage.head.out.weight, std=0.05)
    for film in stage.head.films:
        torch.nn.init.normal_(film.to_scale_shift.weight, std=0.5)
    opt_v1 = torch.rand(1, 12, 32, 32) * 3000

    def run(month, biome):
        return stage(opt_v1, month=torch.tensor([month]), biome=torch.tensor([biome]))

    unknown = run(0, 0)
    assert torch.equal(run(3, 0), unknown) and torch.equal(run(0, 2), unknown) and torch.equal(run(3, 2), unknown)
    assert not torch.allclose(run(6, 0), unknown) and not torch.allclose(run(0, 4), unknown)
    assert stage.conditioning_notes(3, 2) == ["stage 2: month 3 not seen in training: used unknown",
                                              "stage 2: biome temperate_oceanic not seen in training: used unknown"]
    assert stage.conditioning_notes(6, 4) == [] and stage.conditioning_notes(None, 0) == []

    pipeline = build_tiny_pipeline()
    pipeline.stage2.config.seen_months = [0, 6]
    notes = pipeline.translate(_s1(32, 32)[0].numpy(), month=3, biome="alpine").notes
    assert "stage 2: month 3 not seen in training: used unknown" in notes
    assert not any("month" in n for n in pipeline.translate(_s1(32, 32)[0].numpy(), month=3, stages=("1", "3")).notes)


def test_stage2_8bit_backbone_close_to_full_precision():
    _, c2, _ = tiny_configs()
    torch.manual_seed(0)
    stage = Stage2Prithvi.build(c2)
    torch.nn.init.normal_(stage.head.out.weight, std=0.05)
    opt_v1 = torch.rand(1, 12, 64, 64) * 3000
    full = stage(opt_v1)
    stage.quantize_backbone()
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in stage.prithvi.modules())
    quantized = stage(opt_v1)
    residual = (full - opt_v1).abs().mean()
    assert (quantized - full).abs().mean() < 0.1 * residual


def test_stage3_regress_uses_sar_and_opt_v2():
    stage = Stage3Grounding.build(tiny_configs()[2])
    torch.nn.init.normal_(stage.decoder.out.weight, std=0.05)
    opt_v2 = torch.rand(1, 12, 64, 64) * 3000
    a = stage(_s1(64, 64, seed=0), opt_v2)
    b = stage(_s1(64, 64, seed=1), opt_v2)
    assert a.shape == opt_v2.shape and not torch.allclose(a, b)


@pytest.mark.parametrize("stage_class,config_class", [(Stage1TerraMind, Stage1Config),
                                                      (Stage3Grounding, Stage3Config)])
def test_generate_mode_stages_are_seeded(stage_class, config_class):
    spec = tiny_terramind(tokenizer=SMALL_TEST_GENERATOR["tokenizer"])
    spec.dim, spec.depth, spec.decoder_depth = 64, 1, 1
    stage = stage_class.build(config_class(mode="generate", terramind=spec, timesteps=1, lora_rank=0))
    args = (_s1(32, 32),) if stage_class is Stage1TerraMind else (_s1(32, 32), torch.rand(1, 12, 32, 32) * 3000)
    first, again, other = stage(*args, seed=1), stage(*args, seed=1), stage(*args, seed=2)
    assert first.shape == (1, 12, 32, 32)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_generate_mode_in_another_dtype_is_refused_in_one_line():
    # terratorch's diffusion decoder computes in float32 whatever its weights: say so, not a dtype clash deep inside
    spec = tiny_terramind(tokenizer=SMALL_TEST_GENERATOR["tokenizer"])
    spec.dim, spec.depth, spec.decoder_depth = 64, 1, 1
    stage = Stage1TerraMind.build(Stage1Config(mode="generate", terramind=spec, timesteps=1)).to(torch.float64)
    with pytest.raises(ValueError, match=r"float32 only .* not float64: move the pipeline back with \.float\(\)"):
        stage(_s1(32, 32).double(), seed=1)
    assert stage.float()(_s1(32, 32), seed=1).dtype == torch.float32


def test_pipeline_on_a_real_tile_pads_and_crops(tiny_pipeline, real_pair):
    s1 = read_s1(real_pair.s1_path).data  # 120 x 120: padded to 128 inside, cropped back
    out = tiny_pipeline.translate(s1, month=real_pair.month, biome=real_pair.biome)
    for version in out.versions().values():
        assert version.shape == (12, 120, 120) and np.isfinite(version).all()
    assert not np.array_equal(out.opt_v1, out.opt_v2) and not np.array_equal(out.opt_v2, out.opt_v3)
    assert set(out.timings_s) == {"1", "2", "3"} and out.notes == []


class PerPixelStage1(torch.nn.Module):
    """A 1x1-conv stand-in for stage 1: its output at a pixel depends only on that pixel, so any
    shift introduced by padding, cropping or tiling shows up as a mismatch."""

    def __init__(self):
        super().__init__()
        self.config = Stage1Config(mode="regress")
        self.conv = torch.nn.Conv2d(2, 12, 1)
        torch.nn.init.normal_(self.conv.weight, std=50.0)

    def forward(self, s1, *, seed=0):
        return 1500 + self.conv(s1)


def _per_pixel_pipeline(tiny_pipeline):
    return GACPipeline(PerPixelStage1(), tiny_pipeline.stage2, tiny_pipeline.stage3, tiny_pipeline.config)


@pytest.mark.parametrize("shape", [(120, 120), (37, 90), (128, 128)])
def test_padding_and_cropping_never_shift_pixels(tiny_pipeline, shape):
    pipeline = _per_pixel_pipeline(tiny_pipeline)
    s1 = _s1(*shape)[0].numpy()
    out = pipeline.translate(s1, stages=("1",)).opt_v1
    expected = pipeline.stage1(torch.from_numpy(s1)[None])[0].detach().numpy().clip(min=0)  # DN are clipped at 0
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-3)


def test_tiled_600x400_equals_untiled_for_a_per_pixel_stage(tiny_pipeline):
    pipeline = _per_pixel_pipeline(tiny_pipeline)
    s1 = _s1(400, 600)[0].numpy()
    tiled = pipeline.translate(s1, stages=("1",)).opt_v1
    untiled = pipeline.stage1(torch.from_numpy(s1)[None])[0].detach().numpy().clip(min=0)
    np.testing.assert_allclose(tiled, untiled, rtol=1e-5, atol=1e-2)


def test_skipped_stages_pass_through(tiny_pipeline):
    s1 = _s1(64, 64)[0].numpy()
    out = tiny_pipeline.translate(s1, stages=("1", "3"))
    assert np.array_equal(out.opt_v2, out.opt_v1) and out.ran == {"1": True, "2": False, "3": True}
    assert any("stage 2" in note for note in out.notes)
    with pytest.raises(ValueError, match="stage 1 must run"):
        tiny_pipeline.translate(s1, stages=("2", "3"))
    with pytest.raises(ValueError, match="unknown stage"):
        tiny_pipeline.translate(s1, stages=("1", "4"))


def test_tiled_scene_with_real_stages_is_finite_and_matches_its_first_window(tiny_pipeline):
    """With real (non per-pixel) stages windows disagree in their overlaps; where only one
    window covers the scene the result must equal that window's own run."""
    s1 = _s1(400, 600)[0].numpy()
    out = tiny_pipeline.translate(s1)
    assert out.opt_v3.shape == (12, 400, 600) and np.isfinite(out.opt_v3).all()
    single = tiny_pipeline.translate(s1[:, :128, :128]).opt_v1
    # Rows/cols < 96 are covered by the first window only (stride 96).
    assert np.allclose(out.opt_v1[:, :64, :64], single[:, :64, :64], atol=1e-3)


def test_save_and_load_round_trip(tiny_pipeline, saved_tiny_pipeline):
    loaded = GACPipeline.from_pretrained(saved_tiny_pipeline)
    s1 = _s1(64, 64)[0].numpy()
    a, b = tiny_pipeline.translate(s1, seed=3), loaded.translate(s1, seed=3)
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    recorded = json.loads((saved_tiny_pipeline / "pipeline_config.json").read_text())["files"]
    assert "stage2/model.safetensors" in recorded and len(recorded) == 6


def test_checkpoint_errors(saved_tiny_pipeline, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved_tiny_pipeline, broken)
    (broken / "stage1" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(Exception, match="SHA-256"):
        GACPipeline.from_pretrained(broken)
    pickled = tmp_path / "pickled"
    shutil.copytree(saved_tiny_pipeline, pickled)
    (pickled / "stage1" / "evil.pkl").write_bytes(b"x")
    with pytest.raises(Exception, match="pickled files are refused"):
        GACPipeline.from_pretrained(pickled)
    with pytest.raises(FileNotFoundError):
        GACPipeline.from_pretrained(tmp_path / "does-not-exist")
    # Weights that do not fit the architecture: a different width in config.json.
    wrong = tmp_path / "wrong"
    shutil.copytree(saved_tiny_pipeline, wrong)
    config = json.loads((wrong / "stage1" / "config.json").read_text())
    config["decoder_width"] = 16
    (wrong / "stage1" / "config.json").write_text(json.dumps(config))
    pipeline_config = json.loads((wrong / "pipeline_config.json").read_text())
    from gac_pipeline.hub import sha256

    pipeline_config["files"]["stage1/config.json"] = sha256(wrong / "stage1" / "config.json")
    (wrong / "pipeline_config.json").write_text(json.dumps(pipeline_config))
    with pytest.raises(CheckpointError, match="do not fit|do not match"):
        GACPipeline.from_pretrained(wrong)


def test_label_says_untrained():
    pipeline = build_tiny_pipeline(randomize_heads=False)
    assert "UNTRAINED" in pipeline.label
    pipeline.config = PipelineConfig(name="x", trained=True)
    assert "UNTRAINED" not in pipeline.label


def test_embedded_mini_preset_is_trained_and_says_on_what(real_pair):
    from gac_pipeline.presets import PRESETS, load_preset
    from gac_pipeline.references import References

    pipeline = load_preset("mini")
    assert pipeline.config.trained and "UNTRAINED" not in pipeline.label
    assert "trained from random init on 32 real BigEarthNet clear_land tiles" in pipeline.label
    references = References.load(PRESETS["mini"])
    assert references is not None and references.control is not None and references.control.config.trained
    size = sum(f.stat().st_size for f in PRESETS["mini"].rglob("*") if f.is_file())
    assert size < 30e6  # the bundled-weights budget
    out = pipeline.translate(read_s1(real_pair.s1_path).data)
    assert out.opt_v3.shape == (12, 120, 120) and np.isfinite(out.opt_v3).all()
    assert not np.array_equal(out.opt_v1, out.opt_v2)  # trained stages change the image


def test_hub_preset_offline_fails_with_one_clear_line():
    from gac_pipeline.presets import load_preset

    with pytest.raises(RuntimeError, match="not in the local Hugging Face cache") as error:
        load_preset("hub")
    assert "\n" not in str(error.value)


def test_forward_runs_a_batch_as_a_plain_module_and_translate_wraps_it(tiny_pipeline):
    batch = torch.stack([torch.from_numpy(_s1(64, 64, seed=i)[0].numpy()) for i in range(3)])
    seen = []
    handle = tiny_pipeline.register_forward_hook(lambda module, args, output: seen.append(output["opt_v3"].shape))
    try:
        with torch.no_grad():
            outputs = tiny_pipeline(batch, month=torch.tensor([6, 7, 0]), biome="alpine")
        one = tiny_pipeline.translate(batch[1].numpy(), month=7, biome="alpine")
    finally:
        handle.remove()
    assert set(outputs) == {"opt_v1", "opt_v2", "opt_v3"} and outputs["opt_v3"].shape == (3, 12, 64, 64)
    assert seen[0] == (3, 12, 64, 64) and len(seen) == 2  # hooks fire for forward and inside translate
    np.testing.assert_allclose(one.opt_v3, outputs["opt_v3"][1].clamp(min=0).numpy(), rtol=1e-3)  # batch of 3 vs 1
    assert one.timings_s["1"] > 0 and one.timings_s["3"] > 0  # stage timings come from forward hooks
    with pytest.raises(TypeError, match="translate"):
        tiny_pipeline(batch[0].numpy())


def test_generate_stages_1_and_3_share_one_s2l2a_tokenizer_when_equal():
    spec = tiny_terramind(tokenizer=SMALL_TEST_GENERATOR["tokenizer"])
    spec.dim, spec.depth, spec.decoder_depth = 64, 1, 1
    stage1 = Stage1TerraMind.build(Stage1Config(mode="generate", terramind=spec, timesteps=1))
    stage3 = Stage3Grounding.build(Stage3Config(mode="generate", terramind=spec, timesteps=1, lora_rank=0))
    stage2 = build_tiny_pipeline().stage2
    key = next(iter(stage1.terramind.tokenizer))
    separate = GACPipeline(stage1, stage2, stage3)  # random init: different tokenizers, nothing shared
    assert stage3.terramind.tokenizer[key] is not stage1.terramind.tokenizer[key]
    count = sum(p.numel() for p in separate.parameters())

    stage3.terramind.tokenizer[key].load_state_dict(stage1.terramind.tokenizer[key].state_dict())  # as from one file
    s1 = _s1(32, 32)[0].numpy()
    before = separate.translate(s1, seed=1).opt_v3
    shared = GACPipeline(stage1, stage2, stage3)
    assert stage3.terramind.tokenizer[key] is stage1.terramind.tokenizer[key]
    assert sum(p.numel() for p in shared.parameters()) < count  # parameters() counts a shared module once
    np.testing.assert_array_equal(shared.translate(s1, seed=1).opt_v3, before)


def test_half_resolution_decoder_keeps_full_resolution_detail():
    from gac_pipeline.stages.heads import PixelDecoder

    torch.manual_seed(0)
    decoder = PixelDecoder(token_dim=16, pixel_channels=3, width=8, blocks=2, cond_dim=4, stride=2).eval()
    tokens, pixels, cond = torch.randn(2, 16, 4, 4), torch.randn(2, 3, 64, 64), torch.randn(2, 4)
    assert torch.equal(decoder(tokens, pixels, cond), torch.zeros(2, 12, 64, 64))  # zero-initialised output
    for parameter in decoder.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    with torch.no_grad():
        out = decoder(tokens, pixels, cond)
        nudged = pixels.clone()
        nudged[:, :, 31, 31] += 1.0  # one input pixel
        change = (decoder(tokens, nudged, cond) - out).abs().sum(dim=(0, 1))
    assert out.shape == (2, 12, 64, 64)
    # The full-resolution path moves that pixel more than its neighbour in the same 2x2 cell:
    # detail is not only what the half-resolution blocks upsample.
    assert change[31, 31] > change[31, 30] > 0
    assert decoder.blocks[0].depthwise.weight.shape[0] == 8
    with pytest.raises(ValueError, match="stride"):
        PixelDecoder(16, 3, stride=4)


@pytest.mark.parametrize("chunk", [100, 2048])
def test_convnext_mlp_in_chunks_at_inference_equals_the_training_convolutions(monkeypatch, chunk):
    from gac_pipeline.stages import heads

    torch.manual_seed(0)
    block = heads.ConvNeXtBlock(16)
    for parameter in block.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    x = torch.randn(2, 16, 24, 40)  # 960 pixels: several chunks of 100 and a partial one
    monkeypatch.setattr(heads, "MLP_CHUNK", chunk)
    chunked = []
    monkeypatch.setattr(block, "_mlp_in_chunks", lambda h: chunked.append(h.shape) or heads.ConvNeXtBlock._mlp_in_chunks(block, h))
    with torch.no_grad():
        inference = block(x)
    assert chunked == [(2, 16, 24, 40)]  # the chunked path ran, once, without gradients
    training = block(x)  # with gradients: the 1x1 convolutions
    assert len(chunked) == 1 and training.requires_grad
    torch.testing.assert_close(inference, training.detach(), rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(heads, "MLP_CHUNK", 0)  # 0: the convolutions at inference too
    with torch.no_grad():
        torch.testing.assert_close(block(x), inference, rtol=1e-6, atol=1e-6)
    assert len(chunked) == 1


@pytest.mark.parametrize("stride", [1, 2])
def test_decoder_reordered_at_inference_equals_the_training_order(monkeypatch, stride):
    from gac_pipeline.stages import heads
    from gac_pipeline.stages.heads import PixelDecoder

    torch.manual_seed(0)
    decoder = PixelDecoder(24, 3, width=8, blocks=2, cond_dim=4, stride=stride)
    for parameter in decoder.parameters():
        torch.nn.init.normal_(parameter, std=0.3)  # the output is zero-initialised: make it matter
    tokens, pixels, cond = torch.randn(2, 24, 3, 4), torch.randn(2, 3, 48, 64), torch.randn(2, 4)
    monkeypatch.setattr(heads, "REORDER_AT_INFERENCE", True)  # the default
    upsampled_channels = []
    interpolate = heads.F.interpolate
    monkeypatch.setattr(heads.F, "interpolate",
                        lambda x, **kw: upsampled_channels.append(x.shape[1]) or interpolate(x, **kw))
    with torch.no_grad():  # how training predicts its held-out tiles: the order it was trained in
        trained_order = decoder(tokens, pixels, cond)
    with torch.inference_mode():  # how the pipeline translates
        reordered = decoder(tokens, pixels, cond)
    # With stride 2 the last upsampling takes the 12 output channels instead of the 8 features.
    assert upsampled_channels == ([8, 8, 8] + [8, 8, 12] if stride == 2 else [8, 8] + [8, 8])
    torch.testing.assert_close(reordered, trained_order, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(heads, "REORDER_AT_INFERENCE", False)
    with torch.inference_mode():
        assert torch.equal(decoder(tokens, pixels, cond), trained_order)


def test_stage_configs_without_a_decoder_stride_load_full_resolution_decoders():
    config = Stage1Config.from_dict({"mode": "regress"})  # written before decoder_stride existed
    assert config.decoder_stride == 1 and Stage1TerraMind.build(config).decoder.detail is None
    assert config.unet_branch_width == 0 and Stage1TerraMind.build(config).unet_branch is None  # nor a UNet branch


def test_windows_in_batches_and_side_by_side_give_the_same_scene(tiny_pipeline):
    s1 = _s1(300, 420)[0].numpy()
    threads, batch = torch.get_num_threads(), tiny_pipeline.config.window_batch
    try:
        torch.set_num_threads(1)
        assert tiny_pipeline._window_workers(("1", "2", "3")) == 1
        one_by_one = tiny_pipeline.translate(s1)
        torch.set_num_threads(2)  # two windows side by side, each on one thread
        tiny_pipeline.config.window_batch = 3
        assert tiny_pipeline._window_workers(("1", "2", "3")) == 2
        together = tiny_pipeline.translate(s1)
    finally:
        torch.set_num_threads(threads)
        tiny_pipeline.config.window_batch = batch
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        np.testing.assert_allclose(getattr(together, name), getattr(one_by_one, name), rtol=1e-4, atol=1e-2)
    assert sum(together.timings_s.values()) > 0
