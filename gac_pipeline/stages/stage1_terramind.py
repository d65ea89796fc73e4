"""Stage 1: TerraMind turns SAR (VV, VH in dB) into 12-band Sentinel-2 L2A, ``opt_v1``.

Two modes:
- ``regress``: TerraMind encoder on S1GRD + a pixel decoder with a full-resolution path from
  the SAR pixels, and optionally a small UNet on the SAR pixels beside it
  (``unet_branch_width``), whose output is added. Deterministic and differentiable, so it can be
  trained (the embedded preset).
- ``generate``: terratorch's ``terramind_v1_*_generate`` any-to-any generation (discrete token
  sampling, not differentiable), zero-shot with the pretrained Hub weights.
"""

from __future__ import annotations

import torch

from gac_pipeline.configs import Stage1Config
from gac_pipeline.control import ControlConfig, UNetControl
from gac_pipeline.stages import terramind_common as tm
from gac_pipeline.stages.base import TerraMindStage


class Stage1TerraMind(TerraMindStage):
    """S1GRD (dB) -> S2L2A (DN). Components are injected; ``build`` makes them from a config.

    Args:
        config: The stage configuration.
        terramind: A TerraMind encoder (regress) or generator (generate).
        decoder: The pixel decoder (regress mode only).
        unet_branch: The optional UNet beside the decoder (regress mode; ``unet_branch_width``).
    """

    config_class = Stage1Config
    input_modalities = ("S1GRD",)

    def __init__(self, config: Stage1Config, terramind, decoder=None, unet_branch: UNetControl | None = None):
        super().__init__(config, terramind, decoder)
        self.unet_branch = unet_branch

    @classmethod
    def build(cls, config: Stage1Config) -> Stage1TerraMind:
        stage = super().build(config)
        if config.mode == "regress" and config.unet_branch_width > 0:
            # The control's UNet, reading the SAR pixels at full resolution: the control draws more of
            # the scene than the token path (README). Its zero output layer makes the start the decoder's.
            stage.unet_branch = UNetControl(ControlConfig(width=config.unet_branch_width, levels=3))
        return stage

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
        out = self.decoder(tokens, s1)
        if self.unet_branch is not None:
            out = out + self.unet_branch.standardised(s1)
        return std.s2_to_dn(out)
