"""``python -m eval --data DIR --out OUTDIR [options]``: run the ablation and print its summary."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval",
                                     description="Ablation of a GAC preset: baselines, control and stage subsets.")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (test split, else every pair)")
    parser.add_argument("--preset", default="mini", help="mini (embedded), hub, a pipeline folder or repo@rev")
    parser.add_argument("--out", type=Path, required=True, help="folder for per_tile.csv, summary.csv, meta.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--max-tiles", type=int, help="evaluate only the first N pairs")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _interval(row: pd.Series, metric: str, digits: int) -> str:
    value = row[metric]
    if math.isnan(value):
        return "-"
    return f"{value:.{digits}f} [{row[metric + '_lo']:.{digits}f}, {row[metric + '_hi']:.{digits}f}]"


def format_summary(summary: pd.DataFrame, meta: dict) -> str:
    """The summary as a plain-text table plus the SAR-edge ceiling of the real optical tiles."""
    lines = [f"{meta['preset_label']} on {meta['n_tiles']} tile(s) ({meta['split']}), bands {meta['bands']}",
             (f"{'variant':<16}{'n':>4}  {'PSNR dB':<24}{'SSIM':<24}{'SAM deg':<24}{'SAR-edge':<24}"
              f"{'|SAR-edge - real|':<24}")]
    for _, row in summary.iterrows():
        cells = [_interval(row, "psnr", 2), _interval(row, "ssim", 3), _interval(row, "sam_deg", 2),
                 _interval(row, "sar_edge", 3), _interval(row, "sar_edge_gap", 3)]
        line = f"{row['variant']:<16}{row['n']:>4}  " + "".join(f"{cell:<24}" for cell in cells)
        lines.append((line + (f"  {row['note']}" if row["note"] else "")).rstrip())
    ceiling = meta["sar_edge_ceiling"]
    if ceiling["mean"] is None:
        lines.append("SAR-edge of the real optical (reference): undefined on every tile")
    else:
        lines.append(f"SAR-edge of the real optical (reference): {ceiling['mean']:.3f} "
                     f"[{ceiling['lo']:.3f}, {ceiling['hi']:.3f}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here so `--help` is instant.
    from eval.ablation import run_ablation
    from gac_pipeline.io import InputError

    try:
        result = run_ablation(args.data, args.preset, args.out, seed=args.seed, bootstrap=args.bootstrap,
                              max_tiles=args.max_tiles, progress=not args.no_progress)
    except (InputError, ValueError, FileNotFoundError, RuntimeError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    print(format_summary(result.summary, result.meta))
    print(f"wrote {args.out / 'summary.csv'}, per_tile.csv and meta.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
