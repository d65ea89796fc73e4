"""``python -m eval.colour``: how much of each variant's PSNR is lost to the tile's colour.

PSNR pools the squared error over B02, B03, B04 and B08, so a colour offset over the whole tile
(each band's mean off, e.g. a spring boreal tile given a summer's near infrared) costs as much as
drawing the scene wrong. For every variant on the clear test tiles this prints:
- PSNR as ``python -m eval`` scores it;
- PSNR "colour matched": each band's tile mean replaced by the real tile's (an oracle: it needs
  the real tile), so only the scene drawn is scored;
- and one oracle row with no scene at all: the real tile's own mean colour, flat.

With ``--work-dir`` (a ``train_mini`` work folder), the same out of fold over the pool tiles, from
its cross-validation ``opt_v1`` and ``opt_v2`` (``cv/``), and one colour that needs no oracle:
each held-out tile's per-band offset (real mean - predicted mean) taken as the mean offset of
the tiles its fold model trained on (``stage1/foldK_train/fold.json``) of the same biome within
``--months`` months ("month and biome prior"): what the conditioning could tell about a tile's
colour, measured without training anything. The donors' offsets are their own out-of-fold ones,
whose fold models may have trained on the held-out tile, so if anything this flatters the prior.

Means over tiles with 95% intervals resampling whole scene clusters (``eval.ablation.cluster_bootstrap``).

    python -m eval.colour [--data data/bigearthnet] [--preset mini] [--work-dir runs/mini]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gac_pipeline.data import DEFAULT_DATA_DIR, scene_clusters
from gac_pipeline.metrics import psnr

TEST_VARIANTS = {"mean_baseline": None, "unet_control": None, "v1": "opt_v1", "v1+v2": "opt_v2",
                 "v1+v2+v3": "opt_v3"}
OOF_OUTPUTS = {"v1": "opt_v1", "v1+v2": "opt_v2"}


def colour_matched(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``prediction`` (12, H, W) with each band's mean over the tile moved to ``reference``'s."""
    prediction, reference = np.asarray(prediction, np.float64), np.asarray(reference, np.float64)
    return prediction - prediction.mean(axis=(1, 2), keepdims=True) + reference.mean(axis=(1, 2), keepdims=True)


def flat_colour(reference: np.ndarray) -> np.ndarray:
    """The real tile's own per-band mean, everywhere: an oracle that draws no scene."""
    reference = np.asarray(reference, np.float64)
    return np.broadcast_to(reference.mean(axis=(1, 2), keepdims=True), reference.shape)


def months_apart(a: int, b: int) -> int:
    """Months between two calendar months, around the year (12 and 1 are 1 apart)."""
    gap = abs(a - b) % 12
    return min(gap, 12 - gap)


def prior_offset(offsets: dict[str, np.ndarray], months: dict[str, int], biomes: dict[str, int],
                 tile: str, trained_on: list[str], max_months: int) -> np.ndarray:
    """The mean per-band offset of the training tiles of ``tile``'s biome within ``max_months``.

    Zero when no training tile matches (the prediction's own colour is kept).
    """
    donors = [offsets[name] for name in trained_on
              if biomes[name] == biomes[tile] and months_apart(months[name], months[tile]) <= max_months]
    return np.mean(donors, axis=0) if donors else np.zeros_like(offsets[tile])


def _row(label: str, scored: list[float], matched: list[float] | None, clusters: list[int]) -> str:
    from eval.ablation import cluster_bootstrap

    def cell(values: list[float], sign: str = "") -> str:
        estimate = cluster_bootstrap(values, clusters)
        interval = f" [{estimate.lo:{sign}.2f}, {estimate.hi:{sign}.2f}]" if estimate.lo is not None else ""
        return f"{estimate.mean:{sign}.2f}{interval}"

    if matched is None:
        return f"| {label} | {cell(scored)} | | |"
    gain = [m - s for m, s in zip(matched, scored, strict=True)]
    return f"| {label} | {cell(scored)} | {cell(matched)} | {cell(gain, '+')} |"


HEADER = ("| variant | PSNR (dB) as scored | PSNR colour matched (oracle) | what a perfect tile colour adds |\n"
          "|---|---|---|---|")


