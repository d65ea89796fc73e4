"""Run stage 1 (or stages 1 and 2) of a pipeline over every training tile and store its output
(``opt_v1``, or ``opt_v2``) for stage 2 (or 3) to train on.

Usage::

    python -m training.precompute_stage1 --preset /tmp/stage1 --out /tmp/opt_v1
    python -m training.precompute_stage1 --preset /tmp/stage2 --through 2 --out /tmp/opt_v2
    torchrun --nproc-per-node 4 -m training.precompute_stage1 --data /path/to/reBEN --preset runs/stage1 \
        --out runs/opt_v1 --workers 4                 # streamed: one file per pair, each rank its share

For a stage 1 that was not trained on these tiles (e.g. the ``hub`` preset's zero-shot
TerraMind), its outputs are what the later stages see at test time. For a stage 1 trained on
them, use the out-of-fold outputs of ``training.train_mini``'s cross-validation instead: a
model's outputs on its own training tiles are over-fitted, and a later stage trained on them
learns to change almost nothing.

``--through 2`` runs stage 2 of the same pipeline on stage 1's output (as ``train_stage3 --opt-v1``
does) and stores ``opt_v2``. The test split is never read. Two layouts, as the training scripts
read them (``--opt-v1 OUT`` / ``--opt-v2 OUT``):

- in memory (the bundled pair folders): ``OUT/opt_v1.safetensors`` (one (12, H, W) float32 DN
  tensor per pair) and ``OUT/opt_v1_manifest.json`` (pair -> producing model);
- streamed (a reBEN folder, or ``--stream``): ``OUT/opt_v1/<pair>.safetensors``, one file per
  pair (``streaming.stored_file``), written as the pairs are read, never all held, and
  ``OUT/opt_v1_manifest.json`` saying what produced them. A rerun skips the pairs already written
  (resume); under ``torchrun`` (RANK/WORLD_SIZE) each process takes every N-th pair.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.batch import pick_shard
from gac_pipeline.cli import resolve_device
from gac_pipeline.data import DEFAULT_DATA_DIR
from gac_pipeline.presets import load_preset
from training import common, streaming


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=common.data_folder, default=DEFAULT_DATA_DIR,
                        help="pair folders with index.csv, or reBEN (metadata.parquet; streamed)")
    parser.add_argument("--preset", default="mini", help="pipeline whose stage 1 (and 2) predicts")
    parser.add_argument("--through", type=int, choices=(1, 2), default=1,
                        help="1: store stage 1's opt_v1; 2: run stage 2 on it and store opt_v2")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-tiles", action="store_true", help="also tiles not marked clear_land")
    parser.add_argument("--stream", action="store_true",
                        help="one file per pair, reading pairs as they are needed (always on for a reBEN folder)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes when streaming")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    return parser.parse_args(argv)


def predictor(args: argparse.Namespace, device: str):
    """``predict(s1, month, biome) -> (N, 12, H, W)``: stage 1 of ``--preset``, then stage 2 with ``--through 2``."""
    pipeline = load_preset(args.preset)
    stage1, stage2 = pipeline.stage1.eval().to(device), pipeline.stage2.eval().to(device)

    def predict(s1: torch.Tensor, month: torch.Tensor, biome: torch.Tensor) -> torch.Tensor:
        opt = common.predict_tiles(lambda x: stage1(x, seed=args.seed), s1, batch_size=args.batch_size, device=device)
        if args.through == 2:
            opt = common.predict_tiles(lambda opt_v1, s1_db, **kw: stage2(opt_v1, s1_db=s1_db, **kw), opt, s1,
                                       batch_size=args.batch_size, device=device, month=month, biome=biome)
        return opt

    return predict


def main(argv: list[str] | None = None) -> dict:
    """Write the predictions; returns the manifest (in memory: pair name -> producing model)."""
    args = parse_args(argv)
    common.seed_all(args.seed)
    device = resolve_device(args.device)
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
        device = f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    name = f"opt_v{args.through}"
    producer = f"stage 1 of {args.preset}" if args.through == 1 else f"stages 1 and 2 of {args.preset}"
    predict = predictor(args, device)
    if streaming.wanted(args):
        return store_per_pair(args, name, producer, predict)
    pool = common.load_pool(args.data, clear_only=not args.all_tiles)
    outputs = predict(pool.s1, pool.month, pool.biome)
    manifest = dict.fromkeys(pool.names, producer)
    path = common.save_outputs(args.out, name, dict(zip(pool.names, outputs, strict=True)), manifest)
    print(f"wrote {len(pool)} {name} outputs to {path}")
    return manifest


def store_per_pair(args: argparse.Namespace, name: str, producer: str, predict) -> dict:
    """The streamed layout: this process's share of the pairs, one file each, skipping those already written.

    Raises:
        ValueError: ``--out`` holds outputs of another producer, or two pairs share a name.
    """
    source = streaming.open_source(args.data, clear_only=not args.all_tiles)
    names = streaming.pair_names(source)
    if len(set(names)) != len(names):
        raise ValueError(f"{args.data}: pair names repeat; stored outputs are keyed by name")
    manifest = {"producer": producer, "seed": args.seed, "data": str(args.data.resolve()), "pairs": len(names),
                "clear_only": not args.all_tiles, "layout": f"{name}/<pair>.safetensors: one (12, H, W) float32 DN "
                                                            f"tensor '{name}' per pair"}
    manifest_path = args.out / f"{name}_manifest.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()) != manifest:
        raise ValueError(f"{manifest_path}: {args.out} holds {name} of another run ({manifest_path.read_text()!r}); "
                         "write to a new --out")
    (args.out / name).mkdir(parents=True, exist_ok=True)
    mine, shard = pick_shard(list(range(len(names))), None)
    first = shard is None or shard.startswith("0/")  # the first process writes the manifest and shows progress
    if first and not manifest_path.is_file():
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        tmp.replace(manifest_path)
    todo = [i for i in mine if not streaming.stored_file(args.out, name, names[i]).is_file()]
    where = f"shard {shard}: " if shard else ""
    print(f"{where}{len(mine) - len(todo)} of {len(mine)} pairs already stored in {args.out / name}, "
          f"{len(todo)} to predict")
    loader = DataLoader(Subset(source, todo), batch_size=args.batch_size, num_workers=args.workers)
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"{where}{name}", unit="batch", dynamic_ncols=True,
                          disable=not first):
            for pair, image in zip(batch["name"], predict(batch["s1"], batch["month"], batch["biome"]), strict=True):
                streaming.write_stored(args.out, name, pair, image)
    return manifest


if __name__ == "__main__":
    main()
