"""The whole GAC-mini training chain in smoke size, the stage options, losses, resume and DDP."""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from gac_pipeline import metrics
from gac_pipeline.data import DEFAULT_DATA_DIR, PairDataset, list_pairs, scene_clusters
from gac_pipeline.hub import sha256
from gac_pipeline.pipeline import GACPipeline
from gac_pipeline.references import References, unsharp_mask
from tests.conftest import tiny_configs
from training import CPU_KERNEL_PINS, common, cv, losses, train_mini, train_stage1, train_stage2, train_stage3

SMOKE = train_mini.SMOKE_ARGS


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    record = train_mini.main(["--out", str(root / "preset"), "--work-dir", str(root / "work"), "--smoke", "--jobs", "2"])
    return root, record


def test_chain_writes_a_loadable_labelled_preset_with_references(chain):
    root, record = chain
    pipeline = GACPipeline.from_pretrained(root / "preset")
    assert pipeline.config.trained and pipeline.config.name == "GAC-mini"
    assert all(s.config.trained for s in (pipeline.stage1, pipeline.stage2, pipeline.stage3))
    assert "trained from random init on 32 real BigEarthNet clear_land tiles" in pipeline.config.description
    for key in ("1", "2", "3"):
        assert f"stage {key}: " in pipeline.config.description
    references = References.load(root / "preset")
    assert references.control is not None and references.train_tiles == 32
    unsharp = {key: record["unsharp_baseline"][key] for key in ("size", "gain")}
    assert references.unsharp == unsharp and len(record["unsharp_baseline"]["table"]) > 1
    assert record["control_parameters"] <= record["chain_parameters"]
    assert record["jobs"] == 2 and 0 < record["wall_seconds"]
    assert "stage 1: " in (root / "work" / "stage1" / "fold0_train" / train_mini.RUN_LOG).read_text()
    assert set(record["chosen_steps"]) == {"stage1", "stage2", "stage3", "control"}
    saved = json.loads((root / "preset" / train_mini.TRAINING_RECORD).read_text())
    assert saved["train_tiles"] == 32 and len(saved["folds"]) == 3
    assert all(row["step"] > 0 for row in saved["cross_validation"]["stage1"] if row["eligible"])
    assert saved["machine"]["cpu"] and saved["machine"]["torch"] == torch.__version__
    item = PairDataset(list_pairs(DEFAULT_DATA_DIR, "validation")[:1])[0]
    result = pipeline.translate(item["s1"].numpy(), month=item["month"])
    assert all(np.isfinite(image).all() for image in (result.opt_v1, result.opt_v2, result.opt_v3))


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the kernel pins are for x86-64")
def test_training_pins_the_cpu_kernels_before_torch_loads():
    """Loaded in a fresh process, as ``python -m training.train_mini`` is: torch then dispatches to its AVX2
    kernels whatever wider set the CPU has, and the pins are in the environment that the workers inherit."""
    env = {name: value for name, value in os.environ.items() if name not in CPU_KERNEL_PINS}
    code = "import json, training.train_mini as t; print(json.dumps(t.machine_record()))"
    machine = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                        check=True, cwd=Path(__file__).resolve().parent.parent).stdout.splitlines()[-1])
    assert machine["kernel_pins"] == CPU_KERNEL_PINS
    assert machine["torch_cpu_capability"] == "AVX2"


def test_reuse_repeats_nothing_whose_arguments_config_and_inputs_are_unchanged(chain):
    root, record = chain
    again = train_mini.main(["--out", str(root / "again"), "--work-dir", str(root / "work"), "--smoke", "--reuse"])
    assert again["seconds"] == record["seconds"]  # every run reused, with its recorded time
    first = json.loads((root / "preset" / "pipeline_config.json").read_text())["files"]
    assert json.loads((root / "again" / "pipeline_config.json").read_text())["files"] == first


def test_weights_do_not_depend_on_how_many_runs_train_at_once(chain):
    """Single-threaded runs one at a time (--jobs 1) write the same bytes as two at a time (the fixture)."""
    root, _ = chain
    train_mini.main(["--out", str(root / "one_job"), "--work-dir", str(root / "work_one_job"), "--smoke", "--jobs", "1"])

    def weights(preset):
        return {str(path.relative_to(preset)): sha256(path) for path in sorted(preset.rglob("*.safetensors"))}

    assert len(weights(root / "preset")) >= 4  # the three stages and the control
    assert weights(root / "one_job") == weights(root / "preset")


