"""Stage 1: TerraMind turns SAR (VV, VH in dB) into 12-band Sentinel-2 L2A, ``opt_v1``.

Two modes:
- ``regress``: TerraMind encoder on S1GRD + a pixel decoder with a full-resolution path from
  the SAR pixels. Deterministic and differentiable, so it can be trained (the embedded preset).
- ``generate``: terratorch's ``terramind_v1_*_generate`` any-to-any generation (discrete token
  sampling, not differentiable), zero-shot with the pretrained Hub weights.
"""

from __future__ import annotations

import torch
from torch import nn

from gac_pipeline.configs import Stage1Config
from gac_pipeline.stages import terramind_common as tm
from gac_pipeline.stages.base import Stage, add_lora
from gac_pipeline.stages.heads import PixelDecoder


class Stage1TerraMind(Stage):
    """S1GRD (dB) -> S2L2A (DN). Components are injected; ``build`` makes them from a config.

    Args:
        config: The stage configuration.
        terramind: A TerraMind encoder (regress) or generator (generate).
        decoder: The pixel decoder (regress mode only).
    """

    config_class = Stage1Config
    base_name = "terramind"

    def __init__(self, config: Stage1Config, terramind: nn.Module, decoder: PixelDecoder | None = None):
        super().__init__(config)
        if config.mode not in ("regress", "generate"):
            raise ValueError(f"stage 1 mode must be 'regress' or 'generate', got {config.mode!r}")
        if config.mode == "regress" and decoder is None:
            raise ValueError("stage 1 regress mode needs a pixel decoder")
        self.terramind = terramind
        self.decoder = decoder

    @classmethod
    def build(cls, config: Stage1Config) -> Stage1TerraMind:
        spec = config.terramind
        if config.mode == "generate":
            generator = tm.build_generator_from_spec(spec, input_modalities=["S1GRD"], timesteps=config.timesteps)
            stage = cls(config, generator)
        else:
            encoder = tm.build_encoder_from_spec(spec, modalities=["S1GRD"])
            decoder = PixelDecoder(tm.encoder_dim(encoder), pixel_channels=2,
                                   width=config.decoder_width, blocks=config.decoder_blocks)
            stage = cls(config, encoder, decoder)
        if config.lora_rank > 0:
            stage.lora_config = add_lora(stage.terramind, rank=config.lora_rank, alpha=config.lora_alpha,
                                         targets=config.lora_targets)
        return stage

    def _base_is_pretrained(self) -> bool:
        return self.config.terramind.pretrained

    def forward(self, s1_db: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
        """Translate SAR to optical.

        Args:
            s1_db: (B, 2, H, W) VV, VH in dB; H and W multiples of 16 (the pipeline pads).
            seed: Sampling seed (generate mode; regress mode is deterministic).

        Returns:
            (B, 12, H, W) S2L2A digital numbers (reflectance x 10000).
        """
        if self.config.mode == "generate":
            return tm.generate(self.terramind, {"S1GRD": s1_db}, seed=seed, timesteps=self.config.timesteps)
        std = self.config.standardization
        s1 = std.s1(s1_db)
        tokens = tm.encode_last(self.terramind, {"S1GRD": s1})
        return std.s2_to_dn(self.decoder(tokens, s1))
