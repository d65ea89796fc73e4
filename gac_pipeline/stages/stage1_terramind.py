"""Stage 1: TerraMind turns SAR (VV, VH in dB) into 12-band Sentinel-2 L2A, ``opt_v1``.

Two modes:
- ``regress``: TerraMind encoder on S1GRD + a pixel decoder with a full-resolution path from
  the SAR pixels. Deterministic and differentiable, so it can be trained (the embedded preset).
- ``generate``: terratorch's ``terramind_v1_*_generate`` any-to-any generation (discrete token
  sampling, not differentiable), zero-shot with the pretrained Hub weights.
"""

from __future__ import annotations

import torch

from gac_pipeline.configs import Stage1Config
from gac_pipeline.stages import terramind_common as tm
from gac_pipeline.stages.base import TerraMindStage


class Stage1TerraMind(TerraMindStage):
    """S1GRD (dB) -> S2L2A (DN). Components are injected; ``build`` makes them from a config.

    Args:
        config: The stage configuration.
        terramind: A TerraMind encoder (regress) or generator (generate).
        decoder: The pixel decoder (regress mode only).
    """

    config_class = Stage1Config
    input_modalities = ("S1GRD",)

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