def test_fold_models_never_train_on_a_held_out_scene_cluster(chain):
    """From the fold runs' own tile lists: no cluster is on both sides, and every pool tile is held out once."""
    root, _ = chain
    pool = common.load_pool(DEFAULT_DATA_DIR)
    cluster = dict(zip(pool.names, scene_clusters(pool.names), strict=True))
    for stage in ("stage1", "stage2", "stage3", "control"):
        held_out_anywhere = []
        for fold in range(3):
            record = json.loads((root / "work" / stage / f"fold{fold}_train" / cv.FOLD_FILE).read_text())
            trained, held_out = set(record["trained_on"]), set(record["held_out"])
            assert trained and held_out and not trained & held_out
            assert not {cluster[n] for n in trained} & {cluster[n] for n in held_out}
            assert trained | held_out == set(pool.names)
            held_out_anywhere += record["held_out"]
        assert sorted(held_out_anywhere) == sorted(pool.names)
    test_names = {p.name for p in list_pairs(DEFAULT_DATA_DIR, "test")}
    assert not test_names & set(pool.names)  # the test split is never read


def test_later_stages_train_on_out_of_fold_outputs(chain):
    root, _ = chain
    pool = common.load_pool(DEFAULT_DATA_DIR)
    for name in ("opt_v1", "opt_v2"):
        manifest = json.loads((root / "work" / "cv" / f"{name}_manifest.json").read_text())
        assert all("never trained on this tile's scene cluster" in manifest[n] for n in pool.names)
        cloudy = [p.name for p in list_pairs(DEFAULT_DATA_DIR) if p.split != "test" and not p.clear_land]
        assert cloudy and all("left out" in manifest[n] for n in cloudy)
        stored = load_file(root / "work" / "cv" / f"{name}.safetensors")
        assert set(stored) == set(pool.names) and stored[pool.names[0]].shape == (12, 120, 120)


def test_cv_table_command_prints_what_train_mini_chose(chain, capsys):
    root, record = chain
    for stage in ("stage1", "stage3"):
        choice = cv.main([str(root / "work"), stage])
        assert choice.step == record["chosen_steps"][stage]
        assert json.dumps(choice.table) == json.dumps(record["cross_validation"][stage])  # NaN-safe
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2 + len(choice.table) and sum("<- chosen" in line for line in lines) == 1


def test_grouped_folds_keep_touching_patches_together():
    names = ["S2A_X_T33UUP_10_10", "S2A_X_T33UUP_10_11", "S2A_X_T33UUP_11_12", "S2A_X_T33UUP_30_30",
             "S2A_Y_T33UUP_10_12", "other_tile", "S2B_Z_5_5"]
    assert scene_clusters(names) == [0, 0, 0, 1, 2, 3, 4]  # transitively touching; another date is another scene
    folds = cv.grouped_folds(names, 3)
    assert sorted(i for fold in folds for i in fold) == list(range(len(names)))
    assert [0, 1, 2] in folds  # the 3-tile cluster stays whole
    with pytest.raises(ValueError, match="folds"):
        cv.grouped_folds(names, 6)


def test_choose_step_skips_the_warm_up_and_keeps_the_identity_only_when_allowed(tmp_path):
    pool = common.load_pool(DEFAULT_DATA_DIR)
    folds = cv.grouped_folds(pool.names, 2)
    torch.manual_seed(0)
    mean = pool.s2.mean(dim=(0, 2, 3), keepdim=True)
    dirs = []
    for fold, members in enumerate(folds):
        held_out = pool.subset(members)
        # step 0: nearly the truth (the best, but inside the warm-up); step 2: the mean image; step 4: noisier
        recorder = cv.HeldOutRecorder(held_out, lambda tiles: tiles.s2)
        recorder.predictions = {0: held_out.s2 + 10 * torch.randn_like(held_out.s2),
                                2: mean.expand_as(held_out.s2).clone(),
                                4: held_out.s2 + 50 * torch.randn_like(held_out.s2)}
        args = argparse.Namespace(fold=fold, folds=2, max_steps=4, schedule_steps=4, warmup=0.25, seed=0)
        recorder.save(tmp_path / f"fold{fold}", [], args)
        dirs.append(tmp_path / f"fold{fold}")
    assert cv.choose_step(pool, dirs, allow_start=True).step == 0
    choice = cv.choose_step(pool, dirs, allow_start=False)
    assert choice.step == 4 and set(choice.predictions) == set(pool.names)
    assert [row["eligible"] for row in choice.table] == [False, True, True]
    # stages 2 and 3: only steps within the tolerance of step 0's PSNR (the mean image and the noisier
    # step are several dB below it)
    choice = cv.choose_step(pool, dirs, allow_start=True, psnr_tolerance=cv.ROLE_PSNR_TOLERANCE)
    assert choice.step == 0 and [row["eligible"] for row in choice.table] == [True, False, False]
    assert [r["eligible"] for r in cv.choose_step(pool, dirs, allow_start=True, psnr_tolerance=100).table] == [True] * 3


