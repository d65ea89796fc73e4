"""The one-network control: a plain small UNet mapping SAR straight to the 12 S2L2A bands.

It answers the ablation's first question: does the three-stage pipeline beat one ordinary
network trained on the same tiles? It shares the pipeline's standardization and its
"residual on the training mean" start, so only the architecture differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from gac_pipeline.bands import S2L2A_BANDS
from gac_pipeline.configs import _JsonConfig
from gac_pipeline.stages.base import CONFIG_FILE, FULL_WEIGHTS, CheckpointError, _contiguous, _load_strict, _read
from gac_pipeline.standardization import Standardization


@dataclass
class ControlConfig(_JsonConfig):
    """Size of the control UNet; ``width`` doubles at every level below the first."""

    width: int = 24
    levels: int = 3
    standardization: Standardization = field(default_factory=Standardization)
    trained: bool = False


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # Groups divide the channel count for any width (a width-4 test model included).
    groups = math.gcd(8, out_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.GroupNorm(groups, out_channels), nn.GELU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.GroupNorm(groups, out_channels), nn.GELU(),
    )


class UNetControl(nn.Module):
    """SAR dB (B, 2, H, W) -> S2L2A DN (B, 12, H, W); H and W multiples of ``2 ** (levels - 1)``."""

    def __init__(self, config: ControlConfig):
        super().__init__()
        if config.levels < 1 or config.width < 1:
            raise ValueError(f"UNetControl needs levels >= 1 and width >= 1, got {config.levels}, {config.width}")
        self.config = config
        widths = [config.width * 2**i for i in range(config.levels)]
        self.encoders = nn.ModuleList(_conv_block(c_in, c_out) for c_in, c_out in zip([2] + widths[:-1], widths))
        self.decoders = nn.ModuleList(_conv_block(widths[i + 1] + widths[i], widths[i])
                                      for i in reversed(range(config.levels - 1)))
        self.out = nn.Conv2d(widths[0], len(S2L2A_BANDS), 1)
        # Zero weight: an untrained control predicts the constant image its bias encodes.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @classmethod
    def build(cls, config: ControlConfig) -> UNetControl:
        return cls(config)

    @torch.no_grad()
    def start_at_mean(self, mean_dn: torch.Tensor) -> None:
        """Make the untrained output the per-band training mean, so training learns a residual on it."""
        mean = torch.as_tensor(mean_dn, dtype=self.out.bias.dtype, device=self.out.bias.device).view(1, -1, 1, 1)
        self.out.bias.copy_(self.config.standardization.s2(mean).flatten())

    def forward(self, s1_db: torch.Tensor) -> torch.Tensor:
        multiple = 2 ** (self.config.levels - 1)
        height, width = s1_db.shape[-2:]
        if height % multiple or width % multiple:
            raise ValueError(f"UNetControl needs H and W that are multiples of {multiple}, got {height}x{width} "
                             "(pad with gac_pipeline.tiling.pad_to_multiple)")
        std = self.config.standardization
        return std.s2_to_dn(self.standardised(std.s1(s1_db)))

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        """The UNet itself: standardised SAR (B, 2, H, W) -> standardised S2L2A (B, 12, H, W).

        Also stage 1's optional UNet branch (``Stage1Config.unet_branch_width``).
        """
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level:
                x = F.avg_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        for decoder, skip in zip(self.decoders, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = decoder(torch.cat([x, skip], dim=1))
        return self.out(x)

    def save(self, directory: str | Path) -> list[Path]:
        """Write ``config.json`` and ``model.safetensors``; returns the files written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_FILE)
        save_file(_contiguous(self.state_dict()), directory / FULL_WEIGHTS)
        return [directory / CONFIG_FILE, directory / FULL_WEIGHTS]

    @classmethod
    def load(cls, directory: str | Path) -> UNetControl:
        """Build from ``config.json`` and load the weights with strict key and shape checks."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise CheckpointError(f"{directory}: missing {CONFIG_FILE}")
        model = cls.build(ControlConfig.load(directory / CONFIG_FILE))
        _load_strict(model, _read(directory / FULL_WEIGHTS), directory / FULL_WEIGHTS)
        return model.eval()
