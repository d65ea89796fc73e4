"""Golden regression: the shipped GAC-mini reproduces its committed evaluation scores.

If this fails after a change to the models, the data path or the metrics, the committed
``eval/results`` no longer describe the shipped preset: re-run ``python -m eval`` (and retrain
with ``python -m training.train_mini --out presets/mini`` if the weights are meant to change).
"""

from pathlib import Path

import pandas as pd
import pytest

from eval.ablation import PIPELINE_VARIANTS, run_pipeline
from gac_pipeline.data import DEFAULT_DATA_DIR, PairDataset, evaluation_pairs
from gac_pipeline.metrics import psnr, structure_r
from gac_pipeline.presets import load_preset

RESULTS = Path(__file__).resolve().parent.parent / "eval" / "results" / "per_tile.csv"


@pytest.fixture(scope="module")
def committed():
    return pd.read_csv(RESULTS)


@pytest.mark.parametrize("index", [0, 1])
def test_shipped_mini_scores_equal_the_committed_per_tile_results(committed, index):
    clear = sorted(committed.loc[committed["clear_land"].astype(bool), "tile"].unique())
    name = clear[index]
    pair = next(info for info in evaluation_pairs(DEFAULT_DATA_DIR) if info.name == name)
    item = PairDataset([pair])[0]
    pipeline = load_preset("mini")
    for variant, (stages, output) in PIPELINE_VARIANTS.items():
        prediction = getattr(run_pipeline(pipeline, item, seed=0, stages=stages), output)
        row = committed[(committed["variant"] == variant) & (committed["tile"] == name)].iloc[0]
        assert psnr(prediction, item["s2"].numpy()) == pytest.approx(row["psnr"], abs=0.01), variant
        assert structure_r(prediction, item["s2"].numpy()) == pytest.approx(row["structure_r"], abs=1e-3), variant