def test_choose_unsharp_sharpens_a_blurred_stage1_output_within_the_psnr_tolerance():
    pool = common.load_pool(DEFAULT_DATA_DIR)
    blurred = {name: torch.from_numpy(unsharp_mask(tile.numpy(), 9, 0.0)) for name, tile in zip(pool.names, pool.s2)}
    choice = cv.choose_unsharp(pool, blurred)
    identity, *candidates = choice["table"]
    assert (identity["size"], identity["gain"]) == (1, 1.0)
    assert choice["gain"] > 1  # a box blur of the truth has detail to restore
    eligible = [row for row in choice["table"] if row["psnr"] >= identity["psnr"] - cv.ROLE_PSNR_TOLERANCE]
    best = max(eligible, key=lambda row: row["cv_score"])
    assert (best["size"], best["gain"]) == (choice["size"], choice["gain"])
    assert any(row not in eligible for row in candidates)  # the tolerance did rule some out


def test_stage2_lora_8bit_and_unfreeze_options(chain, tmp_path):
    root, _ = chain
    work = root / "work"
    base = [*SMOKE, "--data", str(DEFAULT_DATA_DIR), "--init-from", str(work / "stage1" / "final"), "--opt-v1",
            str(work / "cv")]
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"stage2": tiny_configs()[1].to_dict()}))
    summary = train_stage2.main([*base, "--config", str(config), "--out", str(tmp_path / "lora8"),
                                 "--backbone", "lora", "--lora-rank", "2", "--load-in-8bit", "--lr", "0.05"])
    stage = GACPipeline.from_pretrained(tmp_path / "lora8").stage2
    assert stage.config.lora_rank == 2 and summary["steps"] == 2
    assert any("lora_B" in n for n, _ in stage.named_parameters())
    # lora_B starts at zero; after the steps it has moved, trained through the int8 base.
    last = common.load_checkpoint(tmp_path / "lora8_train" / common.CHECKPOINT_FILE)["model"]
    lora_b = [v for k, v in last.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    with pytest.raises(ValueError, match="load-in-8bit"):
        train_stage2.main([*base, "--config", str(config), "--out", str(tmp_path / "x"), "--load-in-8bit",
                           "--backbone", "full"])

    train_stage2.main([*base, "--config", str(config), "--out", str(tmp_path / "unfrozen"), "--backbone", "frozen",
                       "--unfreeze-last", "1", "--no-conditioning"])
    trained = GACPipeline.from_pretrained(tmp_path / "unfrozen").stage2
    assert trained.config.lora_rank == 0


def test_stage3_generate_mode_trains_lora_with_the_token_loss(chain, tmp_path):
    root, _ = chain
    work = root / "work"
    stage3 = tiny_configs("generate")[2]
    config = tmp_path / "generate.yaml"
    config.write_text(yaml.safe_dump({"stage3": stage3.to_dict()}))
    summary = train_stage3.main([*SMOKE, "--data", str(DEFAULT_DATA_DIR), "--init-from", str(work / "stage2" / "final"),
                                 "--opt-v1", str(work / "cv"), "--config", str(config),
                                 "--out", str(tmp_path / "s3"), "--lr", "0.05"])
    assert summary["steps"] == 2
    with open(tmp_path / "s3_train" / common.LOG_FILE) as file:
        rows = list(csv.DictReader(file))
    assert all(np.isfinite(float(r["train_loss"])) for r in rows[1:])
    stage = GACPipeline.from_pretrained(tmp_path / "s3").stage3
    assert stage.config.mode == "generate" and stage.config.trained
    trainable = {n for n, p in stage.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_resume_replays_the_same_batches(tmp_path):
    args = [*SMOKE, "--data", str(DEFAULT_DATA_DIR), "--max-steps", "4"]
    train_stage1.main([*args, "--out", str(tmp_path / "straight")])
    train_stage1.main([*args, "--out", str(tmp_path / "resumed"), "--stop-after", "2"])
    train_stage1.main([*args, "--out", str(tmp_path / "resumed"), "--resume"])
    straight = common.load_checkpoint(tmp_path / "straight_train" / common.CHECKPOINT_FILE)["model"]
    resumed = common.load_checkpoint(tmp_path / "resumed_train" / common.CHECKPOINT_FILE)["model"]
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(straight[key], resumed[key], rtol=1e-5, atol=1e-6)


def test_losses_match_the_metrics():
    item = PairDataset(list_pairs(DEFAULT_DATA_DIR, "train")[:1])[0]
    s2, s1 = item["s2"][None], item["s1"][None]
    agreement = metrics.sar_edge_agreement(s2[0].numpy(), s1[0].numpy())
    assert losses.sar_edge_correlation(s2, s1).item() == pytest.approx(agreement, abs=1e-4)
    assert losses.sar_edge_match_loss(s2, s2, s1).item() == pytest.approx(0.0, abs=1e-8)
    assert losses.ssim_loss(s2, s2).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.spectral_angle(s2, 2 * s2).item() == pytest.approx(0.0, abs=2e-3)
    shifted = s2.clone()
    shifted[:, 0] += 500
    assert losses.spectral_angle(s2, shifted).item() > 0.01
    pred = s2.clone().requires_grad_(True)
    losses.sar_edge_match_loss(pred, s2 + torch.randn_like(s2) * 300, s1).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_lpips_weight_is_refused_without_local_weights(tmp_path):
    available, _ = metrics.lpips_available()
    if available:
        pytest.skip("LPIPS weights exist locally: the option is allowed")
    with pytest.raises(SystemExit):
        train_stage2.parse_args(["--init-from", "mini", "--opt-v1", str(tmp_path), "--out", str(tmp_path / "o"),
                                 "--lpips-weight", "0.1"])


def test_two_process_distributed_training_on_cpu(tmp_path):
    """torchrun with 2 processes (gloo): the DDP path runs, rank 0 writes one loadable pipeline."""
    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "training.train_stage1", *SMOKE, "--data", str(DEFAULT_DATA_DIR), "--out", str(out)]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-3000:]
    pipeline = GACPipeline.from_pretrained(out)
    assert pipeline.stage1.config.trained
    with open(tmp_path / "ddp_train" / common.LOG_FILE) as file:
        assert [int(r["step"]) for r in csv.DictReader(file)] == [0, 1, 2]  # rank 0 alone logs


