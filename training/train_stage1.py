"""Train stage 1 (TerraMind encoder + pixel decoder, ``regress`` mode) on the real tiles.

Usage::

    python -m training.train_stage1 --data data/bigearthnet --out /tmp/mini_stage1 [--max-steps 1000]

Recipe (DESIGN.md, the probe that reached 26.1 dB on test): L1 in standardized S2 space,
flips/rot90 and 64-px crops, batch 16, AdamW 2e-3 with a one-cycle schedule, early stopping
on validation PSNR keeping the best weights. The stage starts from the mini architecture
(random init, so every parameter trains); ``--config`` may give another stage-1 config.

Writes a full pipeline folder to ``--out`` (``GACPipeline.save_pretrained``): the trained
stage 1 and stages 2/3 unchanged from ``--init-from``. The resumable checkpoint and the CSV
log go to ``--work-dir`` (default ``<out>_train``), outside ``--out``, because pipeline
folders refuse pickled files such as ``.pt``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
import yaml

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.configs import PipelineConfig, Stage1Config
from gac_pipeline.data import DEFAULT_DATA_DIR
from gac_pipeline.pipeline import GACPipeline
from gac_pipeline.presets import load_preset
from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
from training import common
from training.init_presets import mini_pipeline

PCT_START = 0.3  # share of the one-cycle schedule spent raising the learning rate
LOG_FIELDS = ["step", "train_loss", "val_psnr", "val_ssim", "lr", "elapsed_s"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; a ``--config`` YAML may set their defaults (the command line wins).

    The YAML may hold a ``stage1`` mapping (``Stage1Config`` fields, e.g. ``terramind: {dim: 128,
    depth: 6}``) and any option below by its underscore name (``batch_size: 16``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="dataset folder with index.csv")
    parser.add_argument("--out", type=Path, required=True, help="pipeline folder to write")
    parser.add_argument("--work-dir", type=Path, default=None, help="checkpoint + log (default <out>_train)")
    parser.add_argument("--config", type=Path, default=None, help="YAML: stage1 config and option defaults")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--crop", type=int, default=64, help="training crop size (multiple of 16)")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--patience", type=int, default=6,
                        help="stop after this many evaluations past the learning-rate peak without a better "
                             "validation PSNR (0: never)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from <work-dir>/checkpoint.pt")
    parser.add_argument("--init-from", default="mini", help="preset name or folder giving stages 2 and 3")
    parser.add_argument("--all-tiles", action="store_true", help="also use tiles not marked clear_land")
    parser.add_argument("--max-val-tiles", type=int, default=None, help="validate on the first N tiles (smoke runs)")
    args = parser.parse_args(argv)
    args.stage1_config = None
    if args.config is not None:
        settings = yaml.safe_load(args.config.read_text()) or {}
        args.stage1_config = settings.pop("stage1", None)
        unknown = sorted(set(settings) - set(vars(args)))
        if unknown:
            parser.error(f"{args.config}: unknown keys {unknown}")
        # Second parse: YAML values become defaults, so explicit flags still override them.
        parser.set_defaults(**settings)
        stage1_config = args.stage1_config
        args = parser.parse_args(argv)
        args.stage1_config = stage1_config
    if args.crop % 16:
        parser.error(f"--crop must be a multiple of 16 (TerraMind patches), got {args.crop}")
    if args.work_dir is None:
        args.work_dir = args.out.parent / f"{args.out.name}_train"
    return args


def build_stage1(args: argparse.Namespace) -> Stage1TerraMind:
    """A fresh stage 1: the mini architecture (seeded random init) or the YAML's config."""
    if args.stage1_config is None:
        stage = mini_pipeline(args.seed).stage1
    else:
        torch.manual_seed(args.seed)
        stage = Stage1TerraMind.build(Stage1Config.from_dict(args.stage1_config))
    if stage.config.mode != "regress":
        raise ValueError("only stage-1 regress mode is trainable (generate mode samples discrete tokens)")
    for parameter in stage.parameters():
        parameter.requires_grad = True  # random-init base: full training, not LoRA
    return stage


