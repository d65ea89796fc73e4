"""Pixel decoders shared by the stages: ViT tokens (1/16 resolution) + full-resolution pixels.

A ViT with 16-px patches sees a 128-px tile as 8x8 tokens; decoding from tokens alone gives
blur, so every head also gets a full-resolution convolutional path from the input pixels.

The full-resolution convolutions were most of a scene's time on CPU; GAC-mini's decoders run
their blocks at half resolution (``stride=2``, issue 15).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Pixels per chunk of a ConvNeXt block's MLP at inference on CPU: 2048 x 128 float32 activations
# (1 MB) stay in a core's cache (chunks of 512 and 8192 were slower). 0: the 1x1 convolutions
# on the whole image, as in training (``bench.scene`` compares the two).
MLP_CHUNK = 2048
# Under ``torch.inference_mode`` (how ``GACPipeline.translate`` and ``translate_file`` run) the
# decoders apply their linear fuse and output convolutions in a cheaper order: the same map, equal
# up to float rounding (``tests/test_stages_pipeline.py``). Training and its held-out predictions
# (``no_grad``) keep the order they were trained in, so ``train_mini`` still writes the shipped
# files bit for bit. False: that order at inference too (``bench.scene`` compares the two).
REORDER_AT_INFERENCE = True


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, channel LayerNorm, inverted-bottleneck MLP, residual."""

    def __init__(self, width: int):
        super().__init__()
        self.depthwise = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.norm = nn.GroupNorm(1, width)  # LayerNorm over channels for conv features
        self.expand = nn.Conv2d(width, 4 * width, 1)
        self.project = nn.Conv2d(4 * width, width, 1)
        # Small residual scale keeps a freshly initialised block close to identity.
        self.scale = nn.Parameter(torch.full((1, width, 1, 1), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(self.depthwise(x))
        if torch.is_grad_enabled() or x.device.type != "cpu" or not MLP_CHUNK:
            y = self.project(F.gelu(self.expand(hidden)))
        else:
            y = self._mlp_in_chunks(hidden)
        return torch.addcmul(x, self.scale, y)  # x + scale * y in one pass

    def _mlp_in_chunks(self, hidden: torch.Tensor) -> torch.Tensor:
        """expand -> GELU -> project as matrix products over ``MLP_CHUNK`` pixels at a time.

        The same values as the 1x1 convolutions (``tests/test_stages_pipeline.py``), faster on a
        CPU: a chunk's 4x-wide activations stay in the core's cache instead of going through
        memory (issue 15; ``bench.scene``). Only without gradients, so training computes what it
        always did.
        """
        batch, channels, height, width = hidden.shape
        flat = hidden.reshape(batch, channels, height * width)
        out = torch.empty_like(flat)
        expand_w, expand_b = self.expand.weight.flatten(1), self.expand.bias[:, None]
        project_w, project_b = self.project.weight.flatten(1), self.project.bias[:, None]
        for image, image_out in zip(flat, out, strict=True):
            for start in range(0, height * width, MLP_CHUNK):
                chunk = slice(start, start + MLP_CHUNK)
                activations = F.gelu(torch.addmm(expand_b, expand_w, image[:, chunk]))
                torch.addmm(project_b, project_w, activations, out=image_out[:, chunk])
        return out.reshape(batch, channels, height, width)


class FiLM(nn.Module):
    """Feature-wise affine modulation from a conditioning vector, initialised to identity."""

    def __init__(self, cond_dim: int, width: int):
        super().__init__()
        self.to_scale_shift = nn.Linear(cond_dim, 2 * width)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class PixelDecoder(nn.Module):
    """Fuse a token grid with the input pixels and predict ``out_channels`` per pixel.

    With ``stride`` 2 the ConvNeXt blocks run at half resolution (a quarter of the cost, which is
    most of a window's time on CPU) and a light full-resolution path (one 3x3 convolution on the
    input pixels) joins them just before the output, so pixel-sharp input detail still reaches it.

    Args:
        token_dim: Channels of the token grid (the ViT's embedding size).
        pixel_channels: Channels of the full-resolution input pixels.
        out_channels: Output channels (12 S2L2A bands).
        width: Feature width of the decoder.
        blocks: Number of ConvNeXt blocks.
        cond_dim: Size of a conditioning vector for FiLM (0 disables conditioning).
        stride: Resolution of the blocks: 1 full, 2 half.
        detail_width: Channels of the full-resolution path when ``stride`` is 2.
    """

    def __init__(self, token_dim: int, pixel_channels: int, out_channels: int = 12, *,
                 width: int = 32, blocks: int = 2, cond_dim: int = 0, stride: int = 1, detail_width: int = 16):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"decoder stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.tokens_in = nn.Conv2d(token_dim, width, 1)
        # Tokens are at 1/16: up x4 then x4 (stride 1) or x2 (stride 2), a 3x3 refine after each.
        self.up_factors = (4, 4 // stride)
        self.upsample_refine = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1) for _ in range(2)])
        self.pixels_in = nn.Sequential(
            nn.Conv2d(pixel_channels, width, 3, padding=1, stride=stride), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
        )
        self.fuse = nn.Conv2d(2 * width, width, 1)
        self.blocks = nn.ModuleList([ConvNeXtBlock(width) for _ in range(blocks)])
        self.films = nn.ModuleList([FiLM(cond_dim, width) for _ in range(blocks)]) if cond_dim else None
        self.detail = nn.Conv2d(pixel_channels, detail_width, 3, padding=1) if stride > 1 else None
        self.out = nn.Conv2d(width + (detail_width if stride > 1 else 0), out_channels, 1)
        # Zero-initialised output: an untrained head predicts exactly zero (mean image or
        # identity residual), never noise.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor, pixels: torch.Tensor,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, token_dim, H/16, W/16) tokens and (B, pixel_channels, H, W) pixels -> (B, out_channels, H, W)."""
        x = self.tokens_in(tokens)
        width = x.shape[1]
        for refine, factor in zip(self.upsample_refine, self.up_factors, strict=True):
            x = F.gelu(refine(F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)))
        reorder = torch.is_inference_mode_enabled() and REORDER_AT_INFERENCE
        if reorder:  # the 1x1 fuse on the concatenation, as a sum of its two halves (no copy)
            x = torch.add(F.conv2d(x, self.fuse.weight[:, :width], self.fuse.bias),
                          F.conv2d(self.pixels_in(pixels), self.fuse.weight[:, width:]))
        else:
            x = self.fuse(torch.cat([x, self.pixels_in(pixels)], dim=1))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.films is not None and cond is not None:
                x = self.films[i](x, cond)
        if self.detail is None:
            return self.out(x)
        detail = F.gelu(self.detail(pixels))
        if reorder:
            # The 1x1 output convolution and the bilinear upsampling are both linear, so the
            # output's share of the blocks' features can go first: 12 channels are upsampled
            # instead of 32, and nothing is concatenated at full resolution.
            x = F.interpolate(F.conv2d(x, self.out.weight[:, :width]), scale_factor=self.stride,
                              mode="bilinear", align_corners=False)
            return torch.add(x, F.conv2d(detail, self.out.weight[:, width:], self.out.bias))
        x = F.interpolate(x, scale_factor=self.stride, mode="bilinear", align_corners=False)
        return self.out(torch.cat([x, detail], dim=1))