def test_stage3_ssim_weight_adds_exactly_its_term():
    args = train_stage3.parse_args(["--init-from", "unused", "--opt-v1", "unused", "--out", "unused",
                                    "--ssim-weight", "0.5"])
    stage = train_stage3.build_stage3(args, tiny_configs()[2])
    torch.manual_seed(0)
    batch = {"s1": torch.randn(2, 2, 32, 32) * 3 - 12, "opt_v2": torch.rand(2, 12, 32, 32) * 3000,
             "s2": torch.rand(2, 12, 32, 32) * 3000}
    with_ssim = train_stage3.make_loss(args, stage)(stage, batch)
    args.ssim_weight = 0.0
    without = train_stage3.make_loss(args, stage)(stage, batch)
    expected = 0.5 * losses.ssim_loss(stage(batch["s1"], batch["opt_v2"]), batch["s2"])
    assert torch.allclose(with_ssim - without, expected, atol=1e-5) and expected > 0


def test_choose_step_scores_the_mean_of_several_runs(tmp_path):
    """``also``: the ensemble of runs over the same folds is scored as the mean of their predictions."""
    pool = common.load_pool(DEFAULT_DATA_DIR)
    torch.manual_seed(0)
    noise = {step: 40 * torch.randn_like(pool.s2) for step in (0, 2)}

    def record_run(name: str, shift: float) -> list:
        dirs = []
        for fold, members in enumerate(cv.grouped_folds(pool.names, 2)):
            recorder = cv.HeldOutRecorder(pool.subset(members), lambda tiles: tiles.s2)
            recorder.predictions = {step: pool.s2[members] + noise[step][members] + shift for step in noise}
            args = argparse.Namespace(fold=fold, folds=2, max_steps=2, schedule_steps=2, warmup=0.0, seed=0)
            recorder.save(tmp_path / name / f"fold{fold}", [], args)
            dirs.append(tmp_path / name / f"fold{fold}")
        return dirs

    low, high, middle = record_run("low", -30.0), record_run("high", 50.0), record_run("middle", 10.0)
    ensemble = cv.choose_step(pool, low, allow_start=False, also=[high])
    alone = cv.choose_step(pool, middle, allow_start=False)
    for together, single in zip(ensemble.table, alone.table, strict=True):
        assert together["psnr"] == pytest.approx(single["psnr"], abs=1e-4)
        assert together["structure_r"] == pytest.approx(single["structure_r"], abs=1e-6)
    assert cv.choose_step(pool, low, allow_start=False).table[1]["psnr"] < alone.table[1]["psnr"]
    with pytest.raises(ValueError, match="same steps and tiles"):  # a run missing a fold's tiles
        cv.choose_step(pool, low, allow_start=False, also=[high[:1]])