def start_at_training_mean(stage: Stage1TerraMind, train: common.TileSet) -> None:
    """Set the zero-initialised output layer's bias so the untrained model predicts the training mean.

    Training then starts from the constant-mean baseline (~24 dB) instead of TerraMind's global
    pretraining mean, and learns a residual on it, as in the calibration UNet (DESIGN.md).
    """
    std = stage.config.standardization
    mean_dn = train.s2.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    with torch.no_grad():
        stage.decoder.out.bias.copy_(std.s2(mean_dn).flatten())


def evaluate(stage: Stage1TerraMind, val: common.TileSet) -> dict[str, float]:
    """Validation PSNR/SSIM on full tiles (padded to 128, cropped back to 120)."""
    stage.eval()
    scores = common.score(common.predict_tiles(stage, val.s1), val.s2)
    stage.train()
    return scores


def make_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace):
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=max(args.max_steps, 1),
                                               pct_start=PCT_START)


def main(argv: list[str] | None = None) -> dict:
    """Train, then write the pipeline folder.

    Returns:
        Summary: steps, best_step, val_psnr, val_ssim, baseline_psnr, baseline_ssim,
        train_tiles, val_tiles, wall_s, out.
    """
    args = parse_args(argv)
    generator = common.seed_all(args.seed)
    clear_only = not args.all_tiles
    train = common.load_split(args.data, "train", clear_only=clear_only)
    val = common.load_split(args.data, "validation", clear_only=clear_only).head(args.max_val_tiles)
    baseline = common.mean_image_baseline(train, val)
    print(f"{len(train)} train tiles, {len(val)} validation tiles; "
          f"training-mean image on validation: PSNR {baseline['psnr']:.2f} dB, SSIM {baseline['ssim']:.3f}")

    stage = build_stage1(args)
    stage.train()
    std = stage.config.standardization
    start_at_training_mean(stage, train)
    optimizer = torch.optim.AdamW(stage.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = make_scheduler(optimizer, args)
    print(f"stage 1: {sum(p.numel() for p in stage.parameters()) / 1e6:.2f} M trainable parameters")

    step, best_psnr, best_ssim, best_step, bad_evals = 0, float("-inf"), float("nan"), 0, 0
    best_state = common.clone_state(stage)
    checkpoint_path = args.work_dir / common.CHECKPOINT_FILE
    log_path = args.work_dir / common.LOG_FILE
    if args.resume:
        step, best_psnr, best_ssim, best_step, bad_evals, best_state = _resume(
            checkpoint_path, stage, optimizer, scheduler, generator, args)
    elif log_path.exists():
        log_path.unlink()  # a fresh run must not append to an old run's log
    logger = common.CsvLogger(log_path, LOG_FIELDS)

    warmup_steps = int(PCT_START * args.max_steps)
    start_time, losses = time.perf_counter(), []
    bar = common.progress(step, args.max_steps, "stage 1")
    for step in bar:
        batch = common.sample_batch(train, args.batch_size, args.crop, generator)
        pred = stage(batch["s1"])
        # L1 in standardized space weights all 12 bands alike (DN ranges differ per band).
        loss = torch.nn.functional.l1_loss(std.s2(pred), std.s2(batch["s2"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}", best=f"{best_psnr:.2f}")

        if step % args.eval_every and step != args.max_steps:
            continue
        scores = evaluate(stage, val)
        if scores["psnr"] > best_psnr:
            best_psnr, best_ssim, best_step, bad_evals = scores["psnr"], scores["ssim"], step, 0
            best_state = common.clone_state(stage)
        elif step > warmup_steps:
            # Validation dips while the one-cycle rate climbs; only count misses after the peak.
            bad_evals += 1
        logger.log(step=step, train_loss=sum(losses) / len(losses), val_psnr=scores["psnr"], val_ssim=scores["ssim"],
                   lr=scheduler.get_last_lr()[0], elapsed_s=time.perf_counter() - start_time)
        losses = []
        common.save_checkpoint(
            checkpoint_path, model=stage.state_dict(), optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), generator=generator.get_state(), step=step,
            max_steps=args.max_steps, best_psnr=best_psnr, best_ssim=best_ssim, best_step=best_step,
            bad_evals=bad_evals, best_model=best_state)
        if args.patience and bad_evals >= args.patience:
            bar.write(f"early stop at step {step}: no better validation PSNR for {bad_evals} evaluations")
            break
    bar.close()
    wall = time.perf_counter() - start_time

    stage.load_state_dict(best_state)
    stage.eval()
    out = _write_pipeline(stage, args, train_tiles=len(train), val_tiles=len(val), steps=step,
                          best_step=best_step, psnr=best_psnr, ssim=best_ssim, baseline=baseline)
    print(f"best validation (step {best_step}): model PSNR {best_psnr:.2f} dB, SSIM {best_ssim:.3f} | "
          f"training-mean image PSNR {baseline['psnr']:.2f} dB, SSIM {baseline['ssim']:.3f} "
          f"({len(val)} tiles, bands B02,B03,B04,B08)")
    print(f"wrote {out} ({wall:.0f} s this run; checkpoint and log in {args.work_dir})")
    return {"steps": step, "best_step": best_step, "val_psnr": best_psnr, "val_ssim": best_ssim,
            "baseline_psnr": baseline["psnr"], "baseline_ssim": baseline["ssim"], "train_tiles": len(train),
            "val_tiles": len(val), "wall_s": wall, "out": out}


def _resume(path: Path, stage, optimizer, scheduler, generator, args):
    """Restore a checkpoint in place; returns (step, best_psnr, best_ssim, best_step, bad_evals, best_state)."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    state = common.load_checkpoint(path)
    stage.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    step = int(state["step"])
    if int(state["max_steps"]) == args.max_steps:
        scheduler.load_state_dict(state["scheduler"])
    else:
        # A longer (or shorter) run: follow the new schedule from where the old one stopped.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for _ in range(min(step, args.max_steps)):
                scheduler.step()
        print(f"--resume: max steps {state['max_steps']} -> {args.max_steps}, one-cycle schedule re-laid")
    print(f"resumed from {path} at step {step} (best validation PSNR {state['best_psnr']:.2f} dB)")
    return (step, float(state["best_psnr"]), float(state["best_ssim"]), int(state["best_step"]),
            int(state["bad_evals"]), state["best_model"])


def _write_pipeline(stage: Stage1TerraMind, args, *, train_tiles: int, val_tiles: int, steps: int,
                    best_step: int, psnr: float, ssim: float, baseline: dict) -> Path:
    """Save the trained stage 1 with stages 2/3 from ``--init-from``, labelled honestly."""
    base = load_preset(str(args.init_from))
    stage.config.trained = True
    stages = (stage, base.stage2, base.stage3)
    trained = all(s.config.trained for s in stages)
    untrained = [str(i) for i, s in ((2, base.stage2), (3, base.stage3)) if not s.config.trained]
    tiles = "clear_land tiles" if not args.all_tiles else "tiles"
    description = (
        f"stage 1 trained on {train_tiles} real {tiles} (train split) for {steps} steps "
        f"(weights of step {best_step}, the best on validation); validation PSNR {psnr:.2f} dB / SSIM {ssim:.3f} on {val_tiles} tiles "
        f"(training-mean image {baseline['psnr']:.2f} dB / {baseline['ssim']:.3f})"
    )
    if untrained:
        description += f"; stage(s) {', '.join(untrained)} from {args.init_from}, not trained"
    config = PipelineConfig(**{**base.config.to_dict(), "description": description, "trained": trained, "files": {}})
    out = GACPipeline(*stages, config).save_pretrained(args.out)
    (args.work_dir / "args.json").write_text(json.dumps(
        {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, indent=2, sort_keys=True))
    return out


if __name__ == "__main__":
    main()
