"""The ablation: what each stage adds, against baselines and a one-network control.

Every evaluation pair (the test split, or every pair of a folder without splits; cloudy pairs
included, flagged by ``clear_land``) is scored for each variant in ``VARIANTS``:

- ``mean_baseline``, ``linear_baseline``, ``unet_control``: from the ``References`` stored with
  the preset (fitted on its training split); a preset without them keeps these rows with
  n = 0 and the reason in ``note``, never invented numbers.
- ``v1``, ``v1+v2``, ``v1+v3``, ``v1+v2+v3``: the pipeline with those stages (a skipped stage
  passes its input through), with the pair's month and biome and the same seed.

Summary statistics are means over tiles with a seeded percentile bootstrap over tiles; the
same resampled tile sets serve every variant, so intervals compare like with like. Scores
undefined on a tile (``nan``, e.g. the SAR-edge agreement of a constant image, which has no
edges) are left out of that mean and counted in ``note``. ``sar_edge_gap`` is the per-tile
|SAR-edge(prediction) - SAR-edge(real optical)|: a realistic image agrees with the SAR's
edges about as much as the real one does, and SAR-derived images can agree far more. PSNR is infinite when a prediction
equals the target after clipping; ``per_tile.csv`` keeps ``inf``, and the summary counts such
a tile at ``PSNR_CAP_DB``, the PSNR of DN rounding noise (1/sqrt(12) DN rms): the best score
a DN-quantised image can be told apart at.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gac_pipeline.bands import METRIC_BAND_INDICES, REFLECTANCE_SCALE, S2L2A_BANDS
from gac_pipeline.data import PairDataset, PairInfo, evaluation_pairs
from gac_pipeline.metrics import compute_metrics, sar_edge_agreement, to_json_safe
from gac_pipeline.pipeline import GACPipeline, base_models
from gac_pipeline.presets import load_preset
from gac_pipeline.references import REFERENCES_DIR, References, load_for_preset
from gac_pipeline.references import VARIANTS as REFERENCE_VARIANTS
from gac_pipeline.stages.terramind_common import seed_everything

# Pipeline variant -> (stages that run, the output scored).
PIPELINE_VARIANTS = {
    "v1": (("1",), "opt_v1"),
    "v1+v2": (("1", "2"), "opt_v2"),
    "v1+v3": (("1", "3"), "opt_v3"),
    "v1+v2+v3": (("1", "2", "3"), "opt_v3"),
}
VARIANTS = (*REFERENCE_VARIANTS, *PIPELINE_VARIANTS)
SUMMARY_METRICS = ("psnr", "ssim", "sam_deg", "sar_edge", "sar_edge_gap", "lpips")
TILE_METRICS = ("psnr", "ssim", "sam_deg", "sar_edge", "lpips", "psnr_12", "ssim_12", "sam_deg_12")
PER_TILE_COLUMNS = ["variant", "tile", "clear_land", *TILE_METRICS, "sar_edge_reference", "sar_edge_gap"]
SUMMARY_COLUMNS = ["variant", "n", *(f"{m}{s}" for m in SUMMARY_METRICS for s in ("", "_lo", "_hi")), "note"]
BANDS = ",".join(S2L2A_BANDS[i] for i in METRIC_BAND_INDICES)
CONFIDENCE = 0.95
PSNR_CAP_DB = 10.0 * math.log10(12.0 * REFLECTANCE_SCALE**2)  # reflectance = DN / REFLECTANCE_SCALE
RESULT_FILES = ("summary.csv", "per_tile.csv", "meta.json")
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "outputs" / "ablation"


@dataclass
class AblationResult:
    """The three result files, as read back by the app."""

    summary: pd.DataFrame
    per_tile: pd.DataFrame
    meta: dict


def run_ablation(data_dir: str | Path, preset: str = "mini", out_dir: str | Path = DEFAULT_OUT_DIR, *,
                 seed: int = 0, bootstrap: int = 2000, max_tiles: int | None = None,
                 progress: bool = True) -> AblationResult:
    """Evaluate every variant on the evaluation pairs of ``data_dir`` and write the three result files.

    Args:
        data_dir: Dataset folder (pair folders + optional ``index.csv``).
        preset: ``mini``, ``hub``, a pipeline folder or ``repo@revision``.
        out_dir: Where ``per_tile.csv``, ``summary.csv`` and ``meta.json`` go.
        seed: Seeds the pipeline (generate mode samples) and the bootstrap.
        bootstrap: Bootstrap resamples for the confidence intervals.
        max_tiles: Evaluate only the first N pairs (sorted by name), e.g. for a quick look.
        progress: Show a progress bar over tiles.

    Raises:
        FileNotFoundError: ``data_dir`` is not a folder.
        ValueError: Bad arguments, or no pair with both S1GRD.tif and S2L2A.tif to evaluate.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data folder")
    if bootstrap < 1 or (max_tiles is not None and max_tiles < 1):
        raise ValueError(f"bootstrap and max_tiles must be positive, got {bootstrap} and {max_tiles}")
    pairs = [info for info in evaluation_pairs(data_dir) if info.s2_path is not None][:max_tiles]
    if not pairs:
        raise ValueError(f"{data_dir}: no pairs with S1GRD.tif and S2L2A.tif to evaluate")
    seed_everything(seed)
    pipeline = load_preset(preset)
    references = load_for_preset(preset)
    reasons = (references.available() if references is not None
               else dict.fromkeys(REFERENCE_VARIANTS, f"no references stored with preset {preset!r} "
                                                      f"(no {REFERENCES_DIR}/ folder)"))
    runnable = [v for v in VARIANTS if reasons.get(v) is None]
    per_tile, lpips_reason = _score_tiles(pairs, pipeline, references, runnable, seed=seed, progress=progress)

    # One set of resampled tile indices for every variant and metric: paired intervals.
    indices = np.random.default_rng(seed).integers(0, len(pairs), size=(bootstrap, len(pairs)))
    # Why a variant has no numbers, else whether its numbers come from an untrained model.
    notes = dict(reasons)
    if not pipeline.config.trained:
        notes.update(dict.fromkeys(PIPELINE_VARIANTS, "pipeline untrained (random weights)"))
    control_trained = (references.control.config.trained
                       if references is not None and references.control is not None else None)
    if control_trained is False:
        notes["unet_control"] = "control untrained"
    summary = pd.DataFrame([_summary_row(variant, per_tile[per_tile["variant"] == variant], indices, notes.get(variant))
                            for variant in VARIANTS], columns=SUMMARY_COLUMNS)
    summary[SUMMARY_COLUMNS[2:-1]] = summary[SUMMARY_COLUMNS[2:-1]].astype(float)  # missing -> NaN, as read back
    ceiling_values = per_tile.drop_duplicates("tile")["sar_edge_reference"].to_numpy(dtype=float)
    mean, lo, hi = _bootstrap(ceiling_values, indices)
    command = ["python", "-m", "eval", "--data", str(data_dir), "--preset", preset, "--out", str(out_dir),
               "--seed", str(seed), "--bootstrap", str(bootstrap)]
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
        "bootstrap": {"samples": bootstrap, "ci": CONFIDENCE, "seed": seed},
        "lpips_reason": lpips_reason,
        "sar_edge_ceiling": {"mean": mean, "lo": lo, "hi": hi},
        "psnr_cap_db": PSNR_CAP_DB,
        "bands": BANDS,
        "command": shlex.join(command + (["--max-tiles", str(max_tiles)] if max_tiles is not None else [])),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    per_tile.to_csv(out_dir / "per_tile.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "meta.json").write_text(json.dumps(to_json_safe(meta), indent=2, allow_nan=False) + "\n")
    return AblationResult(summary=summary, per_tile=per_tile, meta=meta)


def _score_tiles(pairs: list[PairInfo], pipeline: GACPipeline, references: References | None, variants: list[str],
                 *, seed: int, progress: bool) -> tuple[pd.DataFrame, str | None]:
    """One row per tile and variant (tile-major), and why LPIPS is missing if it is."""
    rows, lpips_reason = [], None
    dataset = PairDataset(pairs)
    for index in tqdm(range(len(dataset)), desc="ablation tiles", disable=not progress):
        info, item = pairs[index], dataset[index]
        s1, target = item["s1"].numpy(), item["s2"].numpy()
        ceiling = sar_edge_agreement(target, s1)
        for variant in variants:
            if variant in PIPELINE_VARIANTS:
                stages, output = PIPELINE_VARIANTS[variant]
                result = pipeline(s1, month=item["month"] or None, biome=item["biome"], seed=seed, stages=stages)
                prediction = getattr(result, output)
            else:
                prediction = references.predict(variant, s1)
            metrics = compute_metrics(prediction, s1, target)
            lpips_reason = lpips_reason or metrics["lpips_reason"]
            rows.append({"variant": variant, "tile": info.name, "clear_land": info.clear_land,
                         **{key: metrics[key] for key in TILE_METRICS}, "sar_edge_reference": ceiling})
    per_tile = pd.DataFrame(rows, columns=PER_TILE_COLUMNS[:-1])
    numeric = [*TILE_METRICS, "sar_edge_reference"]
    per_tile[numeric] = per_tile[numeric].astype(float)
    per_tile["sar_edge_gap"] = (per_tile["sar_edge"] - per_tile["sar_edge_reference"]).abs()
    return per_tile, lpips_reason


def _bootstrap(values: np.ndarray, indices: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """Mean of the finite values and its percentile interval over resampled tiles (None if none is finite)."""
    finite = np.isfinite(values)
    if not finite.any():
        return None, None, None
    sums = np.where(finite, values, 0.0)[indices].sum(axis=1)
    counts = finite[indices].sum(axis=1)
    means = sums[counts > 0] / counts[counts > 0]  # a resample with only undefined tiles says nothing
    tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(values[finite].mean()), float(lo), float(hi)


def _summary_row(variant: str, tiles: pd.DataFrame, indices: np.ndarray, note: str | None) -> dict:
    row = {"variant": variant, "n": len(tiles)}
    if tiles.empty:
        return {**row, "note": note or "no tiles"}
    notes = [note] if note else []
    for metric in SUMMARY_METRICS:
        values = tiles[metric].to_numpy(dtype=float)
        if metric == "psnr" and np.isposinf(values).any():
            notes.append(f"{int(np.isposinf(values).sum())} tile(s) equal to the target: PSNR counted as "
                         f"{PSNR_CAP_DB:.2f} dB")
            values = np.minimum(values, PSNR_CAP_DB)
        undefined = int(np.isnan(values).sum())
        if undefined and metric != "lpips":  # LPIPS absence is explained once, in meta.json
            notes.append(f"{metric} undefined on {undefined} of {len(values)} tile(s)")
        row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = _bootstrap(values, indices)
    return {**row, "note": "; ".join(notes)}


def load_results(directory: str | Path = DEFAULT_OUT_DIR) -> AblationResult:
    """Read the files ``run_ablation`` wrote into ``directory``."""
    directory = Path(directory)
    missing = [name for name in RESULT_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: no ablation results (missing {', '.join(missing)}); "
                                f"run python -m eval --data DIR --out {directory}")
    summary = pd.read_csv(directory / "summary.csv")
    summary["note"] = summary["note"].fillna("")
    per_tile = pd.read_csv(directory / "per_tile.csv", dtype={"tile": str})
    meta = json.loads((directory / "meta.json").read_text())
    return AblationResult(summary=summary, per_tile=per_tile, meta=meta)
