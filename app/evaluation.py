"""The Evaluation tab's logic without Gradio: read the ablation results, build the tables and charts.

The tab shows the results committed under ``eval/results/`` (written by
``python -m eval``); opening the page never runs a model. The files are read here with pandas
rather than through ``eval.ablation`` so that the app can display results even where the
evaluation code is absent; ``eval.ablation.run_ablation`` is imported only to re-run.

Files (see ``eval/ablation.py``): ``summary.csv`` (per tile subset and variant: mean and 95%
scene-cluster bootstrap interval per metric, ``n`` = 0 and a ``note`` for a variant that could
not run), ``per_tile.csv`` (one row per variant and tile), ``paired.csv`` (per subset, the
mean per-tile difference between two variants with its interval) and ``meta.json`` (what was
evaluated). The subsets are ``clear`` (``clear_land`` tiles: the headline), ``cloudy`` (the others: cloud, snow
or open water; named for the usual cause) and ``all``. Results written before subsets, the structure metrics or ``paired.csv`` existed still
load: their rows count as subset ``all``, absent metrics show as n/a and the paired table is
empty with a note.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.handlers import OUTPUT_PREFIX, AppError, cleanup_old_outputs, one_line, provenance_markdown
from gac_pipeline.data import DEFAULT_DATA_DIR
from gac_pipeline.presets import DEFAULT_PRESET

RESULTS_DIR = Path(__file__).resolve().parent.parent / "eval" / "results"
RESULT_FILES = ("summary.csv", "per_tile.csv", "paired.csv", "meta.json")
OPTIONAL_FILES = ("paired.csv",)  # absent from results written before it existed
REQUIRED_FILES = tuple(name for name in RESULT_FILES if name not in OPTIONAL_FILES)
CREATE_COMMAND = "python -m eval --data data/bigearthnet --preset mini --out eval/results"
RERUN_PREFIX = f"{OUTPUT_PREFIX}eval_"  # under the app's prefix: old re-runs are cleaned like outputs

# Variants of the pipeline itself; every other row (baselines, the one-network control) is a yardstick.
MODEL_VARIANTS = ("v1", "v1+v2", "v1+v3", "v1+v2+v3")
GROUPS = {"baseline / control": "#9e9e9e", "GAC stages": "#3b6fb6"}
CEILING_COLOUR = "#2e8b57"

# Tile subsets: value -> label; the first with tiles is the headline.
SUBSETS = {"clear": "clear tiles (clear_land; headline)", "cloudy": "other tiles (cloud, snow or open water)", "all": "all tiles"}
LEGACY_SUBSET = "all"  # what the rows of results without a subset column are

# Summary metric -> (label, which direction is better, digits shown). SAR-edge is best close to the
# real optical's own score: SAR-derived images can exceed it by copying SAR structure. Sharpness
# is best near 1 (as sharp as the real tile): below is blur, above invented texture.
METRICS = {
    "psnr": ("PSNR (dB)", "higher", 2),
    "ssim": ("SSIM", "higher", 3),
    "sam_deg": ("SAM (deg)", "lower", 2),
    "structure_r": ("structure r", "higher", 3),
    "edge_r": ("edge r", "higher", 3),
    "sharpness": ("sharpness", "one", 3),
    "sar_edge": ("SAR-edge", "real", 3),  # best near the real optical's score, not above it
    "sar_edge_gap": ("|SAR-edge − real|", "lower", 3),
    "lpips": ("LPIPS", "lower", 3),
    # Spearman r of the per-pixel uncertainty (std over 8 test-time variants) with |error|: does the
    # map point at the wrong pixels? Measured for v1, v1+v2 and v1+v2+v3 only (n/a elsewhere).
    "uncertainty_spearman": ("uncertainty-error r_s", "higher", 3),
}
ARROWS = {"higher": "↑", "lower": "↓", "real": "(≈ real optical)", "one": "(1 = as sharp as real)"}
# Metrics every summary.csv has; the others were added later and may be absent (shown n/a).
CORE_METRICS = ("psnr", "ssim", "sam_deg", "sar_edge", "lpips")
CHART_METRICS = ("psnr", "ssim", "sam_deg", "sar_edge")
# Per-tile columns offered in the distribution chart: column -> label.
TILE_METRICS = {
    **{metric: label for metric, (label, _, _) in METRICS.items()},
    "psnr_12": "PSNR (dB), 12 bands",
    "ssim_12": "SSIM, 12 bands",
    "sam_deg_12": "SAM (deg), 12 bands",
}
LATER_TILE_METRICS = ("structure_r", "edge_r", "sharpness", "sar_edge_gap", "uncertainty_spearman")  # may be absent
SUMMARY_COLUMNS = ("variant", "n", *(f"{m}{s}" for m in CORE_METRICS for s in ("", "_lo", "_hi")), "note")
PER_TILE_COLUMNS = ("variant", "tile", *(metric for metric in TILE_METRICS if metric not in LATER_TILE_METRICS))
PAIRED_COLUMNS = ("subset", "comparison", "a", "b", "metric", "n", "n_clusters", "mean_diff", "lo", "hi", "note")
# Paired metrics as shown: metric -> column header (a positive difference means a is higher).
PAIRED_METRICS = {
    "psnr": "Δ PSNR (dB) ↑",
    "ssim": "Δ SSIM ↑",
    "structure_r": "Δ structure r ↑",
    "sharpness": "Δ sharpness (real = 1)",
    "sar_edge_gap": "Δ |SAR-edge − real| ↓",
}


@dataclass
class EvalResults:
    """The result files of one evaluation run, and the folder they came from.

    ``summary`` always has ``subset`` and every ``METRICS`` column (NaN where the file had
    none); ``paired`` is empty when the folder has no ``paired.csv``.
    """

    summary: pd.DataFrame
    per_tile: pd.DataFrame
    meta: dict
    directory: Path
    paired: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIRED_COLUMNS))


@dataclass
class EvaluationView:
    """What the tab shows: a description, the tables and the charts (None when there are no results)."""

    markdown: str
    table: pd.DataFrame | None
    figures: dict[str, go.Figure] | None
    per_tile: go.Figure | None
    directory: str | None
    paired: pd.DataFrame | None = None
    scatter: go.Figure | None = None
    subset: str | None = None  # the subset on show
    subsets: list[str] = field(default_factory=list)  # the subsets the results have


def group_of(variant: str) -> str:
    """The table/chart group of a variant: the pipeline's stage subsets or the yardsticks."""
    return "GAC stages" if variant in MODEL_VARIANTS else "baseline / control"


