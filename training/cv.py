"""Cross-validation grouped by scene: the folds, the held-out predictions, the step to ship.

The protocol ``train_mini`` runs for every stage and for the control:

1. The pool is every clear non-test pair (train and validation splits together); the test split
   is never read.
2. K folds, grouped by scene cluster (patches of one scene that touch, see
   ``gac_pipeline.data.scene_clusters``): a fold model never trains on any tile of a cluster it
   is scored on.
3. Fold run k (a stage script with ``--folds K --fold k``) trains on the pool without fold k for
   S steps and stores its predictions for fold k at step 0 and every ``--eval-every`` steps
   (``heldout.safetensors``), with the tile lists in ``fold.json``.
4. :func:`choose_step` scores every recorded step on all pool tiles (each predicted by the fold
   model that never saw it) with :data:`CV_SCORE_TEXT`, and picks the best step outside the
   warm-up (step 0 only for residual stages, where it is the identity). Stages 2 and 3 choose
   only among steps within 0.3 dB PSNR of their input (step 0), so that neither gives back more
   for its role; stage 3 takes the smallest SAR-edge gap among those instead of the best score.
   The chosen step's predictions are the out-of-fold inputs the next stage trains on.
5. The final fit trains on the whole pool for the chosen number of steps, on the learning-rate
   schedule the step was chosen on (``--schedule-steps S``).

Stage 2's fold k trains on opt_v1 of the other folds' tiles, which came from stage-1 fold models
that did see fold k's targets: a second-order leak that stacking usually accepts (nested
cross-validation would remove it at K times the cost).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from gac_pipeline.data import scene_clusters
from gac_pipeline.metrics import psnr, sar_edge_agreement, sharpness, structure_r
from gac_pipeline.references import UNSHARP_GAINS, UNSHARP_SIZES, unsharp_mask
from training import common

HELDOUT_FILE = "heldout.safetensors"
FOLD_FILE = "fold.json"
# One score to choose steps by, for every stage and the control: PSNR rewards the right colour
# and blur, structure_r the right layout, and the sharpness term penalises blur and invented
# texture alike (|ln| of the ratio to the real tile). 0.1 of structure_r weighs like 1 dB.
STRUCTURE_WEIGHT = 10.0
SHARPNESS_WEIGHT = 2.0
CV_SCORE_TEXT = (f"mean over tiles of PSNR (dB) + {STRUCTURE_WEIGHT:g} x structure_r - {SHARPNESS_WEIGHT:g} x "
                 "|ln sharpness|")
# Stages 2 (realism) and 3 (SAR grounding) may give back at most this much of their input's PSNR (dB)
# for their role: the pictures issue's limit per stage.
ROLE_PSNR_TOLERANCE = 0.3


def grouped_folds(names: list[str], folds: int) -> list[list[int]]:
    """Deal whole scene clusters into ``folds`` folds of about equal tile counts.

    Largest clusters first, each to the fold with the fewest tiles so far (ties: the lower fold):
    deterministic for a given list of names.

    Returns:
        For each fold, the sorted indices of its tiles.

    Raises:
        ValueError: fewer clusters than folds.
    """
    clusters = scene_clusters(names)
    members: dict[int, list[int]] = {}
    for index, cluster in enumerate(clusters):
        members.setdefault(cluster, []).append(index)
    if folds < 2 or folds > len(members):
        raise ValueError(f"{folds} folds need 2..{len(members)} (the number of scene clusters)")
    dealt: list[list[int]] = [[] for _ in range(folds)]
    for cluster in sorted(members, key=lambda c: (-len(members[c]), c)):
        smallest = min(range(folds), key=lambda f: (len(dealt[f]), f))
        dealt[smallest].extend(members[cluster])
    return [sorted(fold) for fold in dealt]


def split_pool(pool: common.TileSet, folds: int, fold: int | None) -> tuple[common.TileSet, common.TileSet | None]:
    """(tiles to train on, held-out tiles): the whole pool and None without a fold."""
    if fold is None:
        return pool, None
    dealt = grouped_folds(pool.names, folds)
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is not in 0..{folds - 1}")
    held_out = set(dealt[fold])
    return pool.subset([i for i in range(len(pool)) if i not in held_out]), pool.subset(dealt[fold])


class HeldOutRecorder:
    """The ``evaluate`` of a fold run: predicts the held-out tiles, keeps the predictions by step.

    Args:
        tiles: The held-out tiles.
        predict: ``predict(tiles) -> (N, 12, H, W)`` DN with the model as it is now.
        with_sar: Also score the SAR-edge agreement (for stage 3's selection rule).
        resume_from: A fold run's work folder whose earlier records a resumed run continues.
    """

    def __init__(self, tiles: common.TileSet, predict, *, with_sar: bool = False, resume_from: Path | None = None):
        self.tiles, self.predict, self.with_sar = tiles, predict, with_sar
        self.predictions: dict[int, torch.Tensor] = {}
        if resume_from is not None and (Path(resume_from) / HELDOUT_FILE).is_file():
            # A resumed fold run keeps what it recorded before it paused.
            stored = load_file(Path(resume_from) / HELDOUT_FILE)
            for step in sorted({int(key.split("/")[0]) for key in stored}):
                self.predictions[step] = torch.stack([stored[f"{step}/{name}"] for name in tiles.names])

    def __call__(self, step: int) -> dict[str, float]:
        prediction = self.predict(self.tiles)
        self.predictions[step] = prediction
        return common.score(prediction, self.tiles.s2, self.tiles.s1 if self.with_sar else None)

    def save(self, directory: Path, trained_on: list[str], args) -> None:
        """Write ``heldout.safetensors`` (``"<step>/<tile>"`` keys) and ``fold.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({f"{step}/{name}": image.contiguous() for step, images in self.predictions.items()
                   for name, image in zip(self.tiles.names, images, strict=True)}, directory / HELDOUT_FILE)
        record = {"fold": args.fold, "folds": args.folds, "trained_on": trained_on, "held_out": self.tiles.names,
                  "max_steps": args.max_steps, "schedule_steps": args.schedule_steps,
                  "warmup_steps": int(args.warmup * args.schedule_steps), "seed": args.seed}
        (directory / FOLD_FILE).write_text(json.dumps(record, indent=2) + "\n")


def recorder_for(held_out: common.TileSet | None, predict, args, *, with_sar: bool = False) -> HeldOutRecorder | None:
    """The ``evaluate`` of a fold run (None outside one); ``--resume`` keeps the earlier records."""
    if held_out is None:
        return None
    return HeldOutRecorder(held_out, predict, with_sar=with_sar, resume_from=args.work_dir if args.resume else None)


def tile_scores(pred_dn: torch.Tensor, tiles: common.TileSet) -> dict[str, np.ndarray]:
    """Per-tile PSNR, structure_r, sharpness and SAR-edge gap of predictions for ``tiles``."""
    pred, target, sar = pred_dn.numpy(), tiles.s2.numpy(), tiles.s1.numpy()
    rows = []
    for p, t, s in zip(pred, target, sar, strict=True):
        rows.append((psnr(p, t), structure_r(p, t), sharpness(p, t),
                     abs(sar_edge_agreement(p, s) - sar_edge_agreement(t, s))))
    psnr_db, structure, sharp, gap = (np.array(column, dtype=float) for column in zip(*rows, strict=True))
    return {"psnr": psnr_db, "structure_r": structure, "sharpness": sharp, "sar_edge_gap": gap}


def cv_score(scores: dict[str, np.ndarray]) -> float:
    """:data:`CV_SCORE_TEXT` from per-tile scores (a tile with an undefined score is left out)."""
    # A flat image has sharpness 0: count it as 1000x too blurry rather than infinitely.
    sharp = np.log(np.clip(scores["sharpness"], 1e-3, None))
    per_tile = scores["psnr"] + STRUCTURE_WEIGHT * scores["structure_r"] - SHARPNESS_WEIGHT * np.abs(sharp)
    per_tile = per_tile[np.isfinite(per_tile)]
    return float(per_tile.mean()) if per_tile.size else float("-inf")


@dataclass
class Choice:
    """What cross-validation chose for one stage.

    Attributes:
        step: The step count to train the final model for (0: the starting weights).
        schedule_steps: The schedule the fold runs were laid over.
        table: Per recorded step, the pooled held-out means and the CV score; ``eligible``
            says whether the step could be chosen.
        predictions: Tile name -> the held-out prediction at ``step`` (out-of-fold outputs).
        producers: Tile name -> which fold model predicted it.
    """

    step: int
    schedule_steps: int
    table: list[dict]
    predictions: dict[str, torch.Tensor]
    producers: dict[str, str]


def choose_step(pool: common.TileSet, fold_dirs: list[Path], *, allow_start: bool,
                psnr_tolerance: float | None = None, grounding: bool = False,
                also: list[list[Path]] = ()) -> Choice:
    """Pick the step with the best CV score over all pool tiles from the fold runs' records.

    Args:
        pool: The tiles the folds were dealt from (targets and SAR for the scores).
        fold_dirs: The fold runs' work folders (with ``heldout.safetensors`` and ``fold.json``).
        allow_start: Step 0 may be chosen (residual stages: the identity).
        psnr_tolerance: Only steps whose mean PSNR is within this many dB of step 0's (the
            input's, for residual stages) may be chosen.
        grounding: Stage 3's rule instead of the CV score: of the eligible steps, the one with the
            smallest mean SAR-edge gap (edges as SAR-consistent as a real tile's, no more).
        also: Fold folders of other runs of the same folds (e.g. other seeds): every prediction
            is then the mean over all runs, the cross-validated score of their ensemble.

    Raises:
        ValueError: the folds do not cover the pool exactly once, or share no recorded step.
    """
    stored: dict[str, torch.Tensor] = {}
    producers: dict[str, str] = {}
    records = []
    for directory in fold_dirs:
        record = json.loads((Path(directory) / FOLD_FILE).read_text())
        records.append(record)
        stored.update(load_file(Path(directory) / HELDOUT_FILE))
        for name in record["held_out"]:
            if name in producers:
                raise ValueError(f"{name} is held out by two folds")
            producers[name] = f"fold {record['fold']} model (never trained on this tile's scene cluster)"
    if sorted(producers) != sorted(pool.names):
        raise ValueError("the folds' held-out tiles are not exactly the pool's tiles")
    if also:
        runs = [stored] + [_recorded(other) for other in also]
        if any(set(run) != set(stored) for run in runs):
            raise ValueError("the runs to average did not record the same steps and tiles")
        stored = {key: torch.stack([run[key] for run in runs]).mean(dim=0) for key in stored}
    for key in ("schedule_steps", "warmup_steps", "seed"):
        if len({record[key] for record in records}) > 1:
            raise ValueError(f"the fold runs differ in {key}: {[record[key] for record in records]}")
    steps = sorted({int(key.split("/")[0]) for key in stored})
    incomplete = [s for s in steps if not all(f"{s}/{name}" in stored for name in pool.names)]
    if incomplete or 0 not in steps:
        raise ValueError(f"the fold runs did not all record steps {incomplete or [0]}: re-run them")
    warmup = records[0]["warmup_steps"]
    table = []
    for step in steps:
        scores = tile_scores(torch.stack([stored[f"{step}/{name}"] for name in pool.names]), pool)
        row = {"step": step, **{k: common.finite_mean(v) for k, v in scores.items()}, "cv_score": cv_score(scores)}
        row["eligible"] = step > warmup or (step == 0 and allow_start)
        table.append(row)
    if psnr_tolerance is not None:
        start_psnr = table[0]["psnr"]
        for row in table:
            row["eligible"] = row["eligible"] and row["psnr"] >= start_psnr - psnr_tolerance
    eligible = [row for row in table if row["eligible"]]
    if not eligible:
        raise ValueError(f"no recorded step outside the warm-up ({warmup} steps): raise --max-steps")
    if grounding:
        best = min(eligible, key=lambda row: (row["sar_edge_gap"], row["step"]))
    else:
        best = max(eligible, key=lambda row: (row["cv_score"], -row["step"]))
    predictions = {name: stored[f"{best['step']}/{name}"] for name in pool.names}
    return Choice(step=best["step"], schedule_steps=records[0]["schedule_steps"], table=table,
                  predictions=predictions, producers=producers)


def choose_unsharp(pool: common.TileSet, opt_v1: dict[str, torch.Tensor]) -> dict:
    """The ``v1+unsharp`` baseline's setting, chosen by stage 2's rule on out-of-fold opt_v1.

    Every box size and gain of ``references.UNSHARP_SIZES`` x ``UNSHARP_GAINS`` sharpens the
    out-of-fold opt_v1 of every pool tile; of those within :data:`ROLE_PSNR_TOLERANCE` dB PSNR
    of opt_v1 itself, the best CV score wins (opt_v1 unchanged, gain 1, when none is).

    Returns:
        ``{"size", "gain", "table"}``: the setting and every candidate's pooled scores.
    """
    opt_v1 = torch.stack([opt_v1[name] for name in pool.names])
    table = []
    for size, gain in [(1, 1.0), *((s, g) for s in UNSHARP_SIZES for g in UNSHARP_GAINS)]:
        scores = tile_scores(torch.from_numpy(unsharp_mask(opt_v1.numpy(), size, gain)), pool)
        table.append({"size": size, "gain": gain, **{k: common.finite_mean(v) for k, v in scores.items()},
                      "cv_score": cv_score(scores)})
    eligible = [row for row in table if row["psnr"] >= table[0]["psnr"] - ROLE_PSNR_TOLERANCE]
    best = max(eligible, key=lambda row: row["cv_score"])
    return {"size": best["size"], "gain": best["gain"], "table": table}


def _recorded(fold_dirs: list[Path]) -> dict[str, torch.Tensor]:
    """Every held-out prediction the fold runs recorded, by ``"<step>/<tile>"``."""
    stored: dict[str, torch.Tensor] = {}
    for directory in fold_dirs:
        stored.update(load_file(Path(directory) / HELDOUT_FILE))
    return stored


def main(argv: list[str] | None = None) -> Choice:
    """Print a stage's cross-validation table from its fold runs (``train_mini``'s or an experiment's)."""
    import argparse

    from gac_pipeline.data import DEFAULT_DATA_DIR

    parser = argparse.ArgumentParser(description="Print the cross-validated scores of every recorded step of a "
                                                 "stage's fold runs, and the step train_mini would choose.")
    parser.add_argument("work_dir", type=Path, help="a train_mini work folder (holding <stage>/fold<k>_train/)")
    parser.add_argument("stage", choices=("stage1", "stage2", "stage3", "control"))
    parser.add_argument("--data", type=common.data_folder, default=DEFAULT_DATA_DIR)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--also", type=Path, nargs="+", default=[], metavar="WORK_DIR",
                        help="work folders of other runs of the same folds (e.g. other seeds): score the mean of "
                             "all runs' predictions, their ensemble")
    args = parser.parse_args(argv)

    def fold_dirs(work_dir: Path) -> list[Path]:
        return [work_dir / args.stage / f"fold{k}_train" for k in range(args.folds)]

    residual = args.stage in ("stage2", "stage3")
    choice = choose_step(common.load_pool(args.data), fold_dirs(args.work_dir), allow_start=residual,
                         psnr_tolerance=ROLE_PSNR_TOLERANCE if residual else None, grounding=args.stage == "stage3",
                         also=[fold_dirs(work_dir) for work_dir in args.also])
    rule = {"stage2": f"the best CV score within {ROLE_PSNR_TOLERANCE} dB PSNR of step 0",
            "stage3": f"the smallest SAR-edge gap within {ROLE_PSNR_TOLERANCE} dB PSNR of step 0"}.get(
        args.stage, "the best CV score outside the warm-up")
    runs = f" and {', '.join(map(str, args.also))} (the mean of {1 + len(args.also)} runs' predictions)" if args.also else ""
    print(f"{args.work_dir}{runs} {args.stage}: CV score = {CV_SCORE_TEXT}; chosen: {rule}")
    print(" step  PSNR dB  structure_r  sharpness  SAR-edge gap  CV score")
    for row in choice.table:
        mark = " <- chosen" if row["step"] == choice.step else ("" if row["eligible"] else "  (not eligible)")
        print(f"{row['step']:5d}  {row['psnr']:7.2f}  {row['structure_r']:11.3f}  {row['sharpness']:9.3f}  "
              f"{row['sar_edge_gap']:12.3f}  {row['cv_score']:8.2f}{mark}")
    return choice


if __name__ == "__main__":
    main()
