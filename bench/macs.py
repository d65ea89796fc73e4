"""Multiply-adds per output pixel of each stage and of the one-network control.

``python -m bench.macs`` counts, with ``torch.utils.flop_counter``, what one forward pass of a
preset's model computes on one window of random SAR (``--size``, default 256 px), per stage
(``GACPipeline.forward``) and for the stored UNet control, divided by the window's pixels. A
count, not a timing: it does not depend on the machine, and it says where a scene's time can go
(issue 15) and how much work per pixel each network gets to draw the scene (issue 12).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode


def macs_per_pixel(module: torch.nn.Module, *inputs, pixels: int, **kwargs) -> dict[str, float]:
    """Multiply-adds per pixel of ``module(*inputs)``, in all and per direct child module."""
    with FlopCounterMode(display=False, depth=2) as counter, torch.inference_mode():
        module(*inputs, **kwargs)
    counts = counter.get_flop_counts()
    prefix = type(module).__name__
    totals = {name.removeprefix(prefix + "."): sum(ops.values()) / 2 / pixels
              for name, ops in counts.items() if name.startswith(prefix + ".")}
    return {"total": counter.get_total_flops() / 2 / pixels, **totals}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.macs", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini", help="mini (embedded), hub, a pipeline folder or repo@rev")
    parser.add_argument("--size", type=int, default=256, help="window side in pixels (a multiple of 16)")
    args = parser.parse_args(argv)
    from gac_pipeline.presets import load_preset
    from gac_pipeline.references import load_for_preset

    torch.manual_seed(0)
    sar = torch.randn(1, 2, args.size, args.size) * 3 - 15  # dB-like values; the count does not depend on them
    pixels = args.size * args.size
    pipeline = load_preset(args.preset)
    counts = macs_per_pixel(pipeline, sar, pixels=pixels)
    print(f"multiply-adds per pixel, {args.preset}, one {args.size}-px window:")
    for stage in ("stage1", "stage2", "stage3"):
        print(f"  {stage:8s} {counts.get(stage, 0.0):>10,.0f}")
    print(f"  {'chain':8s} {counts['total']:>10,.0f}")
    references = load_for_preset(args.preset)
    if references is None or references.control is None:
        print("  control  n/a (no UNet control stored with this preset)")
    else:
        print(f"  {'control':8s} {macs_per_pixel(references.control, sar, pixels=pixels)['total']:>10,.0f}")


if __name__ == "__main__":
    main()
