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
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for per_tile.csv, summary.csv, paired.csv, meta.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--max-tiles", type=int, help="evaluate only the first N pairs")
    parser.add_argument("--uncertainty", type=int, default=8, metavar="N",
                        help="test-time variants for the uncertainty-error Spearman (default 8; 0: off)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _interval(row: pd.Series, metric: str, digits: int) -> str:
    value = row.get(metric, math.nan)
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    lo, hi = row.get(metric + "_lo", math.nan), row.get(metric + "_hi", math.nan)
    if math.isnan(lo) or math.isnan(hi):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _difference(row: pd.Series) -> str:
    """A paired difference "mean [lo, hi]", the mean alone without an interval, or "-"."""
    return _interval(pd.Series({"d": row["mean_diff"], "d_lo": row["lo"], "d_hi": row["hi"]}), "d", 3)


# Printed summary columns: (column, header, digits).
PRINTED = (("psnr", "PSNR dB", 2), ("ssim", "SSIM", 3), ("sam_deg", "SAM deg", 2),
           ("structure_r", "structure_r", 3), ("sharpness", "sharpness", 2), ("sar_edge", "SAR-edge", 3),
           ("sar_edge_gap", "|SAR-edge - real|", 3), ("uncertainty_spearman", "uncertainty-error r_s", 3))
SUBSET_TITLES = {"clear": "clear tiles (clear_land; the headline)", "cloudy": "other tiles (not clear_land: cloud, snow or open water)",
                 "all": "all tiles"}


def format_summary(summary: pd.DataFrame, meta: dict, paired: pd.DataFrame | None = None) -> str:
    """The summary as plain-text tables per subset, the SAR-edge ceiling, and the headline paired differences."""
    bootstrap = meta.get("bootstrap", {})
    lines = [(f"{meta['preset_label']} on {meta['n_tiles']} tile(s) ({meta['split']}), bands {meta['bands']}; "
              f"95% intervals: bootstrap over {bootstrap.get('unit', 'tiles')}")]
    if meta.get("uncertainty"):
        lines.append(f"uncertainty-error r_s: per tile, Spearman between the std map over {meta['uncertainty']} "
                     "and |error| of the 4-band mean (v1, v1+v2: the opt_v1, opt_v2 maps of the full chain)")
    if "subset" not in summary.columns:  # results written before subsets existed
        summary = summary.assign(subset="all")
    ceilings = meta.get("sar_edge_ceiling_by_subset") or {"all": meta["sar_edge_ceiling"]}
    for subset, rows in summary.groupby("subset", sort=False):
        if not (rows["n"] > 0).any():
            continue
        n_clusters = f", {int(rows['n_clusters'].max())} scene cluster(s)" if "n_clusters" in rows else ""
        lines += ["", f"{SUBSET_TITLES.get(subset, subset)}: {int(rows['n'].max())} tile(s){n_clusters}",
                  f"{'variant':<16}{'n':>4}  " + "".join(f"{header:<24}" for _, header, _ in PRINTED)]
        for _, row in rows.iterrows():
            cells = [_interval(row, metric, digits) for metric, _, digits in PRINTED]
            line = f"{row['variant']:<16}{row['n']:>4}  " + "".join(f"{cell:<24}" for cell in cells)
            lines.append((line + (f"  {row['note']}" if row["note"] else "")).rstrip())
        ceiling = ceilings.get(subset) or {}
        if ceiling.get("mean") is None:
            lines.append("SAR-edge of the real optical (reference): undefined on every tile")
        else:
            bounds = (f" [{ceiling['lo']:.3f}, {ceiling['hi']:.3f}]" if ceiling.get("lo") is not None
                      and ceiling.get("hi") is not None else "")
            lines.append(f"SAR-edge of the real optical (reference): {ceiling['mean']:.3f}{bounds}")
    if paired is not None and not paired.empty:
        headline = meta.get("headline_subset", "clear")
        rows = paired[paired["subset"] == headline]
        if not (rows["n"] > 0).any():
            rows = paired[paired["subset"] == "all"]
            headline = "all"
        lines += ["", f"Paired differences a - b, mean over {headline} tiles [95% interval]:",
                  f"{'comparison':<44}" + "".join(f"{metric:<24}" for metric in rows["metric"].unique())]
        for (comparison, b), group in rows.groupby(["comparison", "b"], sort=False, dropna=False):
            cells = [_difference(row) for _, row in group.iterrows()]
            label = comparison if not isinstance(b, str) or b in comparison else f"{comparison} ({b})"
            notes = sorted({note for note in group["note"] if note})
            lines.append((f"{label:<44}" + "".join(f"{cell:<24}" for cell in cells)
                          + (f"  {'; '.join(notes)}" if notes else "")).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here so `--help` is instant.
    from eval.ablation import run_ablation
    from gac_pipeline.io import InputError

    try:
        result = run_ablation(args.data, args.preset, args.out, seed=args.seed, bootstrap=args.bootstrap,
                              max_tiles=args.max_tiles, uncertainty=args.uncertainty, progress=not args.no_progress)
    except (InputError, ValueError, FileNotFoundError, RuntimeError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    print(format_summary(result.summary, result.meta, result.paired))
    print(f"wrote {args.out / 'summary.csv'}, per_tile.csv, paired.csv and meta.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
