"""Train GAC-mini, the embedded default, end to end on the repo's real tiles (CPU is enough).

Usage (the command that produced ``presets/mini``; seeded and deterministic on the CPU, whose kernels
``training/__init__.py`` pins to AVX2 so that other machines compute the same weights)::

    python -m training.train_mini --out presets/mini

The protocol (``training.cv``), for each of stage 1, stage 2, stage 3 (in that order) and the
one-network control (beside the chain: it does not depend on it):

1. K fold runs (``--folds``, default 3) on every clear non-test tile, folds grouped by scene
   cluster: each trains without one fold for the YAML's ``max_steps`` and records its
   predictions for that fold at step 0 and every ``eval_every`` steps;
2. the step with the best cross-validated score (``training.cv.CV_SCORE_TEXT``) outside the
   warm-up is chosen (stages 2 and 3 may keep step 0, the identity, and choose only among steps
   within 0.3 dB PSNR of their input; stage 3 takes the smallest SAR-edge gap among those
   instead); the fold models' predictions at that step are the out-of-fold inputs of the next
   stage (``<work-dir>/cv/opt_v1``, ``opt_v2``);
3. the final model trains on all those tiles for the chosen number of steps on the same
   schedule.

Every fold run and final fit is a worker process with ``--threads`` torch threads (default 1),
``--jobs`` of them at a time (default 2): the fold runs of a stage, and the control's runs, train
side by side. A single-threaded run computes the same weights whatever runs beside it, so
``--jobs`` changes the wall time, not the result. Each run's output goes to ``log.txt`` in its
work folder (``<work-dir>/<stage>/fold<k>_train/``, ``final_train/``).

The control gets the chain's step budget (the three stages' ``max_steps`` added up) and may
not have more parameters than the chain. The pipeline is written to ``--out`` with
``references/`` (mean and linear baselines fitted on the same tiles, the control, and the
unsharp-mask setting of the ``v1+unsharp`` baseline, chosen on the out-of-fold opt_v1 by stage 2's
rule: ``training.cv.choose_unsharp``) and
``training.json`` (folds, every step's cross-validated scores, choices, timings). Cloudy tiles
are left out of training (a cloudy target teaches SAR -> cloud, which SAR cannot see); the
manifests say so. So are the open-sea tiles, but with ``paste_water`` in a YAML the calm ones'
water is pasted into training crops (``training.common.paste_blobs``; ``training.json`` lists
them under ``water_pasted_from``). The test split is never read. Intermediate folders go to
``--work-dir``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from itertools import repeat
from pathlib import Path

import torch
import yaml

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.control import UNetControl
from gac_pipeline.data import DEFAULT_DATA_DIR, INDEX_FILE, list_pairs
from gac_pipeline.hub import PIPELINE_CONFIG, sha256
from gac_pipeline.presets import load_preset
from gac_pipeline.references import References
from training import CPU_KERNEL_PINS, common, cv, train_control, train_stage1, train_stage2, train_stage3

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "mini"
TRAINING_RECORD = "training.json"
RUN_RECORD = "train_mini_run.json"  # in each run's work folder: what it ran with (for --reuse)
RUN_LOG = "log.txt"  # in each run's work folder: its printed output
STAGES = ("stage1", "stage2", "stage3", "control")
# --smoke: a couple of tiny steps per run, for tests of the whole protocol.
SMOKE_ARGS = ["--max-steps", "2", "--batch-size", "2", "--crop", "32", "--eval-every", "1"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=common.data_folder, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, required=True, help="pipeline folder to write (replaced if it exists)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/mini"), help="fold runs, final fits, logs")
    parser.add_argument("--configs", type=Path, default=CONFIG_DIR, help="folder with stage1/2/3 and control YAML")
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds, grouped by scene cluster")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch in each run (default 1: the weights then do not depend on the "
                             "machine's core count nor on --jobs, and other work on the machine slows training fairly "
                             "instead of stalling it)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="training runs at once, each in its own process (default 2: one per core of a 2-core "
                             "machine with --threads 1)")
    parser.add_argument("--reuse", action="store_true",
                        help="skip a fold run or final fit whose arguments, config file and inputs are byte-identical "
                             "to the one recorded in its work folder (e.g. after an interruption); code changes are "
                             "not detected")
    parser.add_argument("--smoke", action="store_true", help="2 tiny steps per run (tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    out = args.out
    if out.exists() and any(out.iterdir()) and not (out / PIPELINE_CONFIG).is_file():
        raise SystemExit(f"--out {out}: exists and is not a pipeline folder; refusing to replace it")
    torch.set_num_threads(args.threads)  # this process's own work: step choices, references
    work, configs = args.work_dir, args.configs
    # The schedule too: a YAML's longer one (stage 1's) would leave every smoke step inside its warm-up.
    smoke = [*SMOKE_ARGS, "--schedule-steps", "2"] if args.smoke else []
    shared = ["--data", str(args.data), "--seed", str(args.seed), "--folds", str(args.folds)]
    pool = common.load_pool(args.data)
    left_out = sorted(p.name for p in list_pairs(args.data) if p.split in common.TRAINING_SPLITS and not p.clear_land)
    # Calm open-water tiles are not trained on as tiles, but stage 1 and the control may paste their water in.
    pasting = [name for name in ("stage1", "control") if _setting(args.configs / f"{name}.yaml", "paste_water")]
    water = common.water_donors(args.data).names if pasting else []
    folds = cv.grouped_folds(pool.names, args.folds)
    chain_timings: dict[str, float] = {}
    control_timings: dict[str, float] = {}
    choices: dict[str, cv.Choice] = {}

    def run(name: str, script, script_args: list[str]) -> float:
        """One training run in a worker process (or its recorded time, under --reuse); returns its seconds."""
        command = f"python -m {script.__name__} {' '.join(script_args)}"
        out = Path(script_args[script_args.index("--out") + 1])
        work_dir = out.parent / f"{out.name}_train"
        record_path, log, key = work_dir / RUN_RECORD, work_dir / RUN_LOG, run_key(script_args)
        if args.reuse and out.exists() and record_path.is_file():
            record = json.loads(record_path.read_text())
            if record["key"] == key:
                print(f"\n== {name}: reused ({command} ran before with the same arguments, config and inputs)")
                return record["seconds"]
        future = processes.submit(_train, name, command, script.__name__, script_args, args.threads, log)
        try:
            seconds = future.result()
        except BaseException as error:
            processes.shutdown(wait=False, cancel_futures=True)  # one failure cancels the runs still queued
            if future.cancelled():
                error.add_note(f"{name} was not started: another run failed (see above)")
            else:
                tail = "\n".join(log.read_text().splitlines()[-20:]) if log.is_file() else ""
                print(f"\n== {name} failed; the end of {log}:\n{tail}", flush=True)
                error.add_note(f"{name} failed: {command} (log: {log})")
            raise
        print(f"== {name}: done in {seconds:.0f} s (log: {log})", flush=True)
        record_path.write_text(json.dumps({"key": key, "seconds": seconds}, indent=2) + "\n")
        return seconds

    def cross_validate_and_fit(name: str, script, extra: list[str], timings: dict[str, float], **rules) -> Path:
        """Fold runs (all at once), the step choice, then the final fit; returns the final output folder."""
        base = [*shared, "--config", str(configs / f"{name}.yaml"), *extra]
        fold_runs = {f"{name} fold {fold}": [*base, *smoke, "--fold", str(fold), "--out", str(work / name / f"fold{fold}")]
                     for fold in range(args.folds)}
        with ThreadPoolExecutor(args.folds) as threads:  # a thread per fold run, waiting on its process
            timings.update(zip(fold_runs, threads.map(run, fold_runs, repeat(script), fold_runs.values())))
        fold_dirs = [work / name / f"fold{fold}_train" for fold in range(args.folds)]
        choice = choices[name] = cv.choose_step(pool, fold_dirs, **rules)
        print(f"{name}: cross-validation chose step {choice.step} of {choice.schedule_steps}")
        final = work / name / "final"
        timings[f"{name} final"] = run(f"{name} final", script, [
            *base, *smoke, "--max-steps", str(choice.step), "--schedule-steps", str(choice.schedule_steps),
            "--out", str(final)])
        return final

    def store(name: str, choice: cv.Choice) -> None:
        manifest = {**choice.producers, **dict.fromkeys(left_out, "left out of training (not clear_land)"),
                    **dict.fromkeys(water, f"left out of training as a tile (not clear_land); its calm water is "
                                           f"pasted into {' and '.join(pasting)} training crops")}
        common.save_outputs(work / "cv", name, choice.predictions, manifest)

    budget = sum(_max_steps(configs / f"{name}.yaml") for name in ("stage1", "stage2", "stage3"))
    # Every run is a worker process, also with --jobs 1: one code path, and every run's output in its log.
    # Workers are reused (a fresh one per run costs ~15 s of imports); each script seeds itself.
    with (ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as processes,
          ThreadPoolExecutor(1) as beside):
        # The control needs nothing from the chain (its step budget comes from the configs): it trains beside it.
        control_future = beside.submit(cross_validate_and_fit, "control", train_control, ["--max-steps", str(budget)],
                                       control_timings, allow_start=False)
        stage1 = cross_validate_and_fit("stage1", train_stage1, [], chain_timings, allow_start=False)
        store("opt_v1", choices["stage1"])
        unsharp = cv.choose_unsharp(pool, choices["stage1"].predictions)  # stage 2's yardstick
        stage2 = cross_validate_and_fit("stage2", train_stage2, ["--opt-v1", str(work / "cv"), "--init-from",
                                                                 str(stage1)], chain_timings, allow_start=True,
                                        psnr_tolerance=cv.ROLE_PSNR_TOLERANCE)
        store("opt_v2", choices["stage2"])
        stage3 = cross_validate_and_fit("stage3", train_stage3, ["--opt-v2", str(work / "cv"), "--init-from",
                                                                 str(stage2)], chain_timings, allow_start=True,
                                        psnr_tolerance=cv.ROLE_PSNR_TOLERANCE, grounding=True)
        control = control_future.result()

    pipeline = load_preset(str(stage3))
    chain_parameters = sum(p.numel() for p in pipeline.parameters())
    control_model = UNetControl.load(control)
    control_parameters = sum(p.numel() for p in control_model.parameters())
    if control_parameters > chain_parameters:
        raise SystemExit(f"the control has {control_parameters} parameters, more than the chain's "
                         f"{chain_parameters}: shrink it in {configs / 'control.yaml'}")

    pipeline.config.name = "GAC-mini"
    overview = (f"small TerraMind/Prithvi-architecture pipeline ({chain_parameters / 1e6:.1f} M parameters) trained "
                f"from random init on {len(pool)} real BigEarthNet clear_land tiles (train + validation splits; "
                f"steps chosen by {args.folds}-fold cross-validation grouped by scene"
                + (f"; calm water of {len(water)} sea tiles pasted into stage 1's training crops" if "stage1" in pasting
                   else "") + ")")
    pipeline.config.description = " | ".join([overview, *pipeline.config.description.split(" | ")])
    if out.exists():
        shutil.rmtree(out)
    pipeline.save_pretrained(out)
    references = References.fit(pool.s1, pool.s2, source=f"{args.data.name} train + validation splits, {len(pool)} "
                                                         "clear_land tiles")
    references.control = control_model
    references.unsharp = {"size": unsharp["size"], "gain": unsharp["gain"]}
    references.save(out)
    chain_seconds, control_seconds = sum(chain_timings.values()), sum(control_timings.values())
    wall_seconds = time.perf_counter() - started
    record = {"command": "python -m training.train_mini " + " ".join(sys.argv[1:] if argv is None else argv),
              "seed": args.seed, "train_tiles": len(pool), "left_out": left_out,
              "water_pasted_from": {"tiles": water, "into": pasting},
              "folds": [[pool.names[i] for i in fold] for fold in folds], "cv_score": cv.CV_SCORE_TEXT,
              "chosen_steps": {name: choices[name].step for name in STAGES},
              "cross_validation": {name: choices[name].table for name in STAGES},
              "unsharp_baseline": unsharp,
              "seconds": {**chain_timings, **control_timings}, "chain_seconds": round(chain_seconds, 1),
              "jobs": args.jobs, "wall_seconds": round(wall_seconds, 1), "chain_parameters": chain_parameters,
              "control_parameters": control_parameters, "control_max_steps": budget, "machine": machine_record()}
    (out / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nwrote {out} in {wall_seconds / 60:.1f} min (--jobs {args.jobs}); the runs took {chain_seconds / 60:.1f} "
          f"min for the chain, {control_seconds / 60:.1f} min for the control")
    return record


def _train(name: str, command: str, module: str, script_args: list[str], threads: int, log: Path) -> float:
    """One training run, in a worker process: ``threads`` torch threads, its output to ``log``; returns its seconds.

    The start line is printed here: the main process does not see when a queued run starts.
    """
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    print(f"\n== {name}: {command} (log: {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as file, contextlib.redirect_stdout(file), contextlib.redirect_stderr(file):
        try:
            importlib.import_module(module).main(script_args)
        except BaseException:
            traceback.print_exc()  # into the log, whose end the main process prints
            raise
    return round(time.perf_counter() - start, 1)


def run_key(script_args: list[str]) -> dict:
    """What a training run depends on besides the code: its arguments and the SHA-256 of its
    config file, stored inputs, starting pipeline and the data index."""
    inputs = {}
    for flag, file in (("--config", None), ("--opt-v1", "opt_v1.safetensors"), ("--opt-v2", "opt_v2.safetensors"),
                       ("--init-from", PIPELINE_CONFIG), ("--data", INDEX_FILE)):
        if flag in script_args:
            path = Path(script_args[script_args.index(flag) + 1])
            path = path / file if file else path
            inputs[flag] = sha256(path) if path.is_file() else None
    return {"args": script_args, "inputs": inputs}


def machine_record() -> dict:
    """What the weights were computed on: another CPU model or kernel set can round differently
    (the kernel pins: ``training/__init__.py``)."""
    cpuinfo = Path("/proc/cpuinfo")
    fields = {}
    if cpuinfo.is_file():  # the first processor's block
        for line in cpuinfo.read_text().split("\n\n")[0].splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    ids = ", ".join(f"{key} {fields[key]}" for key in ("cpu family", "model", "stepping") if key in fields)
    cpu = f"{fields.get('model name') or platform.processor() or 'unknown'}" + (f" ({ids})" if ids else "")
    return {"cpu": cpu, "torch": torch.__version__,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "kernel_pins": {name: os.environ.get(name) for name in CPU_KERNEL_PINS}}


def _max_steps(path: Path) -> int:
    return int(_setting(path, "max_steps"))


def _setting(path: Path, key: str) -> float:
    return (yaml.safe_load(path.read_text()) or {}).get(key, 0)


if __name__ == "__main__":
    main()
