"""Stage 2: a Prithvi-EO-2.0 refiner turns ``opt_v1`` into ``opt_v2``.

Prithvi sees the six HLS bands of opt_v1 (B02, B03, B04, B8A, B11, B12, with Prithvi's own
statistics); LoRA adapts its attention; a ConvNeXt head with a full-resolution path from all 12
bands of opt_v1 (and, with ``config.sar_input``, from the SAR's VV and VH: where edges sit is in
the SAR, not in the blurred opt_v1) predicts a residual for all 12 bands. Month and biome enter through FiLM
(learned embeddings; index 0 means "unknown", so both are optional at call time). Values the
embeddings never saw in training (``config.seen_months``/``seen_biomes``) are mapped to "unknown",
which training reaches through conditioning dropout, so an untrained embedding row never acts.
The backbone can run in 8-bit through bitsandbytes to save memory.
"""

from __future__ import annotations

import torch
from torch import nn

from gac_pipeline import hub
from gac_pipeline.configs import Stage2Config
from gac_pipeline.data import BIOMES
from gac_pipeline.stages.base import Stage, add_lora
from gac_pipeline.stages.heads import PixelDecoder

NUM_MONTHS = 13  # 0 = unknown, 1..12


class MonthBiomeEmbedding(nn.Module):
    """Sum of a month and a biome embedding: the conditioning vector for FiLM."""

    def __init__(self, dim: int):
        super().__init__()
        self.month = nn.Embedding(NUM_MONTHS, dim)
        self.biome = nn.Embedding(len(BIOMES), dim)

    def forward(self, month: torch.Tensor, biome: torch.Tensor) -> torch.Tensor:
        return self.month(month) + self.biome(biome)


def prithvi_weights(config: Stage2Config) -> hub.HubFile:
    """The published Prithvi file of ``config.backbone`` at ``config.revision``."""
    from terratorch.models.backbones.prithvi_vit import pretrained_weights

    if config.backbone not in pretrained_weights:
        raise ValueError(f"no published Prithvi weights for {config.backbone!r}; set pretrained=false")
    info = pretrained_weights[config.backbone]
    return hub.HubFile(info["hf_hub_id"], info["hf_hub_filename"], config.revision)


def build_prithvi(config: Stage2Config) -> nn.Module:
    """The Prithvi ViT encoder from terratorch's backbone registry, pretrained weights fetched by us.

    terratorch would download ``main`` only and fill missing weights silently; here the file is
    fetched at the pinned revision, mapped with terratorch's own encoder filter and loaded exactly.
    """
    from terratorch.models.backbones.prithvi_vit import checkpoint_filter_fn_vit
    from terratorch.registry import BACKBONE_REGISTRY

    paths = hub.fetch([prithvi_weights(config)], f"Prithvi {config.backbone}") if config.pretrained else None
    overrides = {k: v for k, v in (("embed_dim", config.embed_dim), ("depth", config.depth),
                                   ("num_heads", config.num_heads)) if v is not None}
    model = BACKBONE_REGISTRY.build(f"terratorch_{config.backbone}", pretrained=False, num_frames=1, **overrides)
    if paths:
        # Our six HLS bands are Prithvi's pretraining bands, in its order: no patch-embed remapping.
        state = checkpoint_filter_fn_vit(hub.load_torch_weights(paths[0]), model, model.model_bands,
                                         model.model_bands)
        hub.load_exact(model, state, f"Prithvi {config.backbone} weights")
    return model


def quantize_linears_8bit(module: nn.Module) -> None:
    """Replace every frozen ``nn.Linear`` in ``module`` by a bitsandbytes int8 layer, in place.

    LoRA's own layers stay in full precision (they are the trainable part).
    """
    try:
        import bitsandbytes as bnb
    except ImportError as error:  # a dev extra: the runtime requirements (a Space) leave it out
        raise RuntimeError("--load-in-8bit needs bitsandbytes: pip install -r requirements-dev.txt "
                           "-c constraints.txt") from error

    for name, child in list(module.named_children()):
        if name.startswith("lora_"):
            continue
        if isinstance(child, nn.Linear):
            layer = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                        has_fp16_weights=False, threshold=6.0)
            layer.weight = bnb.nn.Int8Params(child.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.data.clone(), requires_grad=False)
            setattr(module, name, layer.to(child.weight.device))
        else:
            quantize_linears_8bit(child)


