"""Stage 3: TerraMind conditioned on the SAR *and* ``opt_v2`` grounds it to ``opt_v3``.

- ``regress``: a multimodal TerraMind encoder sees S1GRD and opt_v2 (as S2L2A pixels); a pixel
  decoder with a full-resolution path from both predicts a residual added to opt_v2. LoRA on
  the encoder's attention when the encoder is pretrained.
- ``generate``: terratorch generation with ``modalities=["S1GRD", "S2L2A"]`` (opt_v2 enters as
  the untokenized S2L2A modality) producing S2L2A tokens; LoRA on the decoder's
  cross-attention, trainable with the teacher-forced token loss.
"""

from __future__ import annotations

import torch

from gac_pipeline.configs import Stage3Config
from gac_pipeline.stages import terramind_common as tm
from gac_pipeline.stages.base import TerraMindStage


class Stage3Grounding(TerraMindStage):
    """(S1GRD dB, opt_v2 DN) -> opt_v3 DN.

    Args:
        config: The stage configuration.
        terramind: A two-modality TerraMind encoder (regress) or generator (generate).
        decoder: The residual pixel decoder (regress mode only).
    """

    config_class = Stage3Config
    input_modalities = ("S1GRD", "S2L2A")

    def forward(self, s1_db: torch.Tensor, opt_v2: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
        """Ground opt_v2 in the SAR.

        Args:
            s1_db: (B, 2, H, W) VV, VH in dB; H, W multiples of 16.
            opt_v2: (B, 12, H, W) stage-2 output in S2L2A DN.
            seed: Sampling seed (generate mode).

        Returns:
            (B, 12, H, W) opt_v3 in S2L2A DN.
        """
        if self.config.mode == "generate":
            return tm.generate(self.terramind, {"S1GRD": s1_db, "S2L2A": opt_v2}, seed=seed,
                               timesteps=self.config.timesteps)
        std = self.config.standardization
        s1, s2 = std.s1(s1_db), std.s2(opt_v2)
        tokens = tm.encode_last(self.terramind, {"S1GRD": s1, "S2L2A": s2})
        residual = self.decoder(tokens, torch.cat([s1, s2], dim=1))
        return opt_v2 + std.s2_residual_to_dn(residual)