def missing_files(directory: str | Path) -> list[str]:
    """The required result files absent from ``directory`` (all of them when it does not exist)."""
    return [name for name in REQUIRED_FILES if not (Path(directory) / name).is_file()]


def load_results(directory: str | Path = RESULTS_DIR) -> EvalResults:
    """Read ``summary.csv``, ``per_tile.csv``, ``meta.json`` and, when present, ``paired.csv`` from ``directory``.

    Raises:
        FileNotFoundError: a required file is missing (the message names it).
        ValueError: a file lacks required columns or is not valid JSON/CSV.
    """
    directory = Path(directory)
    missing = missing_files(directory)
    if missing:
        raise FileNotFoundError(f"{directory}: missing {', '.join(missing)}")
    summary = pd.read_csv(directory / "summary.csv", dtype={"variant": str, "subset": str})
    per_tile = pd.read_csv(directory / "per_tile.csv", dtype={"variant": str, "tile": str})
    paired = pd.DataFrame(columns=PAIRED_COLUMNS)
    if (directory / "paired.csv").is_file():
        paired = pd.read_csv(directory / "paired.csv", dtype={"subset": str, "comparison": str, "a": str, "b": str,
                                                               "metric": str, "note": str})
    for name, frame, required in (("summary.csv", summary, SUMMARY_COLUMNS),
                                  ("per_tile.csv", per_tile, PER_TILE_COLUMNS),
                                  ("paired.csv", paired, PAIRED_COLUMNS)):
        absent = [column for column in required if column not in frame.columns]
        if absent:
            raise ValueError(f"{directory / name}: missing columns {', '.join(absent)}")
    if "subset" not in summary.columns:  # written before subsets existed: every row is over all tiles
        summary.insert(0, "subset", LEGACY_SUBSET)
    for metric in METRICS:
        for column in (metric, f"{metric}_lo", f"{metric}_hi"):
            if column not in summary.columns:
                summary[column] = np.nan
    summary["note"] = summary["note"].fillna("").astype(str)
    paired["note"] = paired["note"].fillna("").astype(str)
    meta = json.loads((directory / "meta.json").read_text())
    return EvalResults(summary=summary, per_tile=per_tile, meta=meta, directory=directory, paired=paired)


