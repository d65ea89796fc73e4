"""Train stage 3 (TerraMind on SAR + opt_v2) to ground opt_v2 in the SAR, giving opt_v3.

Usage::

    python -m training.train_stage3 --init-from /tmp/stage2 --opt-v2 /tmp/cv/opt_v2 --out /tmp/stage3 \
        [--config training/configs/mini/stage3.yaml]

Stage 3's role is SAR grounding: pull structure that stage 2 invented back toward what the SAR
supports. Inputs: stored opt_v2 (``--opt-v2``: out-of-fold for every training tile, written by
``train_mini``'s cross-validation, or ``training.precompute_stage1 --through 2``), or stage 2 of
``--init-from`` run on stored opt_v1 (``--opt-v1``). A reBEN folder (or ``--stream``) is streamed
(``training.streaming``): each pair and its stored opt_v2 (one file per pair; ``--opt-v2`` only)
are read per batch and augmented together.

- ``regress`` mode: ``--l1-weight`` x L1 to the real optical + ``--sar-weight`` x SAR-edge term
  (the prediction should agree with the speckle-filtered SAR's edges as much as the real
  optical tile does: not less, and not more, which would be SAR texture painted in) +
  ``--identity-weight`` x L1 to opt_v2 (change only what the SAR supports) + ``--sam-weight`` x
  spectral angle. Every weight trains for a random-init base; LoRA only for a pretrained one.
- ``generate`` mode: LoRA on TerraMind's decoder cross-attention trained with the teacher-forced
  token cross-entropy (``terramind_common.teacher_forced_token_loss``): the true S2L2A tokens given SAR + opt_v2.

Trains on every clear non-test tile; ``--folds K --fold F`` is a cross-validation fold run
(``training.cv``; stage 3's step must not widen the SAR-edge gap of its input there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.configs import Stage3Config
from gac_pipeline.presets import load_preset
from gac_pipeline.stages import terramind_common as tm
from gac_pipeline.stages.stage3_grounding import Stage3Grounding
from training import common, cv, loop, losses, streaming


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop.add_loop_arguments(parser, max_steps=300, lr=1e-3, warmup=0.1)
    parser.add_argument("--init-from", required=True, help="pipeline folder/preset with trained stages 1 and 2")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--opt-v2", type=Path, help="folder with stored opt_v2 (train_mini's cross-validation)")
    inputs.add_argument("--opt-v1", type=Path, help="folder with stored opt_v1, run through --init-from's stage 2")
    parser.add_argument("--lora-rank", type=int, default=None, help="override the config's LoRA rank")
    parser.add_argument("--l1-weight", type=float, default=1.0)
    parser.add_argument("--sar-weight", type=float, default=0.5)
    parser.add_argument("--identity-weight", type=float, default=0.1)
    parser.add_argument("--sam-weight", type=float, default=0.1)
    parser.add_argument("--ssim-weight", type=float, default=0.0, help="weight of a (1 - SSIM) term")
    return loop.parse_with_config(parser, argv, "stage3")


def build_stage3(args: argparse.Namespace, base_config: Stage3Config) -> Stage3Grounding:
    config = Stage3Config.from_dict(args.model_config) if args.model_config else base_config
    lora = config.mode == "generate" or config.terramind.pretrained
    overrides = {"trained": False}
    if args.lora_rank is not None:
        overrides["lora_rank"] = args.lora_rank
    if not lora:
        overrides["lora_rank"] = 0  # random-init base: train it all, adapters would add nothing
    config = Stage3Config.from_dict({**config.to_dict(), **overrides})
    if lora and config.lora_rank < 1:
        raise ValueError(f"stage 3 ({config.mode}, pretrained={config.terramind.pretrained}) trains LoRA adapters: "
                         "set --lora-rank >= 1")
    torch.manual_seed(args.seed)
    stage = Stage3Grounding.build(config)
    if not lora:
        stage.requires_grad_(True)
    return stage


class TokenLoss(nn.Module):
    """Generate mode's training forward: the teacher-forced token loss as a module, so DDP can wrap it."""

    def __init__(self, stage: Stage3Grounding):
        super().__init__()
        self.stage = stage

    def forward(self, s1: torch.Tensor, opt_v2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tm.teacher_forced_token_loss(self.stage.terramind, {"S1GRD": s1, "S2L2A": opt_v2}, target)


def make_loss(args: argparse.Namespace, stage: Stage3Grounding):
    std = stage.config.standardization
    if stage.config.mode == "generate":
        return lambda model, batch: model(batch["s1"], batch["opt_v2"], batch["s2"])

    def loss_fn(model, batch):
        pred, target = model(batch["s1"], batch["opt_v2"]), batch["s2"]
        loss = args.l1_weight * losses.l1(pred, target, std)
        if args.sar_weight:
            loss = loss + args.sar_weight * losses.sar_edge_match_loss(pred, target, batch["s1"])
        if args.identity_weight:
            loss = loss + args.identity_weight * losses.l1(pred, batch["opt_v2"], std)
        if args.sam_weight:
            loss = loss + args.sam_weight * losses.spectral_angle(pred, target)
        if args.ssim_weight:
            loss = loss + args.ssim_weight * losses.ssim_loss(pred, target)
        return loss

    return loss_fn


def with_opt_v2(tiles: common.TileSet, stage2, device) -> common.TileSet:
    """Add stage 2's output on the stored opt_v1 (what stage 3 sees at test time)."""
    stage2.eval().to(device)
    opt_v2 = common.predict_tiles(lambda opt_v1, s1, **kw: stage2(opt_v1, s1_db=s1, **kw), tiles.extras["opt_v1"],
                                  tiles.s1, device=device, month=tiles.month, biome=tiles.biome)
    return tiles.with_extra("opt_v2", opt_v2)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    run = loop.setup_distributed(args.device)
    common.seed_all(args.seed)
    base = load_preset(str(args.init_from))
    if streaming.wanted(args):  # e.g. reBEN: pairs and their stored opt_v2 read from disk per batch
        if args.opt_v2 is None:
            raise SystemExit("streaming stage 3 reads stored opt_v2: write it with training.precompute_stage1 "
                             "--through 2 and pass --opt-v2")
        train, held_out = streaming.open_training_data(args, stored={"opt_v2": args.opt_v2}), None
        inputs = f"stage-2 outputs ({streaming.stored_producer(args.opt_v2, 'opt_v2')})"
    else:  # the bundled tiles: in memory, as GAC-mini was trained
        pool = common.load_pool(args.data, clear_only=not args.all_tiles)
        if args.opt_v2 is not None:
            pool = common.attach(pool, args.opt_v2, "opt_v2")
        elif args.fold is not None:
            raise SystemExit("--fold needs --opt-v2 (out-of-fold): --init-from's stage 2 was trained on the held-out "
                             "tiles")
        else:
            pool = with_opt_v2(common.attach(pool, args.opt_v1, "opt_v1"), base.stage2, run.device)
        train, held_out = cv.split_pool(pool, args.folds, args.fold)
        inputs = "out-of-fold stage-2 outputs"

    stage = build_stage3(args, base.stage3.config)
    stage.to(run.device)
    model = TokenLoss(stage) if stage.config.mode == "generate" else stage
    if run.is_main:
        print(f"stage 3 ({stage.config.mode}): {len(train)} training tiles" +
              (f", fold {args.fold} held out ({len(held_out)})" if held_out else "") +
              f"; trains {stage.trainable_parameter_count() / 1e6:.2f} M parameters")

    def predict(tiles):
        return common.predict_tiles(lambda s1, v2: stage(s1, v2, seed=args.seed), tiles.s1, tiles.extras["opt_v2"],
                                    device=run.device)

    recorder = cv.recorder_for(held_out, predict, args, with_sar=True)
    result = loop.fit(model, loss_fn=make_loss(args, stage), tiles=train, evaluate=recorder, args=args, run=run,
                      desc="stage 3")
    summary = {"steps": result.steps, "train_tiles": len(train), "held_out_tiles": len(held_out or []),
               "wall_s": result.wall_s, "out": args.out}
    if run.is_main:
        if recorder is not None:
            recorder.save(args.work_dir, train.names, args)
        fold = f", fold {args.fold} of {args.folds} held out" if held_out else ""
        text = (f"{stage.config.mode} mode trained on {inputs} of {len(train)} real tiles (train + "
                f"validation splits{fold}) for {result.steps} steps"
                f"{' (identity: no step beat it in cross-validation)' if not result.steps else ''}")
        common.write_pipeline(args, {"3": stage.cpu()}, "3", text)
        print(f"stage 3 {text}\nwrote {args.out} ({result.wall_s:.0f} s)")
    loop.teardown_distributed()
    return summary


if __name__ == "__main__":
    main()
