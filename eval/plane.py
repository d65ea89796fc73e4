"""``python -m eval.plane --out plane.png``: every variant on the PSNR-sharpness plane.

PSNR (x) rewards the right colour and blur; sharpness (y, 1 = as sharp as the real tile)
rewards texture. A regression sits low on the plane, a stage that restores texture moves up,
usually a little left (the perception-distortion trade-off). Each point is a variant's mean
over the chosen subset of ``summary.csv`` with its cluster-bootstrap intervals as error bars,
labelled with its structure_r (does it draw the scene). The app's Evaluation tab shows the
same plane interactively.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COLOURS = {"mean_baseline": "#888888", "linear_baseline": "#888888", "v1+unsharp": "#888888", "unet_control": "#d62728"}


def render_plane(out: str | Path, results: str | Path = RESULTS_DIR, subset: str = "clear") -> Path:
    """Draw ``summary.csv``'s ``subset`` rows on the PSNR-sharpness plane and save the PNG.

    Raises:
        FileNotFoundError: no ``summary.csv`` in ``results``.
        ValueError: the subset has no variant with both scores.
    """
    from matplotlib.figure import Figure

    path = Path(results) / "summary.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run python -m eval first)")
    summary = pd.read_csv(path)
    rows = summary[(summary["subset"] == subset) & summary["psnr"].notna() & summary["sharpness"].notna()]
    if rows.empty:
        raise ValueError(f"{path}: no {subset} variant with PSNR and sharpness")
    figure = Figure(figsize=(7.5, 5.0), dpi=100, facecolor="white")
    axes = figure.add_subplot()
    for _, row in rows.iterrows():
        x, y = row["psnr"], row["sharpness"]
        xerr = [[x - row["psnr_lo"]], [row["psnr_hi"] - x]] if pd.notna(row["psnr_lo"]) else None
        yerr = [[y - row["sharpness_lo"]], [row["sharpness_hi"] - y]] if pd.notna(row["sharpness_lo"]) else None
        colour = COLOURS.get(row["variant"], "#1f77b4")
        axes.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=colour, ecolor=colour, alpha=0.8, capsize=3)
        axes.annotate(f"{row['variant']}  r={row['structure_r']:.2f}", (x, y), textcoords="offset points",
                      xytext=(6, 6), fontsize=8)
    axes.axhline(1.0, color="#2ca02c", linestyle="--", linewidth=1)
    axes.text(axes.get_xlim()[0], 1.0, " real tiles: sharpness 1", va="bottom", fontsize=8, color="#2ca02c")
    axes.set_xlabel("PSNR (dB, B02/B03/B04/B08; higher: closer per pixel)")
    axes.set_ylabel("sharpness (gradient energy / real tile's)")
    axes.set_title(f"{subset} test tiles: mean and 95% cluster-bootstrap intervals; r = structure_r", fontsize=9)
    axes.grid(alpha=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, format="png", metadata={"Software": None})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.plane", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder with summary.csv")
    parser.add_argument("--subset", default="clear", choices=("clear", "cloudy", "all"))
    args = parser.parse_args(argv)
    try:
        out = render_plane(args.out, args.results, args.subset)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
