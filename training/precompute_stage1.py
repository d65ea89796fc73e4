"""Run stage 1 over the training and validation pairs and store ``opt_v1`` for stages 2 and 3.

Usage::

    # stage 1 of a pipeline over every train/validation pair (any mode, generate included)
    python -m training.precompute_stage1 --data data/bigearthnet --preset /tmp/stage1 --out /tmp/opt_v1

    # out-of-fold: K stage-1 models, each trained without one fold of the training tiles,
    # predict that fold; validation tiles get the final stage 1 of --preset
    python -m training.precompute_stage1 --data data/bigearthnet --preset /tmp/stage1 --out /tmp/opt_v1 \
        --folds 3 -- --config training/configs/mini/stage1.yaml

Why out-of-fold: stage 1's outputs on its own training tiles are over-fitted (too good), so a
later stage trained on them learns to change almost nothing.
Predictions from models that never saw the tile look like what the later stages get at test
time. Options after ``--`` go to ``training.train_stage1`` for the fold models.

Writes ``OUT/opt_v1.safetensors`` (one (12, H, W) float32 DN tensor per pair, keyed by pair
name) and ``OUT/manifest.json`` (which model produced each pair). The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.data import DEFAULT_DATA_DIR
from gac_pipeline.presets import load_preset
from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
from training import common, train_stage1

OPT_V1_FILE = "opt_v1.safetensors"
MANIFEST_FILE = "manifest.json"


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    fold_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--preset", default="mini", help="pipeline whose stage 1 predicts (the final stage 1)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=1, help="K >= 2: out-of-fold predictions for training tiles")
    parser.add_argument("--work-dir", type=Path, default=None, help="fold models (default <out>_folds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-tiles", action="store_true", help="folds over all training tiles, not only clear ones")
    args = parser.parse_args(own)
    if args.folds < 1:
        parser.error("--folds must be at least 1")
    if args.work_dir is None:
        args.work_dir = args.out.parent / f"{args.out.name}_folds"
    return args, fold_args


def predict(stage: Stage1TerraMind, tiles: common.TileSet, seed: int) -> torch.Tensor:
    stage.eval()
    return common.predict_tiles(lambda s1: stage(s1, seed=seed), tiles.s1)


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Write the predictions; returns the manifest (pair name -> producing model)."""
    args, fold_args = parse_args(argv)
    common.seed_all(args.seed)
    final = load_preset(args.preset).stage1
    outputs: dict[str, torch.Tensor] = {}
    manifest: dict[str, str] = {}
    for split in ("train", "validation"):
        tiles = common.load_split(args.data, split, clear_only=False)
        for name, image in zip(tiles.names, predict(final, tiles, args.seed), strict=True):
            outputs[name], manifest[name] = image, f"stage 1 of {args.preset} ({split} split)"

    if args.folds > 1:
        train = common.load_split(args.data, "train", clear_only=not args.all_tiles)
        for fold in range(args.folds):
            members = common.fold_members(len(train), args.folds, fold)
            fold_dir = args.work_dir / f"fold{fold}"
            print(f"fold {fold + 1}/{args.folds}: training stage 1 without {len(members)} tiles")
            train_stage1.main([*fold_args, "--data", str(args.data), "--out", str(fold_dir), "--seed", str(args.seed),
                               "--folds", str(args.folds), "--fold", str(fold),
                               *(["--all-tiles"] if args.all_tiles else [])])
            held_out = train.subset(members)
            stage = load_preset(str(fold_dir)).stage1
            for name, image in zip(held_out.names, predict(stage, held_out, args.seed), strict=True):
                outputs[name], manifest[name] = image, f"fold {fold} model (never trained on this tile)"

    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in outputs.items()}, args.out / OPT_V1_FILE)
    (args.out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(outputs)} stage-1 outputs to {args.out / OPT_V1_FILE}")
    return manifest


def attach(tiles: common.TileSet, directory: Path, name: str = "opt_v1") -> common.TileSet:
    """The tiles with their stored stage-1 outputs as the ``name`` extra (error if any is missing)."""
    stored = load_file(Path(directory) / OPT_V1_FILE)
    missing = [n for n in tiles.names if n not in stored]
    if missing:
        raise ValueError(f"{directory}: no stage-1 output for {len(missing)} tiles (e.g. {missing[0]}); "
                         "run training.precompute_stage1 on the same data")
    return tiles.with_extra(name, torch.stack([stored[n] for n in tiles.names]))


if __name__ == "__main__":
    main()
