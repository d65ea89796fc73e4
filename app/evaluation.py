"""The Evaluation tab's logic without Gradio: read the ablation results, build the table and charts.

The tab shows the results committed under ``eval/results/`` (written by
``python -m eval``); opening the page never runs a model. The files are read here with pandas
rather than through ``eval.ablation`` so that the app can display results even where the
evaluation code is absent; ``eval.ablation.run_ablation`` is imported only to re-run.

Files (see ``eval/ablation.py``): ``summary.csv`` (one row per variant: mean and 95% bootstrap
interval per metric, ``n`` = 0 and a ``note`` for a variant that could not run),
``per_tile.csv`` (one row per variant and tile) and ``meta.json`` (what was evaluated).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.handlers import OUTPUT_PREFIX, AppError, cleanup_old_outputs, one_line, provenance_markdown
from gac_pipeline.data import DEFAULT_DATA_DIR
from gac_pipeline.presets import DEFAULT_PRESET

RESULTS_DIR = Path(__file__).resolve().parent.parent / "eval" / "results"
RESULT_FILES = ("summary.csv", "per_tile.csv", "meta.json")
CREATE_COMMAND = "python -m eval --data data/bigearthnet --preset mini --out eval/results"
RERUN_PREFIX = f"{OUTPUT_PREFIX}eval_"  # under the app's prefix: old re-runs are cleaned like outputs

# Variants of the pipeline itself; every other row (baselines, the one-network control) is a yardstick.
MODEL_VARIANTS = ("v1", "v1+v2", "v1+v3", "v1+v2+v3")
GROUPS = {"baseline / control": "#9e9e9e", "GAC stages": "#3b6fb6"}
CEILING_COLOUR = "#2e8b57"

# Summary metric -> (label, which direction is better, digits shown). SAR-edge is best close to the
# real optical's own score: SAR-derived images can exceed it by copying SAR structure.
METRICS = {
    "psnr": ("PSNR (dB)", "higher", 2),
    "ssim": ("SSIM", "higher", 3),
    "sam_deg": ("SAM (deg)", "lower", 2),
    "sar_edge": ("SAR-edge", "real", 3),  # best near the real optical's score, not above it
    "lpips": ("LPIPS", "lower", 3),
}
CHART_METRICS = ("psnr", "ssim", "sam_deg", "sar_edge")
# Per-tile columns offered in the distribution chart: column -> label.
TILE_METRICS = {
    **{metric: label for metric, (label, _, _) in METRICS.items()},
    "psnr_12": "PSNR (dB), 12 bands",
    "ssim_12": "SSIM, 12 bands",
    "sam_deg_12": "SAM (deg), 12 bands",
}
SUMMARY_COLUMNS = ("variant", "n", *(f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")), "note")
PER_TILE_COLUMNS = ("variant", "tile", *TILE_METRICS)


@dataclass
class EvalResults:
    """The three result files of one evaluation run, and the folder they came from."""

    summary: pd.DataFrame
    per_tile: pd.DataFrame
    meta: dict
    directory: Path


@dataclass
class EvaluationView:
    """What the tab shows: a description, the table and the charts (None when there are no results)."""

    markdown: str
    table: pd.DataFrame | None
    figures: dict[str, go.Figure] | None
    per_tile: go.Figure | None
    directory: str | None


def group_of(variant: str) -> str:
    """The table/chart group of a variant: the pipeline's stage subsets or the yardsticks."""
    return "GAC stages" if variant in MODEL_VARIANTS else "baseline / control"


def missing_files(directory: str | Path) -> list[str]:
    """The result files absent from ``directory`` (all of them when it does not exist)."""
    return [name for name in RESULT_FILES if not (Path(directory) / name).is_file()]


def load_results(directory: str | Path = RESULTS_DIR) -> EvalResults:
    """Read ``summary.csv``, ``per_tile.csv`` and ``meta.json`` from ``directory``.

    Raises:
        FileNotFoundError: a file is missing (the message names it).
        ValueError: a file lacks required columns or is not valid JSON/CSV.
    """
    directory = Path(directory)
    missing = missing_files(directory)
    if missing:
        raise FileNotFoundError(f"{directory}: missing {', '.join(missing)}")
    summary = pd.read_csv(directory / "summary.csv", dtype={"variant": str})
    per_tile = pd.read_csv(directory / "per_tile.csv", dtype={"variant": str, "tile": str})
    for name, frame, required in (("summary.csv", summary, SUMMARY_COLUMNS),
                                  ("per_tile.csv", per_tile, PER_TILE_COLUMNS)):
        absent = [column for column in required if column not in frame.columns]
        if absent:
            raise ValueError(f"{directory / name}: missing columns {', '.join(absent)}")
    summary["note"] = summary["note"].fillna("").astype(str)
    meta = json.loads((directory / "meta.json").read_text())
    return EvalResults(summary=summary, per_tile=per_tile, meta=meta, directory=directory)


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


