"""The ablation: what each stage adds, against baselines and a one-network control.

Every evaluation pair (the test split, or every pair of a folder without splits; pairs with cloud,
snow or open water included, flagged by ``clear_land``) is scored for each variant in ``VARIANTS``:

- ``mean_baseline``, ``linear_baseline``, ``unet_control``: from the ``References`` stored with
  the preset (fitted on its training split); a preset without them keeps these rows with
  n = 0 and the reason in ``note``, never invented numbers.
- ``v1+unsharp``: opt_v1 through an unsharp mask (``references.unsharp_mask``) whose box size
  and gain ``train_mini`` chose on out-of-fold opt_v1 by stage 2's own rule. No training: the
  yardstick stage 2 (realism) has to beat to show that it learned more than a filter.
- ``v1``, ``v1+v2``, ``v1+v3``, ``v1+v2+v3``: the pipeline with those stages (a skipped stage
  passes its input through), with the pair's month and biome and the same seed.

Per tile (``per_tile.csv``): PSNR, SSIM, SAM (4 bands and 12 bands), LPIPS when available,
SAR-edge, ``sar_edge_gap`` (|SAR-edge(prediction) - SAR-edge(real optical)|: a realistic image
agrees with the SAR's edges about as much as the real one does, and SAR-derived images can
agree far more), and against the real tile ``structure_r`` (does it draw the scene),
``edge_r`` (are edges where the real ones are) and ``sharpness`` (texture relative to the real
tile, 1 = as sharp); see ``gac_pipeline.metrics``. ``cluster`` is the tile's scene cluster
(``gac_pipeline.data.scene_clusters`` over the evaluated tiles: touching patches of one scene).

``uncertainty_spearman`` (with ``uncertainty`` = N variants, default 8; 0 turns it off): does
the uncertainty map point at the errors? The full chain runs once more per tile with
``pipeline.translate(..., uncertainty=N)``; per output, the Spearman rank correlation over pixels between
its std map and |mean of B02, B03, B04, B08 - the same of the real tile|
(``gac_pipeline.uncertainty.error_spearman``). The v1 and v1+v2 rows carry the opt_v1 and
opt_v2 maps of that run (the same images those variants score), the v1+v2+v3 row the opt_v3
map; other rows have none.

Statistics (``summary.csv``, ``paired.csv``) are given separately for three subsets of tiles:
``clear`` (``clear_land`` true: the headline), ``cloudy`` (``clear_land`` false: cloud, snow or
open water) and ``all``.
A mean is over tiles; its 95% interval is a percentile bootstrap over *scene clusters*, not
tiles: neighbouring patches share fields, lakes and clouds, so they are not independent
evidence. Each resample draws clusters with replacement and the statistic is the mean over
all tiles of the drawn clusters (sum of the clusters' sums over sum of their tile counts). A
subset with fewer than two clusters gets the mean without an interval. Every bootstrap uses
the same seed, so with the same clusters every variant and metric sees the same resamples.

``paired.csv`` holds differences between variants (``COMPARISONS``) computed per tile and
averaged, with the same cluster bootstrap: the interval of a difference, not the overlap of
two intervals, says whether a stage pays.

Scores undefined on a tile (``nan``, e.g. the SAR-edge agreement of a constant image, which has
no edges) are left out of that mean and counted in ``note``. PSNR is infinite when a
prediction equals the target after clipping; ``per_tile.csv`` keeps ``inf``, and the
statistics count such a tile at ``PSNR_CAP_DB``, the PSNR of DN rounding noise (1/sqrt(12) DN
rms): the best score a DN-quantised image can be told apart at.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
from tqdm.auto import tqdm

from gac_pipeline.bands import METRIC_BAND_INDICES, REFLECTANCE_SCALE, S2L2A_BANDS
from gac_pipeline.data import PairDataset, PairInfo, evaluation_pairs, scene_clusters
from gac_pipeline.metrics import (
    compute_metrics,
    edge_r,
    sar_edge_agreement,
    sharpness,
    structure_r,
    to_json_safe,
)
from gac_pipeline.outputs import PipelineOutput
from gac_pipeline.pipeline import GACPipeline, base_models
from gac_pipeline.presets import load_preset
from gac_pipeline.references import REFERENCES_DIR, UNSHARP_VARIANT, References, load_for_preset, unsharp_mask
from gac_pipeline.references import VARIANTS as REFERENCE_VARIANTS
from gac_pipeline.stages.terramind_common import seed_everything
from gac_pipeline.uncertainty import describe as describe_variants
from gac_pipeline.uncertainty import error_spearman

# Pipeline variant -> (stages that run, the output scored).
PIPELINE_VARIANTS = {
    "v1": (("1",), "opt_v1"),
    "v1+v2": (("1", "2"), "opt_v2"),
    "v1+v3": (("1", "3"), "opt_v3"),
    "v1+v2+v3": (("1", "2", "3"), "opt_v3"),
}
VARIANTS = (*REFERENCE_VARIANTS, UNSHARP_VARIANT, *PIPELINE_VARIANTS)
BASELINES = ("mean_baseline", "linear_baseline")
# Luminance scores against the real tile (gac_pipeline.metrics), computed here directly.
STRUCTURE_METRICS = ("structure_r", "edge_r", "sharpness")
SUMMARY_METRICS = ("psnr", "ssim", "sam_deg", "sar_edge", "sar_edge_gap", *STRUCTURE_METRICS, "lpips",
                   "uncertainty_spearman")
# Pipeline variant -> the output of the full chain's uncertainty run whose map it is scored with.
UNCERTAINTY_OF = {"v1": "opt_v1", "v1+v2": "opt_v2", "v1+v2+v3": "opt_v3"}
DEFAULT_UNCERTAINTY = 8
# Metrics whose absence on every tile of a row is explained once in meta.json, not in each row's note.
EXPLAINED_IN_META = ("lpips", "uncertainty_spearman")
TILE_METRICS = ("psnr", "ssim", "sam_deg", "sar_edge", *STRUCTURE_METRICS, "lpips", "psnr_12", "ssim_12",
                "sam_deg_12", "uncertainty_spearman")
PER_TILE_COLUMNS = ["variant", "tile", "cluster", "clear_land", *TILE_METRICS, "sar_edge_reference",
                    "sar_edge_gap"]
SUMMARY_COLUMNS = ["subset", "variant", "n", "n_clusters",
                   *(f"{m}{s}" for m in SUMMARY_METRICS for s in ("", "_lo", "_hi")), "note"]
# Tile subsets, the headline first: clear_land true, false, and every tile.
SUBSETS = ("clear", "cloudy", "all")
HEADLINE_SUBSET = "clear"
# Paired differences: (label, a, b) for a - b per tile. "best baseline" is whichever of
# BASELINES has the higher mean PSNR on that subset.
BEST_BASELINE = "best baseline"
COMPARISONS = (
    ("v1+v2 - v1", "v1+v2", "v1"),
    ("v1+v2 - v1+unsharp", "v1+v2", UNSHARP_VARIANT),
    ("v1+v2+v3 - v1+v2", "v1+v2+v3", "v1+v2"),
    ("v1+v2+v3 - unet_control", "v1+v2+v3", "unet_control"),
    ("v1+v2+v3 - best baseline", "v1+v2+v3", BEST_BASELINE),
)
PAIRED_METRICS = ("psnr", "ssim", "structure_r", "sharpness", "sar_edge_gap")
PAIRED_COLUMNS = ["subset", "comparison", "a", "b", "metric", "n", "n_clusters", "mean_diff", "lo", "hi", "note"]
BANDS = ",".join(S2L2A_BANDS[i] for i in METRIC_BAND_INDICES)
CONFIDENCE = 0.95
BOOTSTRAP_UNIT = "scene clusters"
PSNR_CAP_DB = 10.0 * math.log10(12.0 * REFLECTANCE_SCALE**2)  # reflectance = DN / REFLECTANCE_SCALE
RESULT_FILES = ("summary.csv", "per_tile.csv", "paired.csv", "meta.json")
OPTIONAL_RESULT_FILES = ("paired.csv",)  # absent from results written before it existed
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "outputs" / "ablation"


def _empty_paired() -> pd.DataFrame:
    return pd.DataFrame(columns=PAIRED_COLUMNS)


@dataclass
class AblationResult:
    """The result files, as read back by the app (``paired`` is empty for results written before it existed)."""

    summary: pd.DataFrame
    per_tile: pd.DataFrame
    meta: dict
    paired: pd.DataFrame = field(default_factory=_empty_paired)


@dataclass
class Estimate:
    """A mean over tiles with its cluster-bootstrap interval (``lo``/``hi`` None without one)."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int  # tiles with a finite value
    n_clusters: int  # clusters among them
    distribution: np.ndarray | None = None  # the bootstrap replicates of the mean


