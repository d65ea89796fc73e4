"""Train the one-network control: a plain UNet from SAR straight to the 12 optical bands.

Usage::

    python -m training.train_control --out /tmp/control [--config training/configs/mini/control.yaml]

The question it answers: do three collaborating stages beat one ordinary network trained on
the same tiles? So it gets what the chain gets: the same training split, augmentation
(aligned crops, flips, 90-degree turns), loss family (L1 + SSIM + spectral angle), the shared
training loop with early stopping on validation PSNR, and a step budget equal to the chain's
(``training.train_mini`` passes it). Writes ``config.json`` + ``model.safetensors`` to ``--out``.
"""

from __future__ import annotations

import argparse

import torch

from gac_pipeline.control import ControlConfig, UNetControl
from training import common, loop, losses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop.add_loop_arguments(parser, max_steps=1500, lr=2e-3)
    parser.add_argument("--ssim-weight", type=float, default=0.1)
    parser.add_argument("--sam-weight", type=float, default=0.1)
    return loop.parse_with_config(parser, argv, "control")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    run = loop.setup_distributed(args.device)
    common.seed_all(args.seed)
    train = common.load_split(args.data, "train", clear_only=not args.all_tiles)
    val = common.load_split(args.data, "validation", clear_only=not args.all_tiles).head(args.max_val_tiles)
    torch.manual_seed(args.seed)
    model = UNetControl.build(ControlConfig.from_dict(args.model_config or {}))
    model.start_at_mean(train.s2.mean(dim=(0, 2, 3)))
    model.to(run.device)
    std = model.config.standardization
    parameters = sum(p.numel() for p in model.parameters())
    if run.is_main:
        print(f"{len(train)} train / {len(val)} validation tiles; UNet control: {parameters / 1e6:.2f} M parameters")

    def loss_fn(forward, batch):
        pred, target = forward(batch["s1"]), batch["s2"]
        loss = losses.l1(pred, target, std)
        if args.ssim_weight:
            loss = loss + args.ssim_weight * losses.ssim_loss(pred, target)
        if args.sam_weight:
            loss = loss + args.sam_weight * losses.spectral_angle(pred, target)
        return loss

    def evaluate():
        return common.score(common.predict_tiles(model, val.s1, device=run.device), val.s2)

    result = loop.fit(model, loss_fn=loss_fn, tiles=train, evaluate=evaluate,
                      select=lambda scores, _: scores["psnr"], args=args, run=run, desc="control")
    if run.is_main:
        model.config.trained = True
        model.cpu().save(args.out)
        best = result.best_scores
        print(f"control: weights of step {result.best_step}/{result.steps}, validation PSNR {best['psnr']:.2f} dB / "
              f"SSIM {best['ssim']:.3f}; wrote {args.out} ({result.wall_s:.0f} s)")
    loop.teardown_distributed()
    return {"steps": result.steps, "best_step": result.best_step, "val_psnr": result.best_scores["psnr"],
            "val_ssim": result.best_scores["ssim"], "parameters": parameters, "wall_s": result.wall_s,
            "out": args.out}


if __name__ == "__main__":
    main()