def results_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The ablation table for display: group, variant, n, "mean [lo, hi]" per metric, note."""
    rows = []
    for _, row in _ordered(summary).iterrows():
        cells = [_interval(row, metric, digits) for metric, (_, _, digits) in METRICS.items()]
        rows.append([group_of(row["variant"]), row["variant"], int(row["n"]), *cells, row["note"]])
    arrows = {"higher": "↑", "lower": "↓", "real": "(≈ real optical)"}
    labels = [f"{label} {arrows[better]}" for label, better, _ in METRICS.values()]
    return pd.DataFrame(rows, columns=["group", "variant", "n", *labels, "note"], dtype=object)


# ----------------------------------------------------------------------------- charts


def metric_figure(summary: pd.DataFrame, metric: str, ceiling: dict | None = None) -> go.Figure:
    """Bars of one metric's mean per variant with asymmetric error bars from the interval.

    Yardsticks and stage subsets are separate traces (colours, legend); a variant that did not
    run is labelled so on the axis. ``ceiling`` ({mean, lo, hi}, the SAR-edge score of the real
    optical) is drawn as a horizontal line with its interval as a band.
    """
    label, better, digits = METRICS[metric]
    summary = _ordered(summary)
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


def metric_figures(results: EvalResults) -> dict[str, go.Figure]:
    """One bar chart per metric in ``CHART_METRICS``; SAR-edge carries the real optical's ceiling."""
    ceiling = results.meta.get("sar_edge_ceiling")
    return {metric: metric_figure(results.summary, metric, ceiling if metric == "sar_edge" else None)
            for metric in CHART_METRICS}


def per_tile_figure(per_tile: pd.DataFrame, metric: str, variants: list[str] | None = None) -> go.Figure:
    """Box plot with every tile as a point, one box per variant, for one per-tile metric.

    For SAR-edge the real optical's per-tile score (``sar_edge_reference``, the ceiling) is an
    extra box. Infinite values (PSNR of a prediction equal to its target) cannot be drawn and
    are left out; the title says how many.
    """
    if metric not in TILE_METRICS:
        raise AppError(f"unknown metric '{metric}'; choose one of {', '.join(TILE_METRICS)}")
    label = TILE_METRICS[metric]
    variants = variants or list(dict.fromkeys(per_tile["variant"]))
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
    title = f"Per-tile {label}"
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
        lines.append(f"Intervals: {100 * float(bootstrap.get('ci', 0.95)):.0f}% percentile bootstrap over tiles "
                     f"({bootstrap.get('samples', '?')} resamples, seed {bootstrap.get('seed', '?')}).")
    references = meta.get("references_source")
    lines.append(f"Baselines and control: {references}." if references
                 else "Baselines and control: none stored with this preset (rows with n = 0; see their note).")
    ceiling = meta.get("sar_edge_ceiling") or {}
    if _finite(ceiling.get("mean")):
        interval = (f" [{ceiling['lo']:.3f}, {ceiling['hi']:.3f}]"
                    if _finite(ceiling.get("lo")) and _finite(ceiling.get("hi")) else "")
        lines.append(f"SAR-edge of the real optical tiles: {ceiling['mean']:.3f}{interval}. A realistic image "
                     "scores about this; far above it means SAR structure copied into the optical.")
    if meta.get("lpips_reason"):
        lines.append(f"LPIPS n/a: {meta['lpips_reason']}")
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


def build_view(directory: str | Path = RESULTS_DIR, *, per_tile_metric: str = "psnr") -> EvaluationView:
    """What the tab shows for the results in ``directory``; a note instead when they are missing or unreadable."""
    missing = missing_files(directory)
    if missing:
        return EvaluationView(missing_note(directory, f"no results (missing {', '.join(missing)})"),
                              None, None, None, None)
    try:
        results = load_results(directory)
    except (ValueError, OSError) as error:  # a bad CSV/JSON: say so, keep the app serving
        return EvaluationView(missing_note(directory, f"unreadable results ({one_line(error)})"),
                              None, None, None, None)
    return view_of(results, per_tile_metric=per_tile_metric)


def view_of(results: EvalResults, *, per_tile_metric: str = "psnr", rerun: bool = False) -> EvaluationView:
    """Description, table and charts of loaded results; ``rerun`` marks results made in this session."""
    variants = list(_ordered(results.summary)["variant"])
    return EvaluationView(
        markdown=describe(results, rerun=rerun),
        table=results_table(results.summary),
        figures=metric_figures(results),
        per_tile=per_tile_figure(results.per_tile, per_tile_metric, variants),
        directory=str(results.directory),
    )


def per_tile_view(directory: str | None, metric: str) -> go.Figure | None:
    """The distribution chart of ``metric`` for the results in ``directory`` (None without results)."""
    if not directory:
        return None
    try:
        results = load_results(directory)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise AppError(f"cannot read the evaluation results: {one_line(error)}") from None
    return per_tile_figure(results.per_tile, metric, list(_ordered(results.summary)["variant"]))


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