def subsets_of(summary: pd.DataFrame) -> list[str]:
    """The subsets ``summary`` has rows for, in ``SUBSETS`` order (others after)."""
    present = list(dict.fromkeys(summary["subset"])) if "subset" in summary.columns else [LEGACY_SUBSET]
    return [subset for subset in SUBSETS if subset in present] + [s for s in present if s not in SUBSETS]


def headline_subset(summary: pd.DataFrame) -> str:
    """The subset shown first: the first of ``SUBSETS`` (clear first) with tiles, else the first present."""
    subsets = subsets_of(summary)
    for subset in subsets:
        if "subset" not in summary.columns or (summary.loc[summary["subset"] == subset, "n"] > 0).any():
            return subset
    return subsets[0] if subsets else LEGACY_SUBSET


def subset_summary(summary: pd.DataFrame, subset: str | None = None) -> pd.DataFrame:
    """The summary rows of ``subset`` (default: the headline)."""
    if "subset" not in summary.columns:
        return summary
    subset = subset or headline_subset(summary)
    return summary[summary["subset"] == subset]


def subset_tiles(per_tile: pd.DataFrame, subset: str | None) -> pd.DataFrame:
    """The per-tile rows of ``subset``: clear (clear_land true), cloudy (false) or all (None: all)."""
    if subset in (None, "all") or "clear_land" not in per_tile.columns:
        return per_tile
    flag = per_tile["clear_land"].map(lambda value: value if isinstance(value, bool | np.bool_) else
                                      {"true": True, "false": False}.get(str(value).strip().lower()))
    return per_tile[flag == (subset == "clear")]


def ceiling_of(meta: dict, subset: str | None) -> dict | None:
    """The real optical's SAR-edge score {mean, lo, hi} on ``subset`` (over all tiles for older results)."""
    by_subset = meta.get("sar_edge_ceiling_by_subset") or {}
    return by_subset.get(subset) or meta.get("sar_edge_ceiling")


# ----------------------------------------------------------------------------- table


def _finite(value) -> bool:
    return value is not None and isinstance(value, int | float | np.number) and math.isfinite(value)


