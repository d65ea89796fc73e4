"""Run stage 1 of a pipeline over every training tile and store ``opt_v1`` for stages 2 and 3.

Usage::

    python -m training.precompute_stage1 --preset /tmp/stage1 --out /tmp/opt_v1

For a stage 1 that was not trained on these tiles (e.g. the ``hub`` preset's zero-shot
TerraMind), its outputs are what the later stages see at test time. For a stage 1 trained on
them, use the out-of-fold outputs of ``training.train_mini``'s cross-validation instead: a
model's outputs on its own training tiles are over-fitted, and a later stage trained on them
learns to change almost nothing.

Writes ``OUT/opt_v1.safetensors`` (one (12, H, W) float32 DN tensor per pair) and
``OUT/opt_v1_manifest.json``. The test split is never read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.data import DEFAULT_DATA_DIR
from gac_pipeline.presets import load_preset
from training import common


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--preset", default="mini", help="pipeline whose stage 1 predicts")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-tiles", action="store_true", help="also tiles not marked clear_land")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Write the predictions; returns the manifest (pair name -> producing model)."""
    args = parse_args(argv)
    common.seed_all(args.seed)
    stage = load_preset(args.preset).stage1.eval()
    pool = common.load_pool(args.data, clear_only=not args.all_tiles)
    outputs = common.predict_tiles(lambda s1: stage(s1, seed=args.seed), pool.s1)
    manifest = dict.fromkeys(pool.names, f"stage 1 of {args.preset}")
    path = common.save_outputs(args.out, "opt_v1", dict(zip(pool.names, outputs, strict=True)), manifest)
    print(f"wrote {len(pool)} stage-1 outputs to {path}")
    return manifest


if __name__ == "__main__":
    main()
