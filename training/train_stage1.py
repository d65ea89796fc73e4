"""Train stage 1 (TerraMind encoder + pixel decoder, ``regress`` mode): SAR -> opt_v1, fidelity first.

Usage::

    python -m training.train_stage1 --out /tmp/stage1 [--config training/configs/mini/stage1.yaml]
    python -m training.train_stage1 --out /tmp/stage1_fold0 --folds 3 --fold 0   # one cross-validation fold

Stage 1's role is fidelity: the best SAR -> optical estimate. Loss: L1 in standardized S2 space
+ ``--ssim-weight`` x (1 - SSIM) + ``--grad-weight`` x L1 between the Sobel gradients of
prediction and target luminance; aligned flips/rot90, random crops and, with ``--paste-batch`` /
``--paste-water``, paired copy-paste (``common.paste_blobs``); AdamW with warm-up and
cosine decay; weights averaged with ``--ema``. The stage starts from the mini architecture
(seeded random init, every parameter trains) predicting the training-mean image, or from the
YAML's ``stage1`` section.

Trains on every clear non-test tile (train + validation splits); ``--folds K --fold F`` leaves
fold F's scene clusters out and records predictions for them (``training.cv``), which is how
``train_mini`` chooses the step count and gets out-of-fold opt_v1 for stages 2 and 3.

Writes a pipeline folder to ``--out`` (``GACPipeline.save_pretrained``): the trained stage 1
and stages 2/3 from ``--init-from``. The resumable checkpoint, the CSV log and a fold run's
records go to ``--work-dir`` (default ``<out>_train``): pipeline folders refuse pickled files.
"""

from __future__ import annotations

import argparse

import torch

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.configs import Stage1Config
from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
from training import common, cv, loop, losses, streaming
from training.init_presets import mini_pipeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop.add_loop_arguments(parser, max_steps=800, lr=2e-3)
    parser.add_argument("--init-from", default="mini", help="preset name or folder giving stages 2 and 3")
    parser.add_argument("--ssim-weight", type=float, default=0.1)
    parser.add_argument("--grad-weight", type=float, default=0.0, help="weight of an L1 on luminance gradients")
    parser.add_argument("--sam-weight", type=float, default=0.0, help="weight of the spectral angle (as the control's)")
    parser.add_argument("--scene-weight", type=float, default=0.0,
                        help="weight of an L1 with each crop's band means removed (losses.scene_l1)")
    return loop.parse_with_config(parser, argv, "stage1")


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


def start_at_training_mean(stage: Stage1TerraMind, train: common.TileSet | streaming.StreamingPairs) -> None:
    """Set the zero-initialised output layer's bias so the untrained model predicts the training mean.

    Training then starts from the constant-mean baseline instead of TerraMind's global
    pretraining mean, and learns a residual on it, as the UNet control does.
    """
    mean_dn = train.s2_mean().view(1, -1, 1, 1)
    with torch.no_grad():
        stage.decoder.out.bias.copy_(stage.config.standardization.s2(mean_dn).flatten())


def main(argv: list[str] | None = None) -> dict:
    """Train, then write the pipeline folder (rank 0).

    Returns:
        Summary: steps, train_tiles, held_out_tiles, wall_s, out (and, for a fold run, the
        held-out PSNR/SSIM at the last step).
    """
    args = parse_args(argv)
    run = loop.setup_distributed(args.device)
    common.seed_all(args.seed)
    if streaming.wanted(args):  # e.g. reBEN: read from disk per batch
        train, held_out = streaming.open_training_data(args), None
    else:  # the bundled tiles: in memory, as GAC-mini was trained
        pool = common.load_pool(args.data, clear_only=not args.all_tiles)
        train, held_out = cv.split_pool(pool, args.folds, args.fold)
    if run.is_main:
        print(f"stage 1: {len(train)} training tiles" + (f", fold {args.fold} held out ({len(held_out)} tiles)"
                                                       if held_out else ""))

    stage = build_stage1(args)
    start_at_training_mean(stage, train)
    stage.to(run.device)
    std = stage.config.standardization

    def loss_fn(model, batch):
        pred, target = model(batch["s1"]), batch["s2"]
        loss = losses.l1(pred, target, std)
        if args.ssim_weight:
            loss = loss + args.ssim_weight * losses.ssim_loss(pred, target)
        if args.grad_weight:
            loss = loss + args.grad_weight * losses.gradient_l1(pred, target)
        if args.sam_weight:
            loss = loss + args.sam_weight * losses.spectral_angle(pred, target)
        if args.scene_weight:
            loss = loss + args.scene_weight * losses.scene_l1(pred, target, std)
        return loss

    water = common.water_donors(args.data, held_out) if args.paste_water else None
    recorder = cv.recorder_for(held_out, lambda tiles: common.predict_tiles(stage, tiles.s1, device=run.device), args)
    result = loop.fit(stage, loss_fn=loss_fn, tiles=train, evaluate=recorder, args=args, run=run, desc="stage 1",
                      water=water)
    summary = {"steps": result.steps, "train_tiles": len(train), "held_out_tiles": len(held_out or []),
               "wall_s": result.wall_s, "out": args.out, **{f"held_out_{k}": v for k, v in result.scores.items()}}
    if run.is_main:
        if recorder is not None:
            recorder.save(args.work_dir, train.names, args)
        fold = f", fold {args.fold} of {args.folds} held out" if held_out else ""
        text = (f"trained on {len(train)} real {'tiles' if args.all_tiles else 'clear_land tiles'} (train + "
                f"validation splits{fold}) for {result.steps} steps, L1 + SSIM"
                f"{' + gradient' if args.grad_weight else ''}{' + spectral angle' if args.sam_weight else ''}"
                f"{' + scene L1' if args.scene_weight else ''}")
        common.write_pipeline(args, {"1": stage.cpu()}, "1", text)
        print(f"stage 1 {text}\nwrote {args.out} ({result.wall_s:.0f} s; checkpoint and log in {args.work_dir})")
    loop.teardown_distributed()
    return summary


if __name__ == "__main__":
    main()
