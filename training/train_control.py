"""Train the one-network control: a plain UNet from SAR straight to the 12 optical bands.

Usage::

    python -m training.train_control --out /tmp/control [--config training/configs/mini/control.yaml]

The question it answers: do three collaborating stages beat one ordinary network trained on
the same tiles? So it gets what the chain gets: the same tiles (every clear non-test tile),
augmentation (aligned crops, flips, 90-degree turns, stage 1's ``--paste-*`` options), the loss
terms the stages use (L1, SSIM, spectral angle, ``--grad-weight``, ``--fft-weight``,
``--sharpness-weight``), the shared training loop, the same cross-validation protocol
(``--folds K --fold F`` fold runs, ``training.cv``) and a step budget equal to the chain's
(``training.train_mini`` passes it). Writes ``config.json`` + ``model.safetensors`` to ``--out``.
"""

from __future__ import annotations

import argparse

import torch

from gac_pipeline.control import ControlConfig, UNetControl
from training import common, cv, loop, losses, streaming


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop.add_loop_arguments(parser, max_steps=1500, lr=2e-3)
    parser.add_argument("--ssim-weight", type=float, default=0.1)
    parser.add_argument("--sam-weight", type=float, default=0.1)
    parser.add_argument("--grad-weight", type=float, default=0.0, help="weight of an L1 on luminance gradients")
    parser.add_argument("--fft-weight", type=float, default=0.0, help="weight of the Fourier-amplitude L1")
    parser.add_argument("--sharpness-weight", type=float, default=0.0,
                        help="weight of the gradient-energy match (|ln| of the sharpness ratio)")
    parser.add_argument("--structure-weight", type=float, default=0.0,
                        help="weight of 1 - Pearson r of luminance against the real tile (as stage 2's)")
    return loop.parse_with_config(parser, argv, "control")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    run = loop.setup_distributed(args.device)
    common.seed_all(args.seed)
    if streaming.wanted(args):  # e.g. reBEN: read from disk per batch
        train, held_out = streaming.open_training_data(args), None
    else:  # the bundled tiles: in memory, as GAC-mini was trained
        pool = common.load_pool(args.data, clear_only=not args.all_tiles)
        train, held_out = cv.split_pool(pool, args.folds, args.fold)
    torch.manual_seed(args.seed)
    model = UNetControl.build(ControlConfig.from_dict(args.model_config or {}))
    model.start_at_mean(train.s2_mean())
    model.to(run.device)
    std = model.config.standardization
    parameters = sum(p.numel() for p in model.parameters())
    if run.is_main:
        print(f"control (UNet, {parameters / 1e6:.2f} M parameters): {len(train)} training tiles"
              + (f", fold {args.fold} held out ({len(held_out)})" if held_out else ""))

    def loss_fn(forward, batch):
        pred, target = forward(batch["s1"]), batch["s2"]
        loss = losses.l1(pred, target, std)
        for weight, term in ((args.ssim_weight, lambda: losses.ssim_loss(pred, target)),
                             (args.sam_weight, lambda: losses.spectral_angle(pred, target)),
                             (args.grad_weight, lambda: losses.gradient_l1(pred, target)),
                             (args.fft_weight, lambda: losses.fourier_amplitude_l1(pred, target, std)),
                             (args.sharpness_weight, lambda: losses.gradient_energy_match(pred, target)),
                             (args.structure_weight, lambda: losses.structure_loss(pred, target))):
            if weight:
                loss = loss + weight * term()
        return loss

    water = common.water_donors(args.data, held_out) if args.paste_water else None
    recorder = cv.recorder_for(held_out, lambda tiles: common.predict_tiles(model, tiles.s1, device=run.device), args)
    result = loop.fit(model, loss_fn=loss_fn, tiles=train, evaluate=recorder, args=args, run=run, desc="control",
                      water=water)
    if run.is_main:
        if recorder is not None:
            recorder.save(args.work_dir, train.names, args)
        model.config.trained = True
        model.cpu().save(args.out)
        print(f"control: {result.steps} steps on {len(train)} tiles; wrote {args.out} ({result.wall_s:.0f} s)")
    loop.teardown_distributed()
    return {"steps": result.steps, "train_tiles": len(train), "held_out_tiles": len(held_out or []),
            "parameters": parameters, "wall_s": result.wall_s, "out": args.out}


if __name__ == "__main__":
    main()
