"""Paired differences between two evaluations of the same tiles, e.g. a retrained preset against the one before.

    git show <commit>:eval/results/per_tile.csv > /tmp/before.csv
    python -m eval.compare /tmp/before.csv eval/results/per_tile.csv [--variant v1+v2+v3] [--subset clear]

Prints, per metric, the mean over tiles of (after - before) for one variant with its 95% cluster-bootstrap
interval (whole scene clusters resampled, as in ``summary.csv``/``paired.csv``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from eval.ablation import _paired_row, subset_rows

METRICS = ("psnr", "ssim", "sam_deg", "structure_r", "sharpness", "sar_edge_gap")


def compare(before: pd.DataFrame, after: pd.DataFrame, *, variant: str, subset: str, seed: int = 0,
            bootstrap: int = 2000) -> pd.DataFrame:
    """One row per metric: n, n_clusters, mean_diff (after - before), lo, hi, note."""
    tiles = pd.concat([subset_rows(frame[frame["variant"] == variant], subset).assign(variant=name)
                       for name, frame in (("after", after), ("before", before))])
    rows = [{"metric": metric, **_paired_row(tiles, "after", "before", metric, subset, seed=seed, bootstrap=bootstrap)}
            for metric in METRICS if metric in tiles]
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="per_tile.csv of the earlier evaluation")
    parser.add_argument("after", type=Path, help="per_tile.csv of the later evaluation")
    parser.add_argument("--variant", default="v1+v2+v3", help="variant to compare (default: the whole chain)")
    parser.add_argument("--subset", default="clear", choices=("clear", "cloudy", "all"))
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args(argv)
    table = compare(pd.read_csv(args.before), pd.read_csv(args.after), variant=args.variant, subset=args.subset,
                    bootstrap=args.bootstrap)
    print(f"{args.variant}, {args.subset} tiles: after ({args.after}) - before ({args.before}), "
          f"mean over tiles [95% cluster-bootstrap interval]")
    for row in table.itertuples():
        interval = f"[{row.lo:+.3f}, {row.hi:+.3f}]" if pd.notna(row.lo) else "(no interval)"
        print(f"  {row.metric:14s} {row.mean_diff:+.3f} {interval}  n={row.n} in {row.n_clusters} clusters"
              + (f"  ({row.note})" if row.note else ""))


if __name__ == "__main__":
    main()
