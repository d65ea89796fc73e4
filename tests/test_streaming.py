"""Streaming training data: reBEN and pair-folder reading, per-access reads, rank shares, resume, torchrun;
stored stage outputs one file per pair (precompute, resume, shards) streamed into stages 2 and 3."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import load_file

from gac_pipeline.data import BIOMES, DEFAULT_DATA_DIR, PairDataset, RebenDataset, list_pairs, reben_s2_dir
from gac_pipeline.pipeline import GACPipeline
from training import common, precompute_stage1, streaming, train_control, train_stage2, train_stage3
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
    assert data.month[7] == tile["month"] and data.biome[7] == tile["biome"]  # from the listing, as a TileSet's


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


def torchrun(module: str, args: list[str], port: int) -> str:
    """Run ``module`` under a 2-process CPU torchrun (gloo); returns its output, fails the test on an error."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
               "-m", module, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_two_process_torchrun_trains_from_reben_and_resumes(reben, tmp_path):
    out = tmp_path / "stage1"
    args = ["--config", "training/configs/mini/stage1.yaml", "--data", str(reben), "--max-steps", "4",
            "--eval-every", "2", "--batch-size", "2", "--crop", "32", "--workers", "1", "--out", str(out)]
    torchrun("training.train_stage1", [*args, "--stop-after", "2"], 29531)
    assert "resumed from" in torchrun("training.train_stage1", [*args, "--resume"], 29531)
    work = tmp_path / "stage1_train"
    with open(work / common.LOG_FILE) as file:
        assert [int(row["step"]) for row in csv.DictReader(file)] == [0, 2, 4]
    assert common.load_checkpoint(work / common.CHECKPOINT_FILE)["step"] == 4
    assert (out / "stage1" / "model.safetensors").is_file()


# --- stored stage outputs, one file per pair, for stages 2 and 3 ------------------------------------

CLEAR = 19  # clear train + validation pairs of the synthetic folder


@pytest.fixture(scope="module")
def stored(reben, saved_tiny_pipeline, tmp_path_factory):
    """opt_v1 and opt_v2 of the tiny pipeline for every clear training pair, as precompute_stage1 streams them."""
    out = tmp_path_factory.mktemp("stored")
    for through in ("1", "2"):
        precompute_stage1.main(["--data", str(reben), "--preset", str(saved_tiny_pipeline), "--through", through,
                                "--out", str(out), "--workers", "1", "--batch-size", "4", "--device", "cpu"])
    return out


def stored_names(directory: Path, name: str) -> set[str]:
    return {path.stem for path in (directory / name).glob("*.safetensors")}


def test_precompute_stores_each_pairs_stage_outputs(reben, saved_tiny_pipeline, stored):
    names = streaming.pair_names(streaming.open_source(reben))
    assert len(names) == CLEAR
    assert stored_names(stored, "opt_v1") == stored_names(stored, "opt_v2") == set(names)
    assert not list(stored.rglob("*.tmp"))
    manifest = json.loads((stored / "opt_v2_manifest.json").read_text())
    assert manifest["producer"] == f"stages 1 and 2 of {saved_tiny_pipeline}" and manifest["pairs"] == CLEAR
    pipeline = GACPipeline.from_pretrained(saved_tiny_pipeline)
    item = RebenDataset(reben)[5]
    opt_v1 = common.predict_tiles(lambda s1: pipeline.stage1(s1, seed=0), item["s1"][None])
    opt_v2 = common.predict_tiles(pipeline.stage2, opt_v1, month=torch.tensor([item["month"]]),
                                  biome=torch.tensor([item["biome"]]))
    for name, expected in (("opt_v1", opt_v1), ("opt_v2", opt_v2)):
        torch.testing.assert_close(streaming.read_stored(stored, name, item["name"]), expected[0])


