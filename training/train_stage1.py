"""Train stage 1 (TerraMind encoder + pixel decoder, ``regress`` mode) on the real tiles.

Usage::

    python -m training.train_stage1 --data data/bigearthnet --out /tmp/stage1 [--config training/configs/mini/stage1.yaml]

Recipe (the team's first probe of this design on these tiles): L1 in standardized S2 space,
flips/rot90 and 64-px crops, batch 16, AdamW 2e-3 with warm-up and cosine decay, early stopping
on validation PSNR keeping the best weights. The stage starts from the mini architecture
(seeded random init, so every parameter trains) or the YAML's ``stage1`` section.

``--folds K --fold F`` leaves fold F of the training tiles out: ``precompute_stage1`` uses such
models for out-of-fold stage-1 outputs, the inputs stages 2 and 3 train on.

Writes a pipeline folder to ``--out`` (``GACPipeline.save_pretrained``): the trained stage 1
and stages 2/3 from ``--init-from``. The resumable checkpoint and the CSV log go to
``--work-dir`` (default ``<out>_train``): pipeline folders refuse pickled files such as ``.pt``.
"""

from __future__ import annotations

import argparse

import torch

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.configs import Stage1Config
from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
from training import common, loop, losses
from training.init_presets import mini_pipeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop.add_loop_arguments(parser, max_steps=1000, lr=2e-3)
    parser.add_argument("--init-from", default="mini", help="preset name or folder giving stages 2 and 3")
    parser.add_argument("--folds", type=int, default=1, help="split the training tiles into this many folds")
    parser.add_argument("--fold", type=int, default=None, help="leave this fold out of training (0-based)")
    args = loop.parse_with_config(parser, argv, "stage1")
    if (args.fold is None) != (args.folds == 1):
        parser.error("--fold goes with --folds K (K >= 2)")
    return args


def build_stage1(args: argparse.Namespace) -> Stage1TerraMind:
    """A fresh stage 1: the mini architecture (seeded random init) or the YAML's config."""
    torch.manual_seed(args.seed)
    if args.model_config is None:
        stage = mini_pipeline(args.seed).stage1
    else:
        stage = Stage1TerraMind.build(Stage1Config.from_dict(args.model_config))
    if stage.config.mode != "regress":
        raise ValueError("only stage-1 regress mode is trainable (generate mode samples discrete tokens)")
    for parameter in stage.parameters():
        parameter.requires_grad = True  # random-init base: full training, not LoRA
    return stage


def start_at_training_mean(stage: Stage1TerraMind, train: common.TileSet) -> None:
    """Set the zero-initialised output layer's bias so the untrained model predicts the training mean.

    Training then starts from the constant-mean baseline instead of TerraMind's global
    pretraining mean, and learns a residual on it, as the UNet control does.
    """
    mean_dn = train.s2.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    with torch.no_grad():
        stage.decoder.out.bias.copy_(stage.config.standardization.s2(mean_dn).flatten())


def training_tiles(args: argparse.Namespace) -> common.TileSet:
    train = common.load_split(args.data, "train", clear_only=not args.all_tiles)
    if args.fold is None:
        return train
    held_out = set(common.fold_members(len(train), args.folds, args.fold))
    return train.subset([i for i in range(len(train)) if i not in held_out])


def main(argv: list[str] | None = None) -> dict:
    """Train, then write the pipeline folder (rank 0).

    Returns:
        Summary: steps, best_step, val_psnr, val_ssim, baseline_psnr, baseline_ssim,
        train_tiles, val_tiles, wall_s, out.
    """
    args = parse_args(argv)
    run = loop.setup_distributed(args.device)
    common.seed_all(args.seed)
    train = training_tiles(args)
    val = common.load_split(args.data, "validation", clear_only=not args.all_tiles).head(args.max_val_tiles)
    baseline = common.mean_image_baseline(train, val)
    if run.is_main:
        print(f"{len(train)} train tiles, {len(val)} validation tiles; training-mean image on validation: "
              f"PSNR {baseline['psnr']:.2f} dB, SSIM {baseline['ssim']:.3f}")

    stage = build_stage1(args)
    start_at_training_mean(stage, train)
    stage.to(run.device)
    std = stage.config.standardization

    def loss_fn(model, batch):
        return losses.l1(model(batch["s1"]), batch["s2"], std)

    def evaluate():
        return common.score(common.predict_tiles(stage, val.s1, device=run.device), val.s2)

    result = loop.fit(stage, loss_fn=loss_fn, tiles=train, evaluate=evaluate, select=lambda scores, _: scores["psnr"],
                      args=args, run=run, desc="stage 1")
    summary = {"steps": result.steps, "best_step": result.best_step, "val_psnr": result.best_scores["psnr"],
               "val_ssim": result.best_scores["ssim"], "baseline_psnr": baseline["psnr"],
               "baseline_ssim": baseline["ssim"], "train_tiles": len(train), "val_tiles": len(val),
               "wall_s": result.wall_s, "out": args.out}
    if run.is_main:
        fold = f", fold {args.fold} of {args.folds} left out" if args.fold is not None else ""
        text = (f"trained on {len(train)} real {'tiles' if args.all_tiles else 'clear_land tiles'} (train split"
                f"{fold}), weights of step {result.best_step}/{result.steps} (best validation PSNR "
                f"{result.best_scores['psnr']:.2f} dB, SSIM {result.best_scores['ssim']:.3f} on {len(val)} tiles; "
                f"training-mean image {baseline['psnr']:.2f} dB / {baseline['ssim']:.3f})")
        common.write_pipeline(args, {"1": stage.cpu()}, "1", text)
        print(f"stage 1 {text}\nwrote {args.out} ({result.wall_s:.0f} s; checkpoint and log in {args.work_dir})")
    loop.teardown_distributed()
    return summary


if __name__ == "__main__":
    main()