def test_table(data_dir: str | Path, preset: str, seed: int = 0) -> str:
    """The markdown table for the clear test tiles."""
    from eval.ablation import run_pipeline, scored_pairs
    from eval.figure import figure_pairs
    from gac_pipeline.data import PairDataset
    from gac_pipeline.presets import load_preset
    from gac_pipeline.references import load_for_preset
    from gac_pipeline.stages.terramind_common import seed_everything

    pairs = figure_pairs(data_dir)
    seed_everything(seed)
    pipeline, references = load_preset(preset), load_for_preset(preset)
    reasons = ({variant: "no references stored with this preset" for variant in TEST_VARIANTS}
               if references is None else references.available())
    scored: dict[str, list[float]] = {name: [] for name in TEST_VARIANTS}
    matched: dict[str, list[float]] = {name: [] for name in TEST_VARIANTS}
    flat: list[float] = []
    for item in PairDataset(pairs):
        s1, target = item["s1"].numpy(), item["s2"].numpy()
        outputs = run_pipeline(pipeline, item, seed=seed)
        for variant, output in TEST_VARIANTS.items():
            if output is None and reasons[variant] is not None:
                continue  # this preset has no such reference: its row says n/a
            prediction = getattr(outputs, output) if output else references.predict(variant, s1)
            scored[variant].append(psnr(prediction, target))
            matched[variant].append(psnr(colour_matched(prediction, target), target))
        flat.append(psnr(flat_colour(target), target))
    # Cluster ids as in per_tile.csv: over every evaluated pair (a cloudy tile may join two clear ones).
    every = [info.name for info in scored_pairs(data_dir)]
    cluster_of = dict(zip(every, scene_clusters(every), strict=True))
    clusters = [cluster_of[info.name] for info in pairs]
    lines = [f"clear test tiles: {len(pairs)} in {len(set(clusters))} scene clusters; preset {preset}", HEADER]
    for variant in TEST_VARIANTS:
        if not scored[variant]:
            lines.append(f"| {variant} | n/a: {reasons[variant]} | | |")
        else:
            lines.append(_row(variant, scored[variant], matched[variant], clusters))
    lines.append(_row("the real tile's mean colour, flat (oracle)", flat, None, clusters))
    return "\n".join(lines)


def out_of_fold_table(data_dir: str | Path, work_dir: str | Path, max_months: int = 2) -> str:
    """The markdown table out of fold, from a ``train_mini`` work folder."""
    import torch
    from safetensors.torch import load_file

    from training.common import load_pool

    work_dir = Path(work_dir)
    pool = load_pool(data_dir)
    index = {name: i for i, name in enumerate(pool.names)}
    fold_files = sorted((work_dir / "stage1").glob("fold*_train/fold.json"))
    if not fold_files:
        raise FileNotFoundError(f"{work_dir}/stage1: no fold*_train/fold.json (run train_mini with --work-dir first)")
    trained_on: dict[str, list[str]] = {}
    for path in fold_files:
        record = json.loads(path.read_text())
        for name in record["held_out"]:
            trained_on[name] = list(record["trained_on"])
    names = [name for name in pool.names if name in trained_on]
    reals = {name: pool.s2[index[name]].double().numpy() for name in names}
    months = {name: int(pool.month[index[name]]) for name in names}
    biomes = {name: int(pool.biome[index[name]]) for name in names}
    clusters = scene_clusters(names)
    lines = [f"out of fold: {len(names)} pool tiles in {len(set(clusters))} scene clusters; {work_dir}", HEADER]
    for variant, output in OOF_OUTPUTS.items():
        stored = load_file(str(work_dir / "cv" / f"{output}.safetensors"))
        predictions = {name: stored[name].to(torch.float64).numpy() for name in names}
        offsets = {name: (reals[name] - predictions[name]).mean(axis=(1, 2)) for name in names}
        scored = [psnr(predictions[name], reals[name]) for name in names]
        matched = [psnr(colour_matched(predictions[name], reals[name]), reals[name]) for name in names]
        lines.append(_row(variant, scored, matched, clusters))
        prior = [psnr(predictions[name] + prior_offset(offsets, months, biomes, name, trained_on[name],
                                                          max_months)[:, None, None], reals[name]) for name in names]
        lines.append(_row(f"{variant} + month and biome prior (same biome, within {max_months} months)",
                          prior, None, clusters))
    lines.append(_row("the real tile's mean colour, flat (oracle)",
                      [psnr(flat_colour(reals[name]), reals[name]) for name in names], None, clusters))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA_DIR), help="dataset folder (default: the bundled data)")
    parser.add_argument("--preset", default="mini", help="mini, hub, a pipeline folder or repo@revision")
    parser.add_argument("--work-dir", help="a train_mini work folder: also score its out-of-fold outputs")
    parser.add_argument("--months", type=int, default=2, help="the prior's month window (default 2)")
    args = parser.parse_args(argv)
    from gac_pipeline.io import InputError

    try:
        print(test_table(args.data, args.preset))
        if args.work_dir:
            print()
            print(out_of_fold_table(args.data, args.work_dir, args.months))
    except (InputError, ValueError, FileNotFoundError, RuntimeError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