def test_precompute_shards_by_rank_and_resumes(reben, saved_tiny_pipeline, stored, tmp_path, monkeypatch):
    run = ["--data", str(reben), "--preset", str(saved_tiny_pipeline), "--out", str(tmp_path), "--workers", "0",
           "--device", "cpu"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, total in ((0, 10), (1, CLEAR)):  # every second pair each
        monkeypatch.setenv("RANK", str(rank))
        precompute_stage1.main(run)
        assert len(stored_names(tmp_path, "opt_v1")) == total
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    files = sorted((tmp_path / "opt_v1").glob("*.safetensors"))
    files[3].unlink()  # as if the run had stopped before it
    written = {path: path.stat().st_mtime_ns for path in files[4:]}
    precompute_stage1.main(run)
    assert files[3].is_file() and all(path.stat().st_mtime_ns == time for path, time in written.items())
    for path in files:
        torch.testing.assert_close(load_file(path)["opt_v1"], streaming.read_stored(stored, "opt_v1", path.stem))
    with pytest.raises(ValueError, match="another run"):
        precompute_stage1.main([*run, "--seed", "1"])


def test_stored_outputs_turn_with_their_pair_and_a_missing_one_is_named(reben, tmp_path):
    source = streaming.open_source(reben)
    for index, name in enumerate(streaming.pair_names(source)):  # stored "prediction" = the target itself
        (tmp_path / "opt_v1").mkdir(exist_ok=True)
        streaming.write_stored(tmp_path, "opt_v1", name, source[index]["s2"])
    data = streaming.open_pool(reben, crop=32, seed=1, stored={"opt_v1": tmp_path})
    plain = streaming.open_pool(reben, crop=32, seed=1)
    stream = streaming.batches(data, batch_size=3, workers=1, rank=0, world_size=1, seed=0)
    for _ in range(8):  # into the second epoch (6 batches of 3 per epoch)
        batch = next(stream)
        assert batch["opt_v1"].shape == batch["s2"].shape == (3, 12, 32, 32)
        assert torch.equal(batch["opt_v1"], batch["s2"])
    assert all(torch.equal(data[key][k], plain[key][k]) for key in (0, 40) for k in ("s1", "s2"))  # same draws

    missing = streaming.pair_names(source)[4]
    streaming.stored_file(tmp_path, "opt_v1", missing).unlink()
    message = f"{tmp_path / 'opt_v1'}: no stored opt_v1 for pair {missing} "
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        data[4]
    with pytest.raises(FileNotFoundError, match="no folder of stored opt_v2"):
        streaming.open_pool(reben, crop=32, seed=1, stored={"opt_v2": tmp_path})


def test_stages_2_and_3_stream_stored_outputs_and_resume_exactly(reben, saved_tiny_pipeline, stored, tmp_path):
    tiny = ["--data", str(reben), "--init-from", str(saved_tiny_pipeline), "--batch-size", "2", "--crop", "32",
            "--workers", "1", "--eval-every", "2", "--max-steps", "4"]
    summary = train_stage2.main([*tiny, "--opt-v1", str(stored), "--out", str(tmp_path / "straight")])
    assert summary["steps"] == 4 and summary["train_tiles"] == CLEAR
    stage2 = GACPipeline.from_pretrained(tmp_path / "straight")
    assert f"stage-1 outputs (stage 1 of {saved_tiny_pipeline}) of {CLEAR} real tiles" in stage2.config.description
    assert stage2.stage2.config.seen_months == sorted({0, *RebenDataset(reben).months.tolist()})
    train_stage2.main([*tiny, "--opt-v1", str(stored), "--out", str(tmp_path / "paused"), "--stop-after", "2"])
    train_stage2.main([*tiny, "--opt-v1", str(stored), "--out", str(tmp_path / "paused"), "--resume"])
    straight, resumed = (load_file(tmp_path / name / "stage2" / "model.safetensors") for name in ("straight", "paused"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)

    summary = train_stage3.main([*tiny, "--opt-v2", str(stored), "--out", str(tmp_path / "stage3")])
    assert summary["steps"] == 4 and GACPipeline.from_pretrained(tmp_path / "stage3").stage3.config.trained
    with pytest.raises(SystemExit, match="--through 2"):
        train_stage3.main([*tiny, "--opt-v1", str(stored), "--out", str(tmp_path / "x")])


def test_two_process_torchrun_streams_stage2(reben, saved_tiny_pipeline, stored, tmp_path):
    torchrun("training.train_stage2", ["--data", str(reben), "--init-from", str(saved_tiny_pipeline), "--opt-v1",
                                       str(stored), "--max-steps", "2", "--eval-every", "2", "--batch-size", "2",
                                       "--crop", "32", "--workers", "1", "--out", str(tmp_path / "stage2")], 29532)
    assert common.load_checkpoint(tmp_path / "stage2_train" / common.CHECKPOINT_FILE)["step"] == 2
    assert (tmp_path / "stage2" / "stage2" / "model.safetensors").is_file()
