"""TerraMind building blocks shared by stage 1 (S1 -> S2L2A) and stage 3 (S1 + optical -> S2L2A).

Two families of models are built here:

* generators (``generate`` mode): terratorch's ``TerraMindGeneration``. Inputs are pixel
  ("untokenized") modalities embedded by patch embeddings; the output S2L2A is predicted as
  discrete tokens of the S2L2A tokenizer (a DiVAE: ViT encoder + FSQ codebook + diffusion
  UNet decoder) and decoded back to pixels. With ``input_modalities=["S1GRD", "S2L2A"]`` the
  optical input is the *pixel* modality ``untok_sen2l2a@224``, so SAR and an optical estimate
  jointly condition the generated S2L2A tokens (stage 3 grounding).
* encoders (``regress`` mode): terratorch's ``TerraMindViT`` backbone, whose last-layer tokens
  feed a trainable pixel decoder elsewhere in the pipeline.

Both come either from terratorch's registries (``tiny``/``small``/``base``/``large``, the
published TerraMind-1.0 architectures, pretrained weights from the Hugging Face Hub) or as
small custom models of the same architecture family, random-init, for tests and for the
embedded ``mini`` preset.

Always import this module as ``gac_pipeline.stages.terramind_common``: importing
``gac_pipeline`` first repairs torchvision, which terratorch imports.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from terratorch.models.backbones.terramind.model import terramind_register
from terratorch.models.backbones.terramind.model.generate import init_full_input_modality
from terratorch.models.backbones.terramind.model.modality_info import MODALITY_INFO
from terratorch.models.backbones.terramind.model.tm_utils import LayerNorm
from terratorch.models.backbones.terramind.tokenizer import tokenizer_register
from terratorch.models.backbones.terramind.tokenizer.models import vit_models
from terratorch.models.backbones.terramind.tokenizer.models.unet import unet as unet_models
from terratorch.registry import BACKBONE_REGISTRY, FULL_MODEL_REGISTRY
from torch import Tensor, nn

import gac_pipeline  # noqa: F401  (must precede terratorch: fixes torchvision imports)
from gac_pipeline import hub

__all__ = [
    "PATCH_SIZE",
    "S1GRD_MEAN",
    "S1GRD_STD",
    "S2L2A_MEAN",
    "S2L2A_STD",
    "SMALL_TEST_GENERATOR",
    "SUPPORTED_INPUTS",
    "TERRAMIND_SIZES",
    "build_encoder",
    "build_generator",
    "build_small_s2l2a_tokenizer",
    "decoder_cross_attention_regex",
    "encode_last",
    "encoder_dim",
    "generate",
    "lora_target_regex",
    "seed_everything",
    "teacher_forced_token_loss",
]

TERRAMIND_SIZES = ("tiny", "small", "base", "large")

# Inputs the stages feed TerraMind, by terratorch's user-facing modality keys.
SUPPORTED_INPUTS = ("S1GRD", "S2L2A")

# TerraMind patchifies every image modality with 16 px patches (the S2L2A tokenizer too).
PATCH_SIZE = 16

# Copied (as tuples) so nothing downstream can mutate terratorch's module-level dicts, which
# its `offset=` argument already mutates in place.
S2L2A_MEAN: tuple[float, ...] = tuple(float(v) for v in terramind_register.v1_pretraining_mean["untok_sen2l2a@224"])
S2L2A_STD: tuple[float, ...] = tuple(float(v) for v in terramind_register.v1_pretraining_std["untok_sen2l2a@224"])
S1GRD_MEAN: tuple[float, ...] = tuple(float(v) for v in terramind_register.v1_pretraining_mean["untok_sen1grd@224"])
S1GRD_STD: tuple[float, ...] = tuple(float(v) for v in terramind_register.v1_pretraining_std["untok_sen1grd@224"])

_S2L2A_TOKENS = "tok_sen2l2a@224"
INPUT_CHANNELS = {"S1GRD": 2, "S2L2A": 12}

# Smallest generator that exercises the whole generate path (2.4 M params with S1 input, 2.6 M
# with S1+S2L2A; 1.1 M of them the tokenizer). Untrained: its outputs are noise around the
# training mean.
SMALL_TEST_GENERATOR: dict[str, Any] = {
    "dim": 64,
    "encoder_depth": 2,
    "decoder_depth": 2,
    "num_heads": 2,
    "tokenizer": {
        "enc_dim": 64,
        "enc_depth": 2,
        "enc_heads": 2,
        "model_channels": 32,
        "num_res_blocks": 1,
        "channel_mult": (1, 2),
        "attention_resolutions": (),
    },
}

# Architecture of terramind_v1_tiny except width/depth/heads (terramind_register.py).
_TINY_FAMILY_ARGS: dict[str, Any] = {
    "mlp_ratio": 4,
    "qkv_bias": True,
    "proj_bias": True,
    "mlp_bias": True,
    "num_register_tokens": 0,
    "norm_layer": partial(LayerNorm, eps=1e-6, bias=False),
    "act_layer": nn.GELU,
    "gated_mlp": False,
}


# --------------------------------------------------------------------------- pretrained weights


def terramind_weights(size: str, revision: str | None = None) -> hub.HubFile:
    """The published TerraMind-1.0 file of a registry size (the full encoder-decoder)."""
    info = terramind_register.pretrained_weights[f"terramind_v1_{size}"]
    return hub.HubFile(info["hf_hub_id"], info["hf_hub_filename"], revision)


def s2l2a_tokenizer_weights(revision: str | None = None) -> hub.HubFile:
    """The published S2L2A tokenizer (DiVAE) file that turns generated tokens into pixels."""
    info = tokenizer_register.pretrained_weights["terramind_v1_tokenizer_s2l2a"]
    return hub.HubFile(info["hf_hub_id"], info["hf_hub_filename"], revision)


def load_generator_weights(model: nn.Module, terramind_state: dict, tokenizer_state: dict) -> None:
    """Load a generator from TerraMind's and the S2L2A tokenizer's published state dicts.

    Same key layout terratorch uses (the TerraMind file keys sit under ``sampler.model``), but
    every learned weight must come from a file: terratorch would fill a missing one with random init.
    """
    outside = [name for name in model.state_dict()
               if not name.startswith(("sampler.model.", f"tokenizer.{_S2L2A_TOKENS}."))]
    if outside:
        raise hub.CheckpointSafetyError(f"generator weights {outside[:3]} come from neither published file")
    hub.load_exact(model.sampler.model, terramind_state, "TerraMind weights")
    hub.load_exact(model.tokenizer[_S2L2A_TOKENS], tokenizer_state, "S2L2A tokenizer weights")


def _check_size(size: str) -> None:
    if size not in TERRAMIND_SIZES:
        raise ValueError(f"unknown TerraMind size {size!r}; expected one of {TERRAMIND_SIZES} or None")


def _check_modalities(modalities: list[str]) -> list[str]:
    modalities = list(modalities)
    unknown = [m for m in modalities if m not in SUPPORTED_INPUTS]
    if not modalities or unknown or len(set(modalities)) != len(modalities):
        raise ValueError(f"input modalities must be distinct names from {SUPPORTED_INPUTS}, got {modalities}")
    return modalities


# --------------------------------------------------------------------------- small tokenizer


def _register_preset(module: Any, name: str, factory: Callable[..., nn.Module]) -> str:
    """Expose ``factory`` as ``module.<name>``.

    DiVAE looks its encoder and decoder up by name in terratorch's ``vit_models`` / ``unet``
    modules and offers only large presets; adding a new name (never replacing one) is the only
    way to build a small tokenizer without first building the 200 M-param default decoder.
    """
    existing = getattr(module, name, None)
    if existing is not None and not getattr(existing, "_gac_preset", False):
        raise RuntimeError(f"{module.__name__}.{name} already exists and is not a GAC preset")
    factory._gac_preset = True  # type: ignore[attr-defined]
    setattr(module, name, factory)
    return name


def _vit_encoder_preset(dim: int, depth: int, heads: int) -> str:
    def factory(**kwargs: Any) -> nn.Module:
        return vit_models.ViTEncoder(dim_tokens=dim, depth=depth, num_heads=heads, mlp_ratio=4, qkv_bias=True, **kwargs)

    return _register_preset(vit_models, f"gac_vit_enc_d{dim}_l{depth}_h{heads}", factory)


def _unet_decoder_preset(
    model_channels: int, num_res_blocks: int, channel_mult: tuple[int, ...], attention_resolutions: tuple[int, ...]
) -> str:
    def factory(**kwargs: Any) -> nn.Module:
        return unet_models.PatchedUNetCondCat(
            patch_size=4,  # as terratorch's unet_patched
            model_channels=model_channels,
            num_res_blocks=num_res_blocks,
            attention_resolutions=list(attention_resolutions),
            channel_mult=tuple(channel_mult),
            **kwargs,
        )

    mult = "-".join(str(m) for m in channel_mult)
    attn = "-".join(str(a) for a in attention_resolutions) or "none"
    name = f"gac_unet_patched_c{model_channels}_r{num_res_blocks}_m{mult}_a{attn}"
    return _register_preset(unet_models, name, factory)


def build_small_s2l2a_tokenizer(
    *,
    pretrained: bool = False,
    enc_type: str | None = None,
    enc_dim: int = 64,
    enc_depth: int = 2,
    enc_heads: int = 2,
    model_channels: int = 32,
    num_res_blocks: int = 1,
    channel_mult: tuple[int, ...] = (1, 2),
    attention_resolutions: tuple[int, ...] = (),
    reinit_output_conv: bool = True,
) -> nn.Module:
    """Build a small, random-init S2L2A DiVAE tokenizer with TerraMind's codebook.

    Same family as ``terramind_v1_tokenizer_s2l2a`` (ViT encoder, FSQ "8-8-8-6-5" codebook of
    15360 tokens, patched diffusion UNet decoder predicting the sample), at a fraction of its
    289 M parameters. There are no published weights for it.

    Args:
        pretrained: Must be False (accepted because terratorch calls tokenizer factories with it).
        enc_type: A terratorch ViT encoder preset (e.g. ``"vit_s_enc"``, 25 M params); None builds
            a custom ViT encoder from ``enc_dim``/``enc_depth``/``enc_heads``.
        enc_dim: Custom encoder width.
        enc_depth: Custom encoder depth.
        enc_heads: Custom encoder heads.
        model_channels: Base channels of the diffusion UNet decoder.
        num_res_blocks: Residual blocks per UNet level.
        channel_mult: Channel multiplier per UNet level.
        attention_resolutions: Downsampling factors with self-attention (the middle block always has one).
        reinit_output_conv: The UNet's output conv is zero-initialised (a training choice), which
            makes an untrained decoder ignore its tokens and return the mean image; re-initialising
            it lets tests see the data path (different tokens -> different pixels).

    Returns:
        A terratorch ``DiVAE``.
    """
    if pretrained:
        raise ValueError("the small S2L2A tokenizer has no pretrained weights; build it with pretrained=False")
    encoder = enc_type or _vit_encoder_preset(enc_dim, enc_depth, enc_heads)
    decoder = _unet_decoder_preset(model_channels, num_res_blocks, tuple(channel_mult), tuple(attention_resolutions))
    tokenizer = tokenizer_register.build_vqvae(
        model_type="divae",
        pretrained=False,
        # The settings below are terramind_v1_tokenizer_s2l2a's.
        image_size=256,
        n_channels=12,
        enc_type=encoder,
        dec_type=decoder,
        prediction_type="sample",
        post_mlp=True,
        patch_size=PATCH_SIZE,
        quant_type="fsq",
        codebook_size="8-8-8-6-5",
        latent_dim=5,
        clip_sample=True,
    )
    if reinit_output_conv:
        tokenizer.decoder.out[-1].reset_parameters()
    return tokenizer


# --------------------------------------------------------------------------- generator


def build_generator(
    size: str | None,
    *,
    input_modalities: list[str],
    timesteps: int,
    pretrained: bool,
    revision: str | None = None,
    tokenizer_revision: str | None = None,
    small: dict | None = None,
) -> nn.Module:
    """Build a TerraMind generator that predicts S2L2A from the given pixel inputs.

    Args:
        size: One of ``TERRAMIND_SIZES`` (terratorch's ``terramind_v1_<size>_generate``), or None
            for a small custom model described by ``small``.
        input_modalities: ``["S1GRD"]`` (stage 1) or ``["S1GRD", "S2L2A"]`` (stage 3: SAR and an
            optical image, both as pixels, condition the generated S2L2A tokens).
        timesteps: Diffusion steps of the tokenizer decoder when turning tokens into pixels.
        pretrained: Load TerraMind-1.0 and its S2L2A tokenizer from the Hugging Face Hub (cache).
            Must be False for ``size=None``.
        revision: Commit (pin) or branch of the TerraMind weights; None is ``main``.
        tokenizer_revision: Commit (pin) or branch of the S2L2A tokenizer weights.
        small: For ``size=None``: ``{"dim", "encoder_depth", "decoder_depth", "num_heads",
            "tokenizer": kwargs of build_small_s2l2a_tokenizer}``; see ``SMALL_TEST_GENERATOR``.
            Such a model is random-init and untrained.

    Returns:
        A terratorch ``TerraMindGeneration`` with ``standardize=True`` (takes physical units).

    Raises:
        RuntimeError: Pretrained weights are neither cached nor downloadable.
        CheckpointSafetyError: A published file lacks weights of the architecture.
        ValueError: Invalid size, modalities or small config.
    """
    modalities = _check_modalities(input_modalities)
    if size is not None:
        _check_size(size)
        if small is not None:
            raise ValueError("pass either a registry size or a small config, not both")
        paths = None
        if pretrained:  # fetched by us, at the pinned revision, before the big build
            paths = hub.fetch([terramind_weights(size, revision), s2l2a_tokenizer_weights(tokenizer_revision)],
                              f"TerraMind {size}")
        model = FULL_MODEL_REGISTRY.build(
            f"terratorch_terramind_v1_{size}_generate",
            modalities=list(modalities),
            output_modalities=["S2L2A"],
            standardize=True,
            timesteps=timesteps,
            pretrained=False,
        )
        if paths:
            load_generator_weights(model, *(hub.load_torch_weights(path) for path in paths))
        return model

    if small is None:
        raise ValueError("size=None needs a small config (see SMALL_TEST_GENERATOR)")
    if pretrained:
        raise ValueError("small TerraMind generators have no pretrained weights; use pretrained=False")
    missing = {"dim", "encoder_depth", "decoder_depth", "num_heads"} - set(small)
    if missing:
        raise ValueError(f"small generator config misses {sorted(missing)}")
    tokenizer_kwargs = dict(small.get("tokenizer") or {})
    return terramind_register.build_terrammind_generate(
        variant=None,
        pretrained=False,
        modalities=list(modalities),
        output_modalities=["S2L2A"],
        dim=int(small["dim"]),
        encoder_depth=int(small["encoder_depth"]),
        decoder_depth=int(small["decoder_depth"]),
        num_heads=int(small["num_heads"]),
        **_TINY_FAMILY_ARGS,
        standardize=True,
        timesteps=timesteps,
        # Copies: terratorch keeps references and its offset path mutates them.
        pretraining_mean={k: list(v) for k, v in terramind_register.v1_pretraining_mean.items()},
        pretraining_std={k: list(v) for k, v in terramind_register.v1_pretraining_std.items()},
        tokenizer_dict={_S2L2A_TOKENS: partial(build_small_s2l2a_tokenizer, **tokenizer_kwargs)},
    )


def _check_inputs(model: nn.Module, inputs: Mapping[str, Tensor]) -> tuple[int, int, int]:
    """Validate an input dict against a generator/encoder; return (B, H, W)."""
    if not inputs:
        raise ValueError("no inputs given")
    known = getattr(model, "modalities", SUPPORTED_INPUTS)
    shapes = set()
    for key, value in inputs.items():
        if key not in INPUT_CHANNELS or key not in known:
            raise ValueError(f"input {key!r} is not an input modality of this model ({list(known)})")
        if value.ndim != 4 or value.shape[1] != INPUT_CHANNELS[key]:
            raise ValueError(f"{key} must be (B, {INPUT_CHANNELS[key]}, H, W), got {tuple(value.shape)}")
        shapes.add((value.shape[0], value.shape[2], value.shape[3]))
    if len(shapes) != 1:
        raise ValueError(f"inputs disagree in batch or size: {sorted(shapes)}")
    batch, height, width = shapes.pop()
    if height % PATCH_SIZE or width % PATCH_SIZE:
        raise ValueError(f"H and W must be multiples of {PATCH_SIZE} (pad first), got {height}x{width}")
    return batch, height, width


def seed_everything(seed: int) -> None:
    """Seed Python's ``random`` (TerraMind's sampler draws its seed there), numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generate(model: nn.Module, inputs: dict[str, Tensor], *, seed: int, timesteps: int | None = None) -> Tensor:
    """Sample S2L2A for a batch of tiles.

    Args:
        model: A generator from ``build_generator``.
        inputs: Physical units: ``"S1GRD"`` in dB, (B, 2, H, W) and, for stage-3 models,
            optionally ``"S2L2A"`` DN (reflectance x 10000), (B, 12, H, W). H and W multiples of 16
            and equal (terratorch's token decoder assumes a square token grid): pad first.
        seed: Seeds random/numpy/torch right before sampling; same seed, same output.
        timesteps: Diffusion steps of the tokenizer decoder; None uses the model's default.

    Returns:
        S2L2A DN, (B, 12, H, W), on the model's device, float32.

    Raises:
        ValueError: The model was moved to another dtype than float32: terratorch's diffusion
            decoder makes its noise and timestep embedding in float32 and runs its GroupNorm
            layers in float32, so it cannot run in another dtype.
    """
    _, height, width = _check_inputs(model, inputs)
    side = max(height, width)
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype  # inputs follow the model
    if dtype != torch.float32:
        raise ValueError(f"generate mode runs in float32 only (terratorch's diffusion decoder is float32), "
                         f"not {str(dtype).removeprefix('torch.')}: move the pipeline back with .float()")
    # Fresh dict: TerraMindGeneration.forward reassigns entries of the dict it gets. Its token
    # decoder assumes a square grid: pad right/bottom to a square, crop the same pixels after.
    batch = {key: F.pad(value.to(device=device, dtype=dtype), (0, side - width, 0, side - height),
                        mode="replicate")
             for key, value in inputs.items()}
    was_training = model.training
    model.eval()
    try:
        seed_everything(seed)
        with torch.no_grad():
            out = model(batch, standardize=True, timesteps=timesteps)["S2L2A"]
    finally:
        model.train(was_training)
    return out[..., :height, :width].to(dtype)


