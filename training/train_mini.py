"""Train GAC-mini, the embedded default, end to end on the repo's real tiles (CPU is enough).

Usage (the command that produced ``presets/mini``; seeded, about half an hour on 2 CPU cores)::

    python -m training.train_mini --out presets/mini

Steps, each a separate script run with the YAML files in ``training/configs/mini/``:

1. ``train_stage1``: stage 1 on the clear training tiles, early stopping on validation;
2. ``precompute_stage1 --folds K``: K fold models give out-of-fold stage-1 outputs for the
   training tiles (the final stage 1 for validation tiles): what stages 2/3 train on;
3. ``train_stage2`` on those outputs; 4. ``train_stage3`` on stage 2's outputs of them;
5. ``train_control``: the one-network UNet control, with the chain's step budget (stages
   1 + 2 + 3) and no more parameters than the chain;
6. the pipeline is written to ``--out`` with ``references/`` (mean and linear baselines fitted
   on the training split, and the control) and ``training.json`` (what ran, how long).

The test split is never read. Intermediate folders go to ``--work-dir``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.control import UNetControl
from gac_pipeline.data import DEFAULT_DATA_DIR
from gac_pipeline.hub import PIPELINE_CONFIG
from gac_pipeline.presets import load_preset
from gac_pipeline.references import References
from training import common, precompute_stage1, train_control, train_stage1, train_stage2, train_stage3

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "mini"
TRAINING_RECORD = "training.json"
# --smoke: a couple of tiny steps per script, for tests of the whole chain.
SMOKE_ARGS = ["--max-steps", "2", "--batch-size", "2", "--crop", "32", "--eval-every", "1", "--max-val-tiles", "2"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, required=True, help="pipeline folder to write (replaced if it exists)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/mini"), help="intermediate stages and logs")
    parser.add_argument("--configs", type=Path, default=CONFIG_DIR, help="folder with stage1/2/3 and control YAML")
    parser.add_argument("--folds", type=int, default=3, help="folds for out-of-fold stage-1 outputs")
    parser.add_argument("--fold-steps", type=int, default=400, help="max steps of each fold's stage-1 model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="2 tiny steps per script (tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = args.out
    if out.exists() and any(out.iterdir()) and not (out / PIPELINE_CONFIG).is_file():
        raise SystemExit(f"--out {out}: exists and is not a pipeline folder; refusing to replace it")
    work, configs = args.work_dir, args.configs
    smoke = SMOKE_ARGS if args.smoke else []
    common_args = ["--data", str(args.data), "--seed", str(args.seed)]
    timings: dict[str, float] = {}
    results: dict[str, dict] = {}

    def step(name: str, function, script_args: list[str]) -> dict:
        print(f"\n== {name}: python -m training.{function.__module__.split('.')[-1]} {' '.join(script_args)}")
        start = time.perf_counter()
        result = function(script_args)
        timings[name] = round(time.perf_counter() - start, 1)
        return result

    def config(name: str) -> list[str]:
        return ["--config", str(configs / f"{name}.yaml")]

    results["stage1"] = step("stage1", train_stage1.main,
                             [*common_args, *config("stage1"), "--out", str(work / "stage1"), *smoke])
    fold_args = [*config("stage1"), "--max-steps", str(args.fold_steps), *smoke]
    step("precompute_stage1", precompute_stage1.main,
         [*common_args, "--preset", str(work / "stage1"), "--out", str(work / "opt_v1"), "--folds", str(args.folds),
          "--", *fold_args])
    stage_args = ["--opt-v1", str(work / "opt_v1"), *common_args]
    results["stage2"] = step("stage2", train_stage2.main, [*stage_args, *config("stage2"), "--init-from",
                                                           str(work / "stage1"), "--out", str(work / "stage2"), *smoke])
    results["stage3"] = step("stage3", train_stage3.main, [*stage_args, *config("stage3"), "--init-from",
                                                           str(work / "stage2"), "--out", str(work / "stage3"), *smoke])
    chain_seconds = sum(timings.values())

    pipeline = load_preset(str(work / "stage3"))
    chain_parameters = sum(p.numel() for p in pipeline.parameters())
    budget = sum(_max_steps(configs / f"{name}.yaml") for name in ("stage1", "stage2", "stage3"))
    control_args = [*common_args, *config("control"), "--out", str(work / "control"), "--max-steps", str(budget)]
    results["control"] = step("control", train_control.main, [*control_args, *smoke])
    if results["control"]["parameters"] > chain_parameters:
        raise SystemExit(f"the control has {results['control']['parameters']} parameters, more than the chain's "
                         f"{chain_parameters}: shrink it in {configs / 'control.yaml'}")

    train = common.load_split(args.data, "train")
    pipeline.config.name = "GAC-mini"
    overview = (f"small TerraMind/Prithvi-architecture pipeline ({chain_parameters / 1e6:.1f} M parameters) trained "
                f"from random init on {len(train)} real BigEarthNet clear_land tiles (train split)")
    pipeline.config.description = " | ".join([overview, *pipeline.config.description.split(" | ")])
    if out.exists():
        shutil.rmtree(out)
    pipeline.save_pretrained(out)
    references = References.fit(train.s1, train.s2, source=f"{args.data.name} train split, {len(train)} clear_land "
                                                           "tiles")
    references.control = UNetControl.load(work / "control")
    references.save(out)
    record = {"command": "python -m training.train_mini " + " ".join(sys.argv[1:] if argv is None else argv),
              "seed": args.seed, "folds": args.folds, "train_tiles": len(train), "seconds": timings,
              "chain_seconds": round(chain_seconds, 1), "chain_parameters": chain_parameters,
              "control_parameters": results["control"]["parameters"], "control_max_steps": budget,
              "validation": {k: {m: v for m, v in r.items() if m != "out"} for k, r in results.items()}}
    (out / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nwrote {out}: chain trained in {chain_seconds / 60:.1f} min, control in "
          f"{timings['control'] / 60:.1f} min")
    return record


def _max_steps(path: Path) -> int:
    return int((yaml.safe_load(path.read_text()) or {}).get("max_steps", 0))


if __name__ == "__main__":
    main()