class Stage2Prithvi(Stage):
    """opt_v1 (DN) + optional month/biome -> opt_v2 (DN).

    Args:
        config: The stage configuration.
        prithvi: A Prithvi ViT encoder taking (B, 6, H, W).
        head: The ConvNeXt residual head (FiLM-conditioned).
        conditioning: Month/biome embedding producing the FiLM vector.
    """

    config_class = Stage2Config
    base_name = "prithvi"

    def __init__(self, config: Stage2Config, prithvi: nn.Module, head: PixelDecoder,
                 conditioning: MonthBiomeEmbedding):
        super().__init__(config)
        self.prithvi = prithvi
        self.head = head
        self.conditioning = conditioning

    @classmethod
    def build(cls, config: Stage2Config) -> Stage2Prithvi:
        prithvi = build_prithvi(config)
        head = PixelDecoder(prithvi.embed_dim, pixel_channels=14 if config.sar_input else 12, width=config.head_width,
                            blocks=config.head_blocks, cond_dim=config.cond_dim, stride=config.head_stride)
        stage = cls(config, prithvi, head, MonthBiomeEmbedding(config.cond_dim))
        if config.lora_rank > 0:
            stage.lora_config = add_lora(prithvi, rank=config.lora_rank, alpha=config.lora_alpha,
                                         targets=config.lora_targets, dropout=config.lora_dropout)
        return stage

    @classmethod
    def base_weights(cls, config: Stage2Config) -> list[hub.HubFile]:
        return [prithvi_weights(config)] if config.pretrained else []

    @classmethod
    def load(cls, directory) -> Stage2Prithvi:
        stage = super().load(directory)
        if stage.config.load_in_8bit:
            stage.quantize_backbone()
        return stage

    def quantize_backbone(self) -> None:
        """Run the Prithvi backbone in int8 (bitsandbytes); weights are loaded in full precision first."""
        quantize_linears_8bit(self.prithvi)
        self.quantized = True

    def save(self, directory):
        if getattr(self, "quantized", False):
            raise RuntimeError("save stage 2 before quantizing it to 8-bit (weights are stored in full precision)")
        return super().save(directory)

    def conditioning_notes(self, month: int | None, biome: int | None) -> list[str]:
        """Why a month or biome given at inference is replaced by "unknown" (empty when none is)."""
        notes = []
        for kind, value, seen in (("month", month, self.config.seen_months),
                                  ("biome", biome, self.config.seen_biomes)):
            if value and seen is not None and value not in seen:
                shown = BIOMES[value] if kind == "biome" and 0 <= value < len(BIOMES) else value
                notes.append(f"stage 2: {kind} {shown} not seen in training: used unknown")
        return notes

    @staticmethod
    def _seen_or_unknown(values: torch.Tensor, seen: list[int] | None) -> torch.Tensor:
        if seen is None:
            return values
        known = torch.isin(values, torch.tensor(seen, dtype=values.dtype, device=values.device))
        return torch.where(known, values, torch.zeros_like(values))

    def forward(self, opt_v1: torch.Tensor, *, s1_db: torch.Tensor | None = None,
                month: torch.Tensor | None = None, biome: torch.Tensor | None = None) -> torch.Tensor:
        """Refine opt_v1.

        Args:
            opt_v1: (B, 12, H, W) stage-1 output in S2L2A DN; H, W multiples of 16.
            s1_db: (B, 2, H, W) the SAR (VV, VH in dB) on the same grid; read only with
                ``config.sar_input``, which needs it.
            month: (B,) long, 1..12, or 0/None for unknown.
            biome: (B,) long index into ``data.BIOMES``, or 0/None for unknown.

        Returns:
            (B, 12, H, W) opt_v2 in S2L2A DN.
        """
        std = self.config.standardization
        batch, _, height, width = opt_v1.shape
        unknown = torch.zeros(batch, dtype=torch.long, device=opt_v1.device)
        month = self._seen_or_unknown(unknown if month is None else month, self.config.seen_months)
        biome = self._seen_or_unknown(unknown if biome is None else biome, self.config.seen_biomes)
        cond = self.conditioning(month, biome)
        tokens = self.prithvi(std.hls(opt_v1))[-1]  # last layer: (B, 1 + N, D) with a CLS token
        grid = tokens[:, 1:].transpose(1, 2).reshape(batch, -1, height // 16, width // 16)
        pixels = std.s2(opt_v1)
        if self.config.sar_input:
            if s1_db is None:
                raise ValueError("this stage 2 reads the SAR (sar_input): pass s1_db")
            pixels = torch.cat([pixels, std.s1(s1_db)], dim=1)
        residual = self.head(grid, pixels, cond)
        return opt_v1 + std.s2_residual_to_dn(residual)