def build_generator_from_spec(spec, *, input_modalities: list[str], timesteps: int) -> nn.Module:
    """``build_generator`` from a ``configs.TerraMindSpec``."""
    small = None
    if spec.size is None:
        small = {"dim": spec.dim, "encoder_depth": spec.depth, "decoder_depth": spec.decoder_depth,
                 "num_heads": spec.num_heads, "tokenizer": spec.tokenizer or SMALL_TEST_GENERATOR["tokenizer"]}
    return build_generator(spec.size, input_modalities=input_modalities, timesteps=timesteps,
                           pretrained=spec.pretrained, revision=spec.revision,
                           tokenizer_revision=spec.tokenizer_revision, small=small)


def build_encoder_from_spec(spec, *, modalities: list[str]) -> nn.Module:
    """``build_encoder`` from a ``configs.TerraMindSpec``."""
    if spec.size is not None:
        return build_encoder(spec.size, modalities=modalities, pretrained=spec.pretrained, revision=spec.revision)
    return build_encoder(None, modalities=modalities, pretrained=spec.pretrained, dim=spec.dim, depth=spec.depth,
                         num_heads=spec.num_heads)


# --------------------------------------------------------------------------- encoder


def build_encoder(
    size: str | None,
    *,
    modalities: list[str],
    pretrained: bool,
    revision: str | None = None,
    dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
) -> nn.Module:
    """Build a TerraMind ViT encoder over pixel inputs (for ``regress`` mode).

    Tokens of several modalities are merged with ``merge_method="mean"``: at every patch position
    the modalities' last-layer tokens are averaged, so the output is one (H/16 x W/16) grid of
    width ``dim`` whatever the number of inputs ("concat" would multiply the width and need a
    learned token for a missing modality; "dict"/None return per-modality sequences).

    Args:
        size: One of ``TERRAMIND_SIZES`` (terratorch backbone ``terramind_v1_<size>``) or None for a
            custom small encoder of terramind_v1_tiny's architecture with ``dim``/``depth``/``num_heads``.
        modalities: Input modalities, a subset of ``SUPPORTED_INPUTS``.
        pretrained: Load TerraMind-1.0 weights from the Hugging Face Hub (cache); False for size=None.
        revision: Commit (pin) or branch of the TerraMind weights; None is ``main``.
        dim: Custom encoder width (size=None only).
        depth: Custom encoder depth (size=None only).
        num_heads: Custom encoder heads (size=None only).

    Returns:
        A terratorch ``TerraMindViT`` returning one (B, N, D) token tensor per layer.

    Raises:
        RuntimeError: Pretrained weights are neither cached nor downloadable.
        CheckpointSafetyError: The published file lacks weights of the architecture.
        ValueError: Invalid size/dims combination or modalities.
    """
    modalities = _check_modalities(modalities)
    if size is not None:
        _check_size(size)
        if dim is not None or depth is not None or num_heads is not None:
            raise ValueError(f"terramind_v1_{size} fixes dim/depth/num_heads; pass size=None for a custom encoder")
        paths = hub.fetch([terramind_weights(size, revision)], f"TerraMind {size}") if pretrained else None
        model = BACKBONE_REGISTRY.build(
            f"terratorch_terramind_v1_{size}",
            modalities=list(modalities),
            pretrained=False,
            merge_method="mean",
        )
        if paths:
            hub.load_exact(model, hub.load_torch_weights(paths[0]), "TerraMind weights")
        return model

    if dim is None or depth is None or num_heads is None:
        raise ValueError("a custom encoder (size=None) needs dim, depth and num_heads")
    if pretrained:
        raise ValueError("custom TerraMind encoders have no pretrained weights; use pretrained=False")
    return terramind_register.build_terrammind_vit(
        variant=None,
        pretrained=False,
        modalities=list(modalities),
        merge_method="mean",
        dim=int(dim),
        encoder_depth=int(depth),
        num_heads=int(num_heads),
        **_TINY_FAMILY_ARGS,
    )


