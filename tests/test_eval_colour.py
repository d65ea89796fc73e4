"""``python -m eval.colour``: PSNR with each tile's colour matched, and the month and biome prior."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from eval import colour
from gac_pipeline.data import DEFAULT_DATA_DIR
from gac_pipeline.metrics import psnr
from tests.conftest import build_tiny_pipeline
from training.common import load_pool


def test_colour_matched_removes_a_tile_wide_offset_and_keeps_the_scene():
    rng = np.random.default_rng(0)
    real = rng.uniform(200, 4000, (12, 16, 16))
    offset = rng.uniform(-500, 500, (12, 1, 1))
    colour_matched = colour.colour_matched(real + offset, real)
    assert colour_matched.shape == real.shape and psnr(colour_matched, real) > 200  # exact but for rounding
    scene = rng.uniform(200, 4000, (12, 16, 16))  # another scene: matching the colour cannot make it real
    matched = colour.colour_matched(scene, real)
    np.testing.assert_allclose(matched.mean(axis=(1, 2)), real.mean(axis=(1, 2)))
    np.testing.assert_allclose(matched - matched.mean(axis=(1, 2), keepdims=True),
                               scene - scene.mean(axis=(1, 2), keepdims=True))
    assert psnr(matched, real) < 30
    flat = colour.flat_colour(real)
    assert (flat == flat[:, :1, :1]).all() and np.allclose(flat[:, 0, 0], real.mean(axis=(1, 2)))


def test_months_apart_wraps_around_the_year():
    assert colour.months_apart(12, 1) == 1
    assert colour.months_apart(1, 12) == 1
    assert colour.months_apart(6, 6) == 0
    assert colour.months_apart(1, 7) == 6
    assert colour.months_apart(2, 11) == 3


def test_prior_takes_only_training_tiles_of_the_biome_within_the_months():
    offsets = {name: np.full(12, value, float) for name, value in
               {"held": 0.0, "same": 10.0, "near": 30.0, "far_month": 1000.0, "other_biome": -1000.0,
                "not_trained": 5000.0}.items()}
    months = {"held": 5, "same": 5, "near": 7, "far_month": 11, "other_biome": 5, "not_trained": 5}
    biomes = {"held": 1, "same": 1, "near": 1, "far_month": 1, "other_biome": 2, "not_trained": 1}
    trained_on = ["same", "near", "far_month", "other_biome"]
    prior = colour.prior_offset(offsets, months, biomes, "held", trained_on, 2)
    np.testing.assert_array_equal(prior, np.full(12, 20.0))  # "same" and "near" only
    np.testing.assert_array_equal(colour.prior_offset(offsets, months, biomes, "held", ["other_biome"], 2),
                                  np.zeros(12))


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    return build_tiny_pipeline().save_pretrained(tmp_path_factory.mktemp("colour_preset"))


def _work_dir(root):
    """A train_mini-like work folder: two folds' tile lists and out-of-fold outputs off by a colour."""
    pool = load_pool(DEFAULT_DATA_DIR)
    halves = [pool.names[0::2], pool.names[1::2]]
    for fold, held_out in enumerate(halves):
        path = root / "stage1" / f"fold{fold}_train" / "fold.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"held_out": held_out, "trained_on": halves[1 - fold]}))
    (root / "cv").mkdir()
    offset = torch.linspace(-300, 300, 12).view(12, 1, 1)
    for output in ("opt_v1", "opt_v2"):
        save_file({name: (pool.s2[i] + offset).contiguous() for i, name in enumerate(pool.names)},
                  root / "cv" / f"{output}.safetensors")
    return root


def test_cli_prints_test_and_out_of_fold_tables(tiny_preset, tmp_path, capsys):
    work = _work_dir(tmp_path / "work")
    assert colour.main(["--preset", str(tiny_preset), "--work-dir", str(work)]) == 0
    printed = capsys.readouterr().out
    test_part, oof_part = printed.split("out of fold:")
    for variant in ("| v1 |", "| v1+v2+v3 |", "flat (oracle)"):
        assert variant in test_part
    # A preset without references says why, with no numbers.
    assert "| mean_baseline | n/a: no references stored with this preset |" in test_part
    # Out of fold the outputs are the real tiles off by one colour: matching the colour makes them exact.
    cells = next(line for line in oof_part.splitlines() if line.startswith("| v1 |")).split("|")
    scored, matched = (float(cell.split()[0]) for cell in cells[2:4])
    assert scored < 40 and matched > 100
    # Every tile's offset is the same, so the prior removes it wherever a training tile qualifies.
    prior = next(line for line in oof_part.splitlines() if line.startswith("| v1 + month and biome prior"))
    assert float(prior.split("|")[2].split()[0]) > scored + 10


def test_cli_bad_work_dir_exits_2_with_one_line(tiny_preset, tmp_path, capsys):
    assert colour.main(["--preset", str(tiny_preset), "--work-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "fold" in err and "\n" not in err
