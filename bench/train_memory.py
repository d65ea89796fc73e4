"""Peak memory per rank of streamed training: it must not grow with the dataset.

Writes synthetic reBEN folders (``training.make_synthetic_reben``) of each ``--pairs`` size to a
temp folder, then trains the control UNet (small config) on each for ``--steps`` steps under
``torch.distributed.run`` with ``--nproc`` gloo ranks and ``--workers`` DataLoader workers per rank.
Each rank reports its own peak RSS (VmHWM) and its largest DataLoader worker's (ru_maxrss of its
children). Target: the peak at the largest size within 10% of the smallest's.

    python -m bench.train_memory [--pairs 200 2000] [--steps 200] [--nproc 2] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, machine_info, proc_memory_mb, verdict

MARK = "TRAIN_MEMORY "
SMALL_CONTROL = "control: {width: 8, levels: 2}\nlr: 0.002\n"


def rank_worker(argv: list[str]) -> None:
    """Inside torchrun: train, then print this rank's peaks as one JSON line."""
    from training import train_control

    summary = train_control.main(argv)
    rank = int(os.environ.get("RANK", "0"))
    workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB -> MB on Linux
    print(MARK + json.dumps({"rank": rank, "peak_mb": proc_memory_mb(os.getpid())["VmHWM"],
                             "worker_peak_mb": workers_mb, "steps": summary["steps"],
                             "pairs": summary["train_tiles"]}), flush=True)


def run_size(root: Path, pairs: int, args: argparse.Namespace) -> list[dict]:
    from training.make_synthetic_reben import make

    data = make(root / f"reben_{pairs}", pairs)
    config = root / "small.yaml"
    config.write_text(SMALL_CONTROL)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc),
               "--master-port", str(args.port), "-m", "bench.train_memory", "--rank-worker", "--",
               "--data", str(data), "--config", str(config), "--out", str(root / f"out_{pairs}"),
               "--max-steps", str(args.steps), "--eval-every", str(args.steps), "--batch-size", "4", "--crop", "64",
               "--workers", str(args.workers)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"training on {pairs} pairs failed:\n{result.stderr[-3000:]}")
    lines = [line[len(MARK):] for line in result.stdout.splitlines() if line.startswith(MARK)]
    return sorted((json.loads(line) for line in lines), key=lambda row: row["rank"])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--rank-worker"]:
        rank_worker(argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=29541)
    args = parser.parse_args(argv)
    print(machine_info())
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="train_memory_") as tmp:
        for pairs in args.pairs:
            rows = run_size(Path(tmp), pairs, args)
            for row in rows:
                print(f"{pairs:>6} pairs ({row['pairs']} clear train+validation), {row['steps']} steps: "
                      f"rank {row['rank']} peak RSS {row['peak_mb']:.0f} MB, "
                      f"its largest DataLoader worker {row['worker_peak_mb']:.0f} MB")
            peaks[pairs] = max(row["peak_mb"] + args.workers * row["worker_peak_mb"] for row in rows)
    smallest, largest = min(peaks), max(peaks)
    growth = 100 * (peaks[largest] / peaks[smallest] - 1)
    print(f"peak per rank (rank + its workers): {peaks[smallest]:.0f} MB at {smallest} pairs, "
          f"{peaks[largest]:.0f} MB at {largest} pairs; growth {verdict(growth, 10, '%')}")


if __name__ == "__main__":
    main()