def encoder_dim(model: nn.Module) -> int:
    """Width of the tokens ``encode_last`` returns."""
    return int(model.out_channels[-1])


def encode_last(encoder: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """Last-layer tokens of a TerraMind encoder as a feature grid.

    Args:
        encoder: From ``build_encoder`` (``merge_method="mean"``).
        inputs: ALREADY standardized tensors by modality key, (B, C, H, W), H and W multiples of 16.

    Returns:
        (B, D, H/16, W/16).
    """
    batch, height, width = _check_inputs(encoder, inputs)
    if encoder.merge_method != "mean":
        raise ValueError(f"encode_last needs merge_method='mean', the encoder has {encoder.merge_method!r}")
    tokens = encoder(dict(inputs))[-1]  # fresh dict: forward edits the one it gets
    rows, cols = height // PATCH_SIZE, width // PATCH_SIZE
    if tokens.shape[1] != rows * cols:
        raise RuntimeError(f"expected {rows * cols} tokens for {height}x{width}, got {tokens.shape[1]}")
    return tokens.transpose(1, 2).reshape(batch, tokens.shape[2], rows, cols)


# --------------------------------------------------------------------------- LoRA targets


def lora_target_regex() -> str:
    """Attention projections of TerraMind's encoder and decoder blocks (peft ``target_modules``).

    Anchored on ``(encoder|decoder).<block index>``, because patch embeddings are also called
    ``proj`` and tokenizer blocks sit under ``encoder.blocks.<i>``.
    """
    return r".*(encoder|decoder)\.\d+\.(attn|self_attn|cross_attn)\.(qkv|q|kv|proj)"


def decoder_cross_attention_regex() -> str:
    """Cross-attention projections of the generator's decoder: where S2L2A tokens read the inputs."""
    return r".*decoder\.\d+\.cross_attn\.(q|kv|proj)"


# --------------------------------------------------------------------------- training path


def _standardize(model: nn.Module, key: str, value: Tensor, mod_name: str | None = None) -> Tensor:
    name = mod_name or model.mod_name_mapping[key]
    mean = model.pretraining_mean[name].to(value.device, value.dtype)
    std = model.pretraining_std[name].to(value.device, value.dtype)
    return (value - mean) / std


def teacher_forced_token_loss(model: nn.Module, inputs: dict[str, Tensor], target_s2_dn: Tensor) -> Tensor:
    """Differentiable training loss for a generator: cross-entropy of the true S2L2A tokens.

    Mirrors one step of ``TerraMindGeneration.forward`` with its default schedule (one decoding
    step, all target tokens at once): the inputs are standardized and embedded as full pixel
    inputs, every S2L2A token position is a decoder query (mask token + position embedding)
    that sees the inputs only through cross-attention, and the sampler's own forward
    (``sampler.forward_enc_dec_roar_batched``) gives the logits it would sample from. Instead
    of sampling, the logits are scored against the tokens the S2L2A tokenizer assigns to the
    real target (computed without gradient; the tokenizer is not trained here).

    Args:
        model: A generator from ``build_generator``.
        inputs: Conditioning inputs in physical units, as for ``generate``.
        target_s2_dn: Real S2L2A DN, (B, 12, H, W), same size as the inputs.

    Returns:
        Scalar mean cross-entropy over all target tokens of the batch.
    """
    batch, height, width = _check_inputs(model, inputs)
    if tuple(target_s2_dn.shape) != (batch, 12, height, width):
        expected = (batch, 12, height, width)
        raise ValueError(f"target must be (B, 12, H, W) = {expected}, got {tuple(target_s2_dn.shape)}")
    if height != width:
        raise ValueError(f"TerraMind generation needs square tiles, got {height}x{width}: pad to a square")
    if list(model.output_modalities) != [_S2L2A_TOKENS]:
        raise ValueError(f"expected a generator of {_S2L2A_TOKENS}, got {model.output_modalities}")
    device = next(model.parameters()).device
    num_tokens = (height // PATCH_SIZE) * (width // PATCH_SIZE)

    with torch.no_grad():
        target = _standardize(model, "S2L2A", target_s2_dn.to(device, torch.float32), mod_name=_S2L2A_TOKENS)
        target_ids = model.tokenizer[_S2L2A_TOKENS].encode(target, device)[-1].reshape(batch, -1).long()

    mod_dict: dict[str, dict[str, Tensor]] = {}
    for key, value in inputs.items():
        name = model.mod_name_mapping[key]
        value = _standardize(model, key, value.to(device, torch.float32))
        full = {
            "tensor": value,
            "input_mask": torch.zeros(batch, num_tokens, dtype=torch.bool, device=device),
            "target_mask": torch.ones(batch, num_tokens, dtype=torch.bool, device=device),
            "decoder_attention_mask": torch.zeros(batch, num_tokens, dtype=torch.bool, device=device),
        }
        mod_dict[name] = init_full_input_modality(full, MODALITY_INFO, name, device)
    # As init_empty_target_modality, but carrying the true tokens: no position is an input
    # (input_mask True) and every position is a target (target_mask False = to predict).
    mod_dict[_S2L2A_TOKENS] = {
        "tensor": target_ids,
        "input_mask": torch.ones(batch, num_tokens, dtype=torch.bool, device=device),
        "target_mask": torch.zeros(batch, num_tokens, dtype=torch.bool, device=device),
    }

    # With num_select = all tokens the random order is irrelevant: decoder queries attend to
    # each other without a mask, and mod_pos says which position each logit row belongs to.
    logits, positions = model.sampler.forward_enc_dec_roar_batched(mod_dict, _S2L2A_TOKENS, num_tokens, seed=None)
    targets = torch.gather(target_ids, 1, positions)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