def _interval(row: pd.Series, metric: str, digits: int) -> str:
    """"mean [lo, hi]", the mean alone without an interval, or "n/a"."""
    mean, lo, hi = row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"]
    if not _finite(mean):
        return "n/a"
    if not (_finite(lo) and _finite(hi)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _ordered(summary: pd.DataFrame) -> pd.DataFrame:
    """Yardsticks first, then the stage subsets, each in file order."""
    rank = summary["variant"].map(lambda variant: list(GROUPS).index(group_of(variant)))
    return summary.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank")


def _count(value) -> int | str:
    return int(value) if _finite(value) else "?"


def results_table(summary: pd.DataFrame, subset: str | None = None) -> pd.DataFrame:
    """The ablation table of one subset (default: the headline) for display.

    Columns: group, variant, n (tiles), clusters (scene clusters), "mean [lo, hi]" per metric, note.
    """
    rows = []
    for _, row in _ordered(subset_summary(summary, subset)).iterrows():
        cells = [_interval(row, metric, digits) for metric, (_, _, digits) in METRICS.items()]
        rows.append([group_of(row["variant"]), row["variant"], int(row["n"]), _count(row.get("n_clusters")), *cells,
                     row["note"]])
    labels = [f"{label} {ARROWS[better]}" for label, better, _ in METRICS.values()]
    return pd.DataFrame(rows, columns=["group", "variant", "n", "clusters", *labels, "note"], dtype=object)


def paired_table(paired: pd.DataFrame, subset: str | None = None) -> pd.DataFrame:
    """The paired differences of one subset (all subsets' rows when ``subset`` is None), one row per comparison.

    Columns: comparison (the chosen baseline named), "mean [lo, hi]" of a - b per metric in
    ``PAIRED_METRICS``, n (tiles), clusters, note. A comparison that could not be made shows
    n/a and its note. Empty (one explanatory row) for results without ``paired.csv``.
    """
    columns = ["comparison", *PAIRED_METRICS.values(), "n", "clusters", "note"]
    rows = paired if subset is None else paired[paired["subset"] == subset]
    if rows.empty:
        note = ("no paired differences in these results (written before paired.csv existed): re-run the evaluation"
                if paired.empty else f"no paired differences for the {subset} subset")
        return pd.DataFrame([["n/a", *["n/a"] * len(PAIRED_METRICS), 0, 0, note]], columns=columns, dtype=object)
    table = []
    for (comparison, b), group in rows.groupby(["comparison", "b"], sort=False, dropna=False):
        by_metric = group.set_index("metric")
        cells = [_interval(by_metric.loc[metric].rename({"mean_diff": "d", "lo": "d_lo", "hi": "d_hi"}), "d",
                           METRICS[metric][2]) if metric in by_metric.index else "n/a" for metric in PAIRED_METRICS]
        label = comparison if not isinstance(b, str) or b in comparison else f"{comparison} ({b})"
        notes = "; ".join(dict.fromkeys(note for note in group["note"] if note))
        table.append([label, *cells, int(group["n"].max()), int(group["n_clusters"].max()), notes])
    return pd.DataFrame(table, columns=columns, dtype=object)


# ----------------------------------------------------------------------------- charts


def metric_figure(summary: pd.DataFrame, metric: str, ceiling: dict | None = None,
                  subset: str | None = None) -> go.Figure:
    """Bars of one metric's mean per variant with asymmetric error bars from the interval, on one subset.

    Yardsticks and stage subsets are separate traces (colours, legend); a variant that did not
    run is labelled so on the axis. ``ceiling`` ({mean, lo, hi}, the SAR-edge score of the real
    optical) is drawn as a horizontal line with its interval as a band. ``subset`` defaults to
    the headline.
    """
    label, better, digits = METRICS[metric]
    summary = _ordered(subset_summary(summary, subset))
    figure = go.Figure()
    for group, colour in GROUPS.items():
        rows = summary[summary["variant"].map(group_of) == group]
        if rows.empty:
            continue
        mean = rows[metric].astype(float)
        figure.add_trace(go.Bar(
            name=group, x=list(rows["variant"]), y=mean.tolist(), marker_color=colour,
            error_y={"type": "data", "symmetric": False, "array": (rows[f"{metric}_hi"] - mean).tolist(),
                     "arrayminus": (mean - rows[f"{metric}_lo"]).tolist()},
            customdata=np.stack([rows[f"{metric}_lo"], rows[f"{metric}_hi"], rows["n"]], axis=-1),
            hovertemplate=(f"%{{x}}: %{{y:.{digits}f}} [%{{customdata[0]:.{digits}f}}, "
                           f"%{{customdata[1]:.{digits}f}}], n=%{{customdata[2]}}<extra></extra>"),
        ))
    variants = list(summary["variant"])
    ticks = [variant if n > 0 else f"{variant}<br>(not run)" for variant, n in zip(variants, summary["n"], strict=True)]
    if ceiling and _finite(ceiling.get("mean")):
        figure.add_hline(y=ceiling["mean"], line_dash="dash", line_color=CEILING_COLOUR,
                         annotation_text=f"real optical (reference) {ceiling['mean']:.{digits}f}",
                         annotation_position="top left")
        if _finite(ceiling.get("lo")) and _finite(ceiling.get("hi")):
            figure.add_hrect(y0=ceiling["lo"], y1=ceiling["hi"], fillcolor=CEILING_COLOUR, opacity=0.12,
                             line_width=0)
    figure.update_layout(
        title=f"{label} ({better} is better)", yaxis_title=label, height=340, bargap=0.3,
        xaxis={"categoryorder": "array", "categoryarray": variants, "tickmode": "array", "tickvals": variants,
               "ticktext": ticks},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
        margin={"l": 50, "r": 20, "t": 60, "b": 40},
    )
    return figure


def metric_figures(results: EvalResults, subset: str | None = None) -> dict[str, go.Figure]:
    """One bar chart per metric in ``CHART_METRICS`` on one subset; SAR-edge carries the real optical's ceiling."""
    subset = subset or headline_subset(results.summary)
    ceiling = ceiling_of(results.meta, subset)
    return {metric: metric_figure(results.summary, metric, ceiling if metric == "sar_edge" else None, subset)
            for metric in CHART_METRICS}


def scatter_figure(summary: pd.DataFrame, subset: str | None = None) -> go.Figure:
    """Every variant with scores on one subset: mean PSNR (x) against mean sharpness (y), with both intervals.

    Yardsticks and stage subsets are separate traces; the hover adds structure r with its
    interval, n and the cluster count. A dashed line marks sharpness 1 (as sharp as the real
    tiles). Results without sharpness get an empty chart that says so.
    """
    summary = _ordered(subset_summary(summary, subset))
    figure = go.Figure()
    shown = summary[np.isfinite(summary["psnr"].astype(float)) & np.isfinite(summary["sharpness"].astype(float))]
    for group, colour in GROUPS.items():
        rows = shown[shown["variant"].map(group_of) == group]
        if rows.empty:
            continue
        x, y = rows["psnr"].astype(float), rows["sharpness"].astype(float)
        hover = [f"<b>{row['variant']}</b><br>PSNR {_interval(row, 'psnr', 2)} dB<br>"
                 f"sharpness {_interval(row, 'sharpness', 3)}<br>structure r {_interval(row, 'structure_r', 3)}<br>"
                 f"n = {int(row['n'])} tiles, {_count(row.get('n_clusters'))} clusters" for _, row in rows.iterrows()]
        figure.add_trace(go.Scatter(
            name=group, x=x.tolist(), y=y.tolist(), mode="markers+text", text=list(rows["variant"]),
            textposition="top center", marker={"color": colour, "size": 11}, hovertext=hover, hoverinfo="text",
            error_x={"type": "data", "symmetric": False, "array": (rows["psnr_hi"] - x).tolist(),
                     "arrayminus": (x - rows["psnr_lo"]).tolist(), "thickness": 1},
            error_y={"type": "data", "symmetric": False, "array": (rows["sharpness_hi"] - y).tolist(),
                     "arrayminus": (y - rows["sharpness_lo"]).tolist(), "thickness": 1},
        ))
    if figure.data:
        figure.add_hline(y=1.0, line_dash="dash", line_color=CEILING_COLOUR,
                         annotation_text="as sharp as the real tile (1)", annotation_position="top left")
    else:
        figure.add_annotation(text="no variant has both PSNR and sharpness in these results "
                                   "(re-run the evaluation to compute sharpness)",
                              showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    figure.update_layout(
        title="PSNR against sharpness (hover: structure r); bars are 95% intervals",
        xaxis_title="PSNR (dB) →  closer to the real tile", yaxis_title="sharpness (1 = as sharp as real)",
        height=420, legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    return figure


def per_tile_figure(per_tile: pd.DataFrame, metric: str, variants: list[str] | None = None,
                    subset: str | None = None) -> go.Figure:
    """Box plot with every tile as a point, one box per variant, for one per-tile metric.

    For SAR-edge the real optical's per-tile score (``sar_edge_reference``, the ceiling) is an
    extra box. Infinite values (PSNR of a prediction equal to its target) cannot be drawn and
    are left out; the title says how many. ``subset`` (clear, cloudy, all) picks the tiles by
    ``clear_land``; None draws every tile.
    """
    if metric not in TILE_METRICS:
        raise AppError(f"unknown metric '{metric}'; choose one of {', '.join(TILE_METRICS)}")
    label = TILE_METRICS[metric]
    if metric not in per_tile.columns:  # a metric added after these results were written
        figure = go.Figure()
        figure.add_annotation(text=f"{label} is not in these results (re-run the evaluation)", showarrow=False,
                              xref="paper", yref="paper", x=0.5, y=0.5)
        figure.update_layout(title=f"Per-tile {label}", height=380)
        return figure
    variants = variants or list(dict.fromkeys(per_tile["variant"]))
    per_tile = subset_tiles(per_tile, subset)
    boxes = [(variant, per_tile[per_tile["variant"] == variant], GROUPS[group_of(variant)]) for variant in variants]
    if metric == "sar_edge" and "sar_edge_reference" in per_tile.columns:
        reference = per_tile.drop_duplicates("tile")[["tile", "sar_edge_reference"]]
        reference = reference.rename(columns={"sar_edge_reference": "sar_edge"})
        boxes.append(("real optical (reference)", reference, CEILING_COLOUR))
    figure, left_out = go.Figure(), 0
    for name, rows, colour in boxes:
        values = rows[metric].astype(float)
        left_out += int(np.isinf(values).sum())
        keep = np.isfinite(values)
        if not keep.any():
            continue
        figure.add_trace(go.Box(
            y=values[keep].tolist(), name=name, text=rows["tile"][keep].tolist(), marker_color=colour,
            boxpoints="all", jitter=0.4, pointpos=0, showlegend=False,
            hovertemplate="%{text}: %{y:.3f}<extra>%{x}</extra>",
        ))
    title = f"Per-tile {label}" + (f" ({subset} tiles)" if subset else "")
    if left_out:
        title += f" ({left_out} infinite value(s) left out)"
    if not figure.data:
        figure.add_annotation(text=f"no finite per-tile values for {label}", showarrow=False,
                              xref="paper", yref="paper", x=0.5, y=0.5)
    figure.update_layout(title=title, yaxis_title=label, height=380, margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return figure


# ----------------------------------------------------------------------------- text


def describe(results: EvalResults, *, rerun: bool = False) -> str:
    """What was evaluated, how the intervals were made, and a loud warning for untrained weights."""
    meta, lines = results.meta, []
    preset = meta.get("preset", "?")
    if not meta.get("trained", False):
        lines.append(f"### ⚠️ These numbers are for an untrained model\nPreset `{preset}` has random weights: "
                     "the table shows that the evaluation runs end to end, not how well GAC translates.")
    state = "trained" if meta.get("trained", False) else "**untrained**"
    lines.append(f"**Evaluated:** {meta.get('n_tiles', '?')} tile(s) ({meta.get('split', 'split unknown')}) of "
                 f"`{meta.get('data_dir', '?')}` · preset `{preset}`, {state} · "
                 f"PSNR/SSIM/SAM/LPIPS on bands {meta.get('bands', '?')} · seed {meta.get('seed', '?')}")
    lines.append(provenance_markdown(meta.get("preset_description")))
    bootstrap = meta.get("bootstrap") or {}
    if bootstrap:
        unit = bootstrap.get("unit", "tiles")
        how = (" (whole clusters of touching patches of one scene are drawn with replacement: neighbouring "
               "patches are not independent evidence)" if unit != "tiles" else "")
        lines.append(f"Intervals: {100 * float(bootstrap.get('ci', 0.95)):.0f}% percentile bootstrap over {unit}"
                     f"{how}, {bootstrap.get('samples', '?')} resamples, seed {bootstrap.get('seed', '?')}.")
    counts = bootstrap.get("subsets") or {}
    if counts:
        lines.append("Subsets: " + " · ".join(
            f"{subset}: {counts[subset].get('tiles', '?')} tile(s) in {counts[subset].get('clusters', '?')} "
            f"scene cluster(s)" for subset in SUBSETS if subset in counts)
            + ". Clear tiles (`clear_land`: no cloud, snow or much water) are the headline; the others are "
              "reported apart.")
    references = meta.get("references_source")
    lines.append(f"Baselines and control: {references}." if references
                 else "Baselines and control: none stored with this preset (rows with n = 0; see their note).")
    subset = headline_subset(results.summary)
    ceiling = ceiling_of(meta, subset) or {}
    if _finite(ceiling.get("mean")):
        interval = (f" [{ceiling['lo']:.3f}, {ceiling['hi']:.3f}]"
                    if _finite(ceiling.get("lo")) and _finite(ceiling.get("hi")) else "")
        lines.append(f"SAR-edge of the real optical tiles ({subset}): {ceiling['mean']:.3f}{interval}. A realistic "
                     "image scores about this; far above it means SAR structure copied into the optical.")
    lines.append("structure r: correlation of the prediction's and the real tile's luminance (does it draw the "
                 "scene); edge r: the same for their edge maps; sharpness: the prediction's gradient energy over the "
                 "real tile's (1 = as sharp, below = blurred, above = invented texture).")
    if meta.get("lpips_reason"):
        lines.append(f"LPIPS n/a: {meta['lpips_reason']}")
    if meta.get("uncertainty"):
        lines.append(f"uncertainty-error r_s: Spearman correlation over pixels of the per-pixel uncertainty (std over "
                     f"{meta['uncertainty']}) with |error|; 1 = the map ranks the wrong pixels first. Measured for v1, "
                     "v1+v2 and v1+v2+v3 only (n/a elsewhere).")
    if rerun:
        lines.append(f"Re-run in this session into `{results.directory}` (the committed results are unchanged). "
                     f"Equivalent command: `{meta.get('command', '?')}`")
    else:
        lines.append(f"Source: `{results.directory}`, created {meta.get('created', '?')} by "
                     f"`{meta.get('command', '?')}`")
    return "\n\n".join(lines)


def missing_note(directory: str | Path, reason: str) -> str:
    """Why there is nothing to show and the command that creates the results."""
    return (f"### No evaluation results to show\n`{directory}`: {reason}.\n\nCreate them with\n\n"
            f"```\n{CREATE_COMMAND}\n```\n\nor press *Re-run evaluation on the bundled test pairs* below "
            "(results go to a temporary folder).")


# ----------------------------------------------------------------------------- view


def build_view(directory: str | Path = RESULTS_DIR, *, per_tile_metric: str = "psnr",
               subset: str | None = None) -> EvaluationView:
    """What the tab shows for the results in ``directory`` (``subset`` defaults to the headline);
    a note instead when they are missing or unreadable."""
    missing = missing_files(directory)
    if missing:
        return EvaluationView(missing_note(directory, f"no results (missing {', '.join(missing)})"),
                              None, None, None, None)
    try:
        results = load_results(directory)
    except (ValueError, OSError) as error:  # a bad CSV/JSON: say so, keep the app serving
        return EvaluationView(missing_note(directory, f"unreadable results ({one_line(error)})"),
                              None, None, None, None)
    return view_of(results, per_tile_metric=per_tile_metric, subset=subset)


def _variants(summary: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(_ordered(summary)["variant"]))


def view_of(results: EvalResults, *, per_tile_metric: str = "psnr", rerun: bool = False,
            subset: str | None = None) -> EvaluationView:
    """Description, tables and charts of loaded results on one subset (default: the headline);
    ``rerun`` marks results made in this session.

    Raises:
        AppError: ``subset`` is not in the results.
    """
    subsets = subsets_of(results.summary)
    subset = subset or headline_subset(results.summary)
    if subset not in subsets:
        raise AppError(f"no '{subset}' subset in these results; choose one of {', '.join(subsets)}")
    return EvaluationView(
        markdown=describe(results, rerun=rerun),
        table=results_table(results.summary, subset),
        figures=metric_figures(results, subset),
        per_tile=per_tile_figure(results.per_tile, per_tile_metric, _variants(results.summary), subset),
        directory=str(results.directory),
        paired=paired_table(results.paired, subset),
        scatter=scatter_figure(results.summary, subset),
        subset=subset,
        subsets=subsets,
    )


def _load(directory: str) -> EvalResults:
    try:
        return load_results(directory)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise AppError(f"cannot read the evaluation results: {one_line(error)}") from None


def subset_view(directory: str | None, subset: str, per_tile_metric: str = "psnr") -> EvaluationView | None:
    """The view of the results in ``directory`` on another subset (None without results)."""
    if not directory:
        return None
    return view_of(_load(directory), per_tile_metric=per_tile_metric, subset=subset)


def per_tile_view(directory: str | None, metric: str, subset: str | None = None) -> go.Figure | None:
    """The distribution chart of ``metric`` on ``subset`` for the results in ``directory`` (None without results)."""
    if not directory:
        return None
    results = _load(directory)
    return per_tile_figure(results.per_tile, metric, _variants(results.summary), subset)


def rerun(out_dir: str | Path | None = None, *, data_dir: str | Path = DEFAULT_DATA_DIR,
          preset: str = DEFAULT_PRESET, bootstrap: int = 2000, max_tiles: int | None = None) -> EvalResults:
    """Re-run the ablation on the bundled test pairs into a fresh folder and read it back.

    The committed ``eval/results/`` is never written: the default is a new temporary folder
    (cleaned after an hour with the app's other outputs). ``run_ablation`` shows a tqdm bar
    over tiles, which the UI follows.

    Raises:
        AppError: the evaluation code is not installed, or ``out_dir`` is the committed folder.
    """
    try:
        from eval.ablation import run_ablation  # heavy and optional: only when asked
    except ModuleNotFoundError as error:
        if error.name not in ("eval", "eval.ablation"):
            raise
        raise AppError("re-running needs the evaluation code (eval/ablation.py), which is not installed here") from None
    if out_dir is None:
        cleanup_old_outputs()
        out_dir = tempfile.mkdtemp(prefix=RERUN_PREFIX)
    out_dir = Path(out_dir)
    if out_dir.resolve() == RESULTS_DIR.resolve():
        raise AppError(f"refusing to overwrite the committed results in {RESULTS_DIR}")
    run_ablation(data_dir, preset=preset, out_dir=out_dir, bootstrap=bootstrap, max_tiles=max_tiles, progress=True)
    return load_results(out_dir)