def run_ablation(data_dir: str | Path, preset: str = "mini", out_dir: str | Path = DEFAULT_OUT_DIR, *,
                 seed: int = 0, bootstrap: int = 2000, max_tiles: int | None = None,
                 uncertainty: int = DEFAULT_UNCERTAINTY, progress: bool = True) -> AblationResult:
    """Evaluate every variant on the evaluation pairs of ``data_dir`` and write the result files.

    Args:
        data_dir: Dataset folder (pair folders + optional ``index.csv``).
        preset: ``mini``, ``hub``, a pipeline folder or ``repo@revision``.
        out_dir: Where ``per_tile.csv``, ``summary.csv``, ``paired.csv`` and ``meta.json`` go.
        seed: Seeds the pipeline (generate mode samples) and the bootstrap.
        bootstrap: Bootstrap resamples for the confidence intervals.
        max_tiles: Evaluate only the first N pairs (sorted by name), e.g. for a quick look.
        uncertainty: Test-time variants for ``uncertainty_spearman`` (0: not measured).
        progress: Show a progress bar over tiles.

    Raises:
        FileNotFoundError: ``data_dir`` is not a folder.
        ValueError: Bad arguments, or no pair with both S1GRD.tif and S2L2A.tif to evaluate.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if bootstrap < 1 or (max_tiles is not None and max_tiles < 1):
        raise ValueError(f"bootstrap and max_tiles must be positive, got {bootstrap} and {max_tiles}")
    if uncertainty < 0:
        raise ValueError(f"uncertainty must be 0 (off) or a number of variants, got {uncertainty}")
    pairs = scored_pairs(data_dir, max_tiles)
    seed_everything(seed)
    pipeline = load_preset(preset)
    references = load_for_preset(preset)
    reasons = (references.available() if references is not None
               else dict.fromkeys(REFERENCE_VARIANTS, f"no references stored with preset {preset!r} "
                                                      f"(no {REFERENCES_DIR}/ folder)"))
    reasons[UNSHARP_VARIANT] = (None if references is not None and references.unsharp is not None
                                else f"no unsharp-mask setting stored with preset {preset!r}'s references")
    runnable = [v for v in VARIANTS if reasons.get(v) is None]
    per_tile, lpips_reason = _score_tiles(pairs, pipeline, references, runnable, seed=seed, uncertainty=uncertainty,
                                          progress=progress)

    # Why a variant has no numbers, else whether its numbers come from an untrained model.
    notes = dict(reasons)
    if not pipeline.config.trained:
        notes.update({variant: "pipeline untrained (random weights)" for variant in [*PIPELINE_VARIANTS, UNSHARP_VARIANT]
                      if notes.get(variant) is None})  # a variant that did not run keeps its reason
    control_trained = (references.control.config.trained
                       if references is not None and references.control is not None else None)
    if control_trained is False:
        notes["unet_control"] = "control untrained"
    summary = summarise(per_tile, notes, seed=seed, bootstrap=bootstrap)
    paired = paired_differences(per_tile, summary, notes, seed=seed, bootstrap=bootstrap)
    ceilings = sar_edge_ceilings(per_tile, seed=seed, bootstrap=bootstrap)
    command = ["python", "-m", "eval", "--data", str(data_dir), "--preset", preset, "--out", str(out_dir),
               "--seed", str(seed), "--bootstrap", str(bootstrap), "--uncertainty", str(uncertainty)]
    tiles = per_tile.drop_duplicates("tile")
    meta = {
        "preset": preset,
        "preset_label": pipeline.label,
        "preset_description": pipeline.config.description,
        "trained": pipeline.config.trained,
        "base_models": base_models(pipeline.stage1.config, pipeline.stage2.config, pipeline.stage3.config),
        "unpinned": pipeline.unpinned_notes(),
        "control_trained": control_trained,
        "references_source": references.source if references is not None else None,
        "references_train_tiles": references.train_tiles if references is not None else None,
        "data_dir": str(data_dir),
        "split": "test" if any(info.split for info in pairs) else "all pairs (the folder has no splits)",
        "n_tiles": len(pairs),
        "tiles": [info.name for info in pairs],
        "variants": list(VARIANTS),
        "seed": seed,
        "bootstrap": {
            "samples": bootstrap, "ci": CONFIDENCE, "seed": seed, "unit": BOOTSTRAP_UNIT,
            "method": "percentile (scipy.stats.bootstrap): clusters drawn with replacement, "
                      "statistic = mean over all tiles of the drawn clusters",
            "n_clusters": int(tiles["cluster"].nunique()),
            "subsets": {subset: {"tiles": len(rows), "clusters": int(rows["cluster"].nunique())}
                        for subset in SUBSETS for rows in [subset_rows(tiles, subset)]},
        },
        "headline_subset": HEADLINE_SUBSET,
        "clusters": [list(group["tile"]) for _, group in tiles.groupby("cluster", sort=True)],
        "lpips_reason": lpips_reason,
        "sar_edge_ceiling": ceilings["all"],
        "sar_edge_ceiling_by_subset": ceilings,
        "psnr_cap_db": PSNR_CAP_DB,
        "uncertainty": (describe_variants(uncertainty, generative=bool(pipeline.generators())) if uncertainty
                        else None),
        "bands": BANDS,
        "command": shlex.join(command + (["--max-tiles", str(max_tiles)] if max_tiles is not None else [])),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_results(out_dir, AblationResult(summary=summary, per_tile=per_tile, meta=meta, paired=paired))
    return AblationResult(summary=summary, per_tile=per_tile, meta=meta, paired=paired)


def write_results(out_dir: str | Path, result: AblationResult) -> None:
    """Write the four result files into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.per_tile.to_csv(out_dir / "per_tile.csv", index=False)
    result.summary.to_csv(out_dir / "summary.csv", index=False)
    result.paired.to_csv(out_dir / "paired.csv", index=False)
    (out_dir / "meta.json").write_text(json.dumps(to_json_safe(result.meta), indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------- running the models


def scored_pairs(data_dir: str | Path, max_tiles: int | None = None) -> list[PairInfo]:
    """The evaluation pairs of ``data_dir`` that have an optical tile, sorted by name, the first ``max_tiles``.

    Raises:
        FileNotFoundError: ``data_dir`` is not a folder.
        ValueError: no pair with both S1GRD.tif and S2L2A.tif.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data folder")
    pairs = [info for info in evaluation_pairs(data_dir) if info.s2_path is not None][:max_tiles]
    if not pairs:
        raise ValueError(f"{data_dir}: no pairs with S1GRD.tif and S2L2A.tif to evaluate")
    return pairs


def run_pipeline(pipeline: GACPipeline, item: dict, *, seed: int, stages: tuple[str, ...] = ("1", "2", "3"),
                 uncertainty: int = 0) -> PipelineOutput:
    """The pipeline on one ``PairDataset`` item with the pair's month and biome, as the ablation runs it."""
    return pipeline.translate(item["s1"].numpy(), month=item["month"] or None, biome=item["biome"], seed=seed, stages=stages,
                    uncertainty=uncertainty)


def structure_scores(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``structure_r``, ``edge_r`` and ``sharpness`` of a prediction against the real tile."""
    return {"structure_r": structure_r(prediction, target), "edge_r": edge_r(prediction, target),
            "sharpness": sharpness(prediction, target)}


def _score_tiles(pairs: list[PairInfo], pipeline: GACPipeline, references: References | None, variants: list[str],
                 *, seed: int, uncertainty: int, progress: bool) -> tuple[pd.DataFrame, str | None]:
    """One row per tile and variant (tile-major), and why LPIPS is missing if it is."""
    rows, lpips_reason = [], None
    dataset = PairDataset(pairs)
    clusters = scene_clusters([info.name for info in pairs])
    for index in tqdm(range(len(dataset)), desc="ablation tiles", disable=not progress):
        info, item = pairs[index], dataset[index]
        s1, target = item["s1"].numpy(), item["s2"].numpy()
        ceiling = sar_edge_agreement(target, s1)
        spearman = {}
        if uncertainty and "v1+v2+v3" in variants:
            full = run_pipeline(pipeline, item, seed=seed, uncertainty=uncertainty)
            spearman = {name: error_spearman(std, getattr(full, name), target) for name, std in full.std.items()}
        for variant in variants:
            if variant in PIPELINE_VARIANTS:
                stages, output = PIPELINE_VARIANTS[variant]
                prediction = getattr(run_pipeline(pipeline, item, seed=seed, stages=stages), output)
            elif variant == UNSHARP_VARIANT:
                opt_v1 = run_pipeline(pipeline, item, seed=seed, stages=("1",)).opt_v1
                prediction = unsharp_mask(opt_v1, **references.unsharp)
            else:
                prediction = references.predict(variant, s1)
            metrics = {**compute_metrics(prediction, s1, target), **structure_scores(prediction, target),
                       "uncertainty_spearman": spearman.get(UNCERTAINTY_OF.get(variant), math.nan)}
            lpips_reason = lpips_reason or metrics["lpips_reason"]
            rows.append({"variant": variant, "tile": info.name, "cluster": clusters[index],
                         "clear_land": info.clear_land, **{key: metrics[key] for key in TILE_METRICS},
                         "sar_edge_reference": ceiling})
    per_tile = pd.DataFrame(rows, columns=PER_TILE_COLUMNS[:-1])
    numeric = [*TILE_METRICS, "sar_edge_reference"]
    per_tile[numeric] = per_tile[numeric].astype(float)
    per_tile["cluster"] = per_tile["cluster"].astype(int)
    per_tile["sar_edge_gap"] = (per_tile["sar_edge"] - per_tile["sar_edge_reference"]).abs()
    return per_tile, lpips_reason


# ----------------------------------------------------------------------------- statistics


def cluster_bootstrap(values, clusters, *, seed: int = 0, resamples: int = 2000) -> Estimate:
    """Mean of the finite ``values`` and its percentile interval, resampling whole clusters.

    Each resample draws as many clusters as there are, with replacement; its statistic is the
    mean over every tile of the drawn clusters, i.e. (sum of the drawn clusters' sums) / (sum
    of their counts). ``scipy.stats.bootstrap`` does the resampling, with the clusters' sums
    and counts as paired samples. Tiles whose value is not finite are left out first (a
    cluster with none left is not drawn). Fewer than two clusters: the mean, no interval.

    Args:
        values: One value per tile.
        clusters: One cluster id per tile (``scene_clusters``).
        seed: Seeds the resampling (the same seed and clusters give the same resamples).
        resamples: Number of bootstrap resamples.
    """
    values, clusters = np.asarray(values, dtype=float), np.asarray(clusters)
    finite = np.isfinite(values)
    if not finite.any():
        return Estimate(None, None, None, 0, 0)
    ids, inverse = np.unique(clusters[finite], return_inverse=True)
    sums = np.bincount(inverse, weights=values[finite])
    counts = np.bincount(inverse).astype(float)
    mean = float(values[finite].mean())
    if len(ids) < 2:
        return Estimate(mean, None, None, int(finite.sum()), len(ids))
    result = scipy.stats.bootstrap((sums, counts), _pooled_mean, paired=True, vectorized=True,
                                   n_resamples=resamples, confidence_level=CONFIDENCE, method="percentile",
                                   rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return Estimate(mean, float(interval.low), float(interval.high), int(finite.sum()), len(ids),
                    result.bootstrap_distribution)


def _pooled_mean(sums: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over the tiles of the drawn clusters: their summed sums over their summed counts."""
    return sums.sum(axis=axis) / counts.sum(axis=axis)


def subset_rows(per_tile: pd.DataFrame, subset: str) -> pd.DataFrame:
    """The rows of ``per_tile`` in ``subset``: clear (clear_land true), cloudy (false) or all.

    Tiles whose ``clear_land`` is unknown (no index) are only in ``all``.
    """
    if subset == "all":
        return per_tile
    flag = per_tile["clear_land"].map(lambda value: value if isinstance(value, bool | np.bool_) else
                                      {"true": True, "false": False}.get(str(value).strip().lower()))
    return per_tile[flag == (subset == "clear")]


def _scored(values: pd.Series, metric: str) -> np.ndarray:
    """A metric's per-tile values as the statistics count them (infinite PSNR at ``PSNR_CAP_DB``)."""
    values = values.to_numpy(dtype=float)
    return np.minimum(values, PSNR_CAP_DB) if metric.startswith("psnr") else values


def summarise(per_tile: pd.DataFrame, notes: dict[str, str | None] | None = None, *, seed: int = 0,
              bootstrap: int = 2000) -> pd.DataFrame:
    """``summary.csv``: per subset and variant, the mean and cluster-bootstrap interval of each metric.

    Args:
        per_tile: ``per_tile.csv`` rows (a variant without rows keeps its rows here with n = 0).
        notes: Per variant, why it has no numbers or a caveat (e.g. untrained weights).
        seed: Seeds every bootstrap.
        bootstrap: Resamples per interval.
    """
    notes = notes or {}
    rows = []
    for subset in SUBSETS:
        tiles = subset_rows(per_tile, subset)
        for variant in VARIANTS:
            rows.append(_summary_row(subset, variant, tiles[tiles["variant"] == variant], notes.get(variant),
                                     ran=bool((per_tile["variant"] == variant).any()), seed=seed,
                                     bootstrap=bootstrap))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    summary[SUMMARY_COLUMNS[4:-1]] = summary[SUMMARY_COLUMNS[4:-1]].astype(float)  # missing -> NaN, as read back
    return summary


def _summary_row(subset: str, variant: str, tiles: pd.DataFrame, note: str | None, *, ran: bool, seed: int,
                 bootstrap: int) -> dict:
    row = {"subset": subset, "variant": variant, "n": len(tiles), "n_clusters": int(tiles["cluster"].nunique())}
    if tiles.empty:
        return {**row, "note": note if not ran and note else "; ".join(filter(None, [f"no {subset} tiles", note]))}
    notes = [note] if note else []
    for metric in SUMMARY_METRICS:
        raw = tiles[metric].to_numpy(dtype=float)
        if metric == "psnr" and np.isposinf(raw).any():
            notes.append(f"{int(np.isposinf(raw).sum())} tile(s) equal to the target: PSNR counted as "
                         f"{PSNR_CAP_DB:.2f} dB")
        undefined = int(np.isnan(raw).sum())
        if undefined and (metric not in EXPLAINED_IN_META or undefined < len(raw)):
            notes.append(f"{metric} undefined on {undefined} of {len(raw)} tile(s)")
        estimate = cluster_bootstrap(_scored(tiles[metric], metric), tiles["cluster"], seed=seed,
                                     resamples=bootstrap)
        row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = estimate.mean, estimate.lo, estimate.hi
    if row["n_clusters"] < 2:
        notes.append("one scene cluster: no interval")
    return {**row, "note": "; ".join(notes)}


def best_baseline(summary: pd.DataFrame, subset: str) -> str | None:
    """Whichever of ``BASELINES`` has the higher mean PSNR on ``subset`` (None when neither has one)."""
    rows = summary[(summary["subset"] == subset) & summary["variant"].isin(BASELINES)]
    rows = rows[np.isfinite(rows["psnr"].to_numpy(dtype=float))]
    return None if rows.empty else str(rows.loc[rows["psnr"].astype(float).idxmax(), "variant"])


def paired_differences(per_tile: pd.DataFrame, summary: pd.DataFrame, notes: dict[str, str | None] | None = None,
                       *, seed: int = 0, bootstrap: int = 2000) -> pd.DataFrame:
    """``paired.csv``: per subset, comparison and metric, the mean per-tile difference a - b and its interval.

    The difference is taken per tile (tiles where both scores are finite) and then averaged,
    with the same cluster bootstrap as the summary. A comparison whose variant did not run
    keeps its rows with n = 0 and the reason.

    Args:
        per_tile: ``per_tile.csv`` rows.
        summary: ``summary.csv`` rows (to pick the best baseline per subset).
        notes: Per variant, why it did not run (see ``summarise``).
        seed: Seeds every bootstrap.
        bootstrap: Resamples per interval.
    """
    notes = notes or {}
    rows = []
    for subset in SUBSETS:
        tiles = subset_rows(per_tile, subset)
        for label, a, b in COMPARISONS:
            missing = ""
            if b == BEST_BASELINE:
                b = best_baseline(summary, subset)
                if b is None:
                    missing = f"no baseline has a PSNR on the {subset} tiles"
            for name in (a, b):
                if not missing and not (per_tile["variant"] == name).any():
                    missing = f"{name} did not run" + (f": {notes[name]}" if notes.get(name) else "")
            for metric in PAIRED_METRICS:
                row = {"subset": subset, "comparison": label, "a": a, "b": b, "metric": metric}
                if missing:
                    rows.append({**row, "n": 0, "n_clusters": 0, "note": missing})
                    continue
                rows.append({**row, **_paired_row(tiles, a, b, metric, subset, seed=seed, bootstrap=bootstrap)})
    paired = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    paired[["mean_diff", "lo", "hi"]] = paired[["mean_diff", "lo", "hi"]].astype(float)
    paired["note"] = paired["note"].fillna("")
    return paired


def _paired_row(tiles: pd.DataFrame, a: str, b: str, metric: str, subset: str, *, seed: int, bootstrap: int) -> dict:
    left = tiles[tiles["variant"] == a].set_index("tile")
    right = tiles[tiles["variant"] == b].set_index("tile")
    common = left.index.intersection(right.index, sort=False)
    if common.empty:
        return {"n": 0, "n_clusters": 0, "note": f"no {subset} tiles"}
    difference = _scored(left.loc[common, metric], metric) - _scored(right.loc[common, metric], metric)
    estimate = cluster_bootstrap(difference, left.loc[common, "cluster"], seed=seed, resamples=bootstrap)
    notes = []
    if estimate.n < len(common):
        notes.append(f"{metric} undefined on {len(common) - estimate.n} of {len(common)} tile(s)")
    if estimate.n and estimate.n_clusters < 2:
        notes.append("one scene cluster: no interval")
    return {"n": estimate.n, "n_clusters": estimate.n_clusters, "mean_diff": estimate.mean, "lo": estimate.lo,
            "hi": estimate.hi, "note": "; ".join(notes)}


def sar_edge_ceilings(per_tile: pd.DataFrame, *, seed: int = 0, bootstrap: int = 2000) -> dict[str, dict]:
    """Per subset, the real optical's SAR-edge score: {mean, lo, hi} over its tiles (None where undefined)."""
    tiles = per_tile.drop_duplicates("tile")
    ceilings = {}
    for subset in SUBSETS:
        rows = subset_rows(tiles, subset)
        estimate = cluster_bootstrap(rows["sar_edge_reference"], rows["cluster"], seed=seed, resamples=bootstrap)
        ceilings[subset] = {"mean": estimate.mean, "lo": estimate.lo, "hi": estimate.hi}
    return ceilings


def load_results(directory: str | Path = DEFAULT_OUT_DIR) -> AblationResult:
    """Read the files ``run_ablation`` wrote into ``directory`` (``paired.csv`` may be absent: older results)."""
    directory = Path(directory)
    missing = [name for name in RESULT_FILES
               if name not in OPTIONAL_RESULT_FILES and not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: no ablation results (missing {', '.join(missing)}); "
                                f"run python -m eval --data DIR --out {directory}")
    summary = pd.read_csv(directory / "summary.csv")
    summary["note"] = summary["note"].fillna("")
    per_tile = pd.read_csv(directory / "per_tile.csv", dtype={"tile": str})
    paired = _empty_paired()
    if (directory / "paired.csv").is_file():
        paired = pd.read_csv(directory / "paired.csv")
        paired["note"] = paired["note"].fillna("")
    meta = json.loads((directory / "meta.json").read_text())
    return AblationResult(summary=summary, per_tile=per_tile, meta=meta, paired=paired)
