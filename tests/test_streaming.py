"""Streaming training data: reBEN and pair-folder reading, per-access reads, rank shares, resume, torchrun."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import load_file

from gac_pipeline.data import BIOMES, DEFAULT_DATA_DIR, PairDataset, RebenDataset, list_pairs, reben_s2_dir
from training import common, streaming, train_control
from training.make_synthetic_reben import make

REPO = Path(__file__).resolve().parent.parent
PAIRS = 24  # 18 train, 3 validation, 3 test; every tenth pair is cloudy


@pytest.fixture(scope="module")
def reben(tmp_path_factory):
    return make(tmp_path_factory.mktemp("reben"), PAIRS)


def test_reben_items_match_the_band_files(reben):
    dataset = RebenDataset(reben)
    assert len(dataset) == PAIRS
    item = dataset[0]
    assert item["s1"].shape == (2, 120, 120) and item["s1"].dtype == torch.float32
    assert item["s2"].shape == (12, 120, 120) and item["s2"].dtype == torch.float32
    s2_dir = reben_s2_dir(reben, item["name"])
    with rasterio.open(s2_dir / f"{item['name']}_B02.tif") as b02, rasterio.open(s2_dir / f"{item['name']}_B01.tif") as b01:
        assert b02.shape == (120, 120) and b02.dtypes[0] == "uint16" and b01.shape == (20, 20)
        assert np.array_equal(item["s2"][1].numpy(), b02.read(1).astype(np.float32))
        assert np.array_equal(item["s2"][0].numpy(), np.kron(b01.read(1), np.ones((6, 6))).astype(np.float32))
    assert -30 < item["s1"].min() and item["s1"].max() < 0  # dB, as stored
    assert item["month"] == 6 and BIOMES[item["biome"]] == "alpine"  # 20170613, Austria


def test_reben_splits_and_clear_filter(reben):
    assert len(RebenDataset(reben, ["test"])) == 3
    pool = RebenDataset(reben, common.TRAINING_SPLITS)
    clear = RebenDataset(reben, common.TRAINING_SPLITS, clear_only=True)
    assert len(pool) == 21 and len(clear) == 19  # pairs 9 and 19 are cloudy


def test_each_access_reads_from_disk(reben, monkeypatch):
    opened = []
    real_open = rasterio.open
    monkeypatch.setattr(rasterio, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    data = streaming.open_pool(reben, crop=32, seed=0)
    for key in (0, 1, 0):
        item = data[key]
        assert item["s1"].shape == (2, 32, 32) and item["s2"].shape == (12, 32, 32) and item["uniform"].shape == (2,)
    assert len(opened) == 3 * 14  # 2 SAR + 12 optical files per access, nothing cached
    assert not any(isinstance(v, torch.Tensor) for v in vars(data.source).values())  # names and numbers only


def test_pair_folder_items_are_augmented_reads():
    data = streaming.open_pool(DEFAULT_DATA_DIR, crop=48, seed=3)
    pairs = [p for split in common.TRAINING_SPLITS for p in list_pairs(DEFAULT_DATA_DIR, split, clear_only=True)]
    assert len(data) == len(pairs) == 32
    key = 5 * len(data) + 7  # epoch 5, pair 7
    tile = PairDataset(sorted(pairs, key=lambda p: p.name))[7]
    expected = common.augment([tile["s1"], tile["s2"]], 48, torch.Generator().manual_seed(3 * 1_000_003 + key))
    item = data[key]
    assert torch.equal(item["s1"], expected[0]) and torch.equal(item["s2"], expected[1])
    assert item["month"] == tile["month"] and item["biome"] == tile["biome"]


def test_ranks_share_an_epoch_and_resume_where_they_stopped(reben):
    data = streaming.open_pool(reben, crop=16, seed=0)  # 19 clear pairs: 9 per rank, 4 batches of 2
    share = {rank: [] for rank in (0, 1)}
    for rank in share:
        sampler = streaming.EpochSampler(data, num_replicas=2, rank=rank, seed=0, drop_last=True)
        share[rank] = [key % len(data) for key in sampler]
    assert not set(share[0]) & set(share[1]) and len(share[0]) == len(share[1]) == 9
    stream = streaming.batches(data, batch_size=2, workers=0, rank=1, world_size=2, seed=0)
    straight = [next(stream) for _ in range(7)]  # into the second epoch
    resumed = streaming.batches(data, batch_size=2, workers=0, rank=1, world_size=2, seed=0, start=5)
    for expected in straight[5:]:
        batch = next(resumed)
        assert all(torch.equal(batch[k], expected[k]) for k in expected)
    assert not torch.equal(straight[0]["s2"], straight[4]["s2"])  # a new epoch is a new order


def test_resumed_streaming_run_matches_an_uninterrupted_one(reben, tmp_path):
    tiny = ["--data", str(reben), "--batch-size", "2", "--crop", "32", "--workers", "1", "--eval-every", "2",
            "--max-steps", "4", "--ema", "0.5"]
    config = tmp_path / "tiny.yaml"
    config.write_text("control: {width: 4, levels: 2}\n")
    train_control.main([*tiny, "--config", str(config), "--out", str(tmp_path / "straight")])
    train_control.main([*tiny, "--config", str(config), "--out", str(tmp_path / "paused"), "--stop-after", "2"])
    train_control.main([*tiny, "--config", str(config), "--out", str(tmp_path / "paused"), "--resume"])
    straight, resumed = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "paused"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_two_process_torchrun_trains_from_reben_and_resumes(reben, tmp_path):
    out = tmp_path / "stage1"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
               "-m", "training.train_stage1", "--config", "training/configs/mini/stage1.yaml", "--data", str(reben),
               "--max-steps", "4", "--eval-every", "2", "--batch-size", "2", "--crop", "32", "--workers", "1",
               "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    first = subprocess.run([*command, "--stop-after", "2"], check=False, cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run([*command, "--resume"], check=False, cwd=REPO, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout + second.stderr
    work = tmp_path / "stage1_train"
    with open(work / common.LOG_FILE) as file:
        assert [int(row["step"]) for row in csv.DictReader(file)] == [0, 2, 4]
    assert common.load_checkpoint(work / common.CHECKPOINT_FILE)["step"] == 4
    assert (out / "stage1" / "model.safetensors").is_file()
