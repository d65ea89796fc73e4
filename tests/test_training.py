"""Stage-1 training script: 2 steps on the bundled tiles, loadable output, log, resume."""

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gac_pipeline.configs import PipelineConfig
from gac_pipeline.data import DEFAULT_DATA_DIR, PairDataset, list_pairs
from gac_pipeline.pipeline import GACPipeline
from training import common, cv, train_stage1
from training.init_presets import mini_pipeline

SMOKE = ["--data", str(DEFAULT_DATA_DIR), "--batch-size", "2", "--crop", "32", "--eval-every", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    mini_pipeline().save_pretrained(root / "untrained")  # stages 2/3 come from here, untrained
    out = root / "stage1"
    summary = train_stage1.main([*SMOKE, "--out", str(out), "--max-steps", "2", "--init-from", str(root / "untrained"),
                                 "--fold", "0"])
    return out, summary


def test_output_is_a_loadable_pipeline(trained):
    out, summary = trained
    pipeline = GACPipeline.from_pretrained(out)
    assert pipeline.stage1.config.trained
    assert not pipeline.config.trained  # stages 2/3 are untrained: the label must say so
    assert "stage 1: trained on" in pipeline.config.description
    assert "stage 2: not trained" in pipeline.config.description
    pair = list_pairs(DEFAULT_DATA_DIR, "validation")[0]
    item = PairDataset([pair])[0]
    result = pipeline.translate(item["s1"].numpy())
    for image in (result.opt_v1, result.opt_v2, result.opt_v3):
        assert image.shape == (12, 120, 120)
        assert np.isfinite(image).all()
    assert summary["steps"] == 2 and summary["train_tiles"] + summary["held_out_tiles"] == 32
    assert np.isfinite(summary["held_out_psnr"])


def test_log_and_checkpoint(trained):
    out, _ = trained
    work = out.parent / f"{out.name}_train"
    with open(work / common.LOG_FILE) as file:
        rows = list(csv.DictReader(file))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]  # step 0: the starting weights
    assert all(r["train_loss"] and r["psnr"] and r["ssim"] for r in rows[1:])
    state = common.load_checkpoint(work / common.CHECKPOINT_FILE)  # weights_only=True
    assert state["step"] == 2 and set(state) >= {"model", "optimizer", "scheduler", "ema", "schedule_steps"}
    assert not list(out.rglob("*.pt"))  # pipeline folders refuse pickles
    held_out = load_file(work / cv.HELDOUT_FILE)  # the fold run's predictions for its held-out tiles, by step
    record = json.loads((work / cv.FOLD_FILE).read_text())
    assert set(held_out) == {f"{step}/{name}" for step in (0, 1, 2) for name in record["held_out"]}


def test_resume_continues_from_saved_step(trained, tmp_path):
    out, _ = trained
    work = out.parent / f"{out.name}_train"
    summary = train_stage1.main([*SMOKE, "--out", str(out), "--max-steps", "3", "--resume",
                                 "--init-from", str(out.parent / "untrained"), "--fold", "0"])
    assert summary["steps"] == 3
    with open(work / common.LOG_FILE) as file:
        assert [int(r["step"]) for r in csv.DictReader(file)] == [0, 1, 2, 3]
    assert common.load_checkpoint(work / common.CHECKPOINT_FILE)["step"] == 3
    # the resumed fold run keeps the held-out predictions it recorded before
    assert {int(key.split("/")[0]) for key in load_file(work / cv.HELDOUT_FILE)} == {0, 1, 2, 3}


def test_augment_keeps_pairs_aligned():
    generator = common.seed_all(0)
    base = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 8, 8)
    for _ in range(10):
        a, b = common.augment([base[:1], base * 10], 4, generator)
        assert a.shape == (1, 4, 4) and b.shape == (2, 4, 4)
        assert torch.equal(a[0] * 10, b[0])  # same crop, rotation and flip on both


def test_paste_blobs_moves_sar_and_optical_together():
    generator = common.seed_all(0)
    size = 32
    batch = {"s1": torch.zeros(4, 2, size, size), "s2": torch.zeros(4, 12, size, size),
             "month": torch.arange(4), "uniform": torch.rand(4, 2)}
    donor = {"s1": torch.ones(4, 2, size, size), "s2": torch.full((4, 12, size, size), 5.0)}
    assert common.paste_blobs(batch, 0.0, generator, donor) is batch  # off: nothing drawn, nothing changed
    pasted = common.paste_blobs(batch, 1.0, generator, donor)
    sar_mask, optical_mask = pasted["s1"] == 1, pasted["s2"] == 5
    assert torch.equal(sar_mask[:, :1].expand(-1, 12, -1, -1), optical_mask)  # the same pixels in every band
    assert torch.equal(sar_mask[:, 0], sar_mask[:, 1])
    covered = sar_mask[:, 0].float().mean(dim=(1, 2))
    assert ((covered > 0.01) & (covered < 0.5)).all()  # an ellipse in every sample, never the whole crop
    assert pasted["month"] is batch["month"] and pasted["uniform"] is batch["uniform"]
    # without a donor, each sample takes from the next one
    batch["s1"] = torch.arange(4.0).view(4, 1, 1, 1).expand(-1, 2, size, size)
    shuffled = common.paste_blobs(batch, 1.0, generator)["s1"][:, 0]
    for i in range(4):
        assert set(shuffled[i].unique().tolist()) == {float(i), float((i + 1) % 4)}


def test_water_donors_are_calm_water_outside_the_held_out_scenes():
    pool = common.load_pool(DEFAULT_DATA_DIR, clear_only=False)
    donors = common.water_donors(DEFAULT_DATA_DIR)
    assert len(donors) >= 2
    green, nir = donors.s2[:, 2], donors.s2[:, 7]
    assert ((green > nir).float().mean(dim=(1, 2)) >= 0.9).all()  # open water
    assert (donors.s1[:, 0].flatten(1).median(dim=1).values < -20).all()  # SAR-dark, not wind-roughened
    assert len(common.calm_water(pool, max_vv_db=0.0)) > len(donors)  # wind-roughened sea is left out
    held_out = donors.subset([0])
    kept = common.water_donors(DEFAULT_DATA_DIR, held_out)
    assert donors.names[0] not in kept.names and len(kept) == len(donors) - 1


def test_paste_water_without_donors_is_refused(tmp_path):
    land = tmp_path / "land"  # two clear land pairs and their index rows: no water to paste
    pairs = [list_pairs(DEFAULT_DATA_DIR, split, clear_only=True)[0] for split in common.TRAINING_SPLITS]
    with open(DEFAULT_DATA_DIR / "index.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["pair"] in {p.name for p in pairs}]
    for pair in pairs:
        (land / pair.name).mkdir(parents=True)
        for path in (pair.s1_path, pair.s2_path):
            (land / pair.name / path.name).symlink_to(path.resolve())
    with open(land / "index.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match="needs calm open-water donor tiles"):
        train_stage1.main([*SMOKE[2:], "--data", str(land), "--out", str(tmp_path / "s1"), "--max-steps", "1",
                           "--paste-water", "0.2"])


def test_test_split_is_refused():
    with pytest.raises(ValueError, match="training reads only"):
        common.load_split(DEFAULT_DATA_DIR, "test")


def test_a_missing_data_folder_is_one_line_before_any_work(tmp_path, capsys):
    from training import train_mini

    for parse in (train_stage1.parse_args, train_mini.parse_args):
        with pytest.raises(SystemExit) as stop:
            parse(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
        assert stop.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(f"argument --data: {tmp_path / 'nowhere'}: no such folder")


def test_description_keeps_label_honest(trained):
    out, _ = trained
    config = PipelineConfig.load(out / "pipeline_config.json")
    assert config.trained is False and config.name == "GAC-mini"


def test_gradient_energy_match_is_per_band():
    from training import losses

    torch.manual_seed(0)
    target = 1000 + 300 * torch.rand(2, 12, 32, 32)
    assert losses.gradient_energy_match(target, target).item() == pytest.approx(0.0, abs=1e-6)
    blurred = torch.nn.functional.avg_pool2d(target, 5, stride=1, padding=2, count_include_pad=False)
    assert losses.gradient_energy_match(blurred, target).item() > 1.0
    # All the contrast moved into green (B03): luminance alone could be matched, each band cannot.
    mean = target.mean(dim=(2, 3), keepdim=True)
    recoloured = mean.expand_as(target).clone()
    recoloured[:, 2] = mean[:, 2] + (target[:, 2] - mean[:, 2]) * 1.6
    assert losses.gradient_energy_match(recoloured, target).item() > 5.0


def test_structure_loss_is_blind_to_contrast_not_to_layout():
    from training import losses

    torch.manual_seed(0)
    target = 1000 + 300 * torch.rand(2, 12, 32, 32)
    assert losses.structure_loss(target, target).item() == pytest.approx(0.0, abs=1e-5)
    faint = target.mean() + 0.01 * (target - target.mean())  # the layout at 1% of the contrast
    assert losses.structure_loss(faint, target).item() == pytest.approx(0.0, abs=1e-4)
    assert losses.structure_loss(torch.flip(target, dims=(-1,)), target).item() > 0.8


def test_scene_l1_is_blind_to_each_crops_colour_not_to_the_scene():
    from gac_pipeline.standardization import Standardization
    from training import losses

    torch.manual_seed(0)
    std = Standardization()
    target = 1000 + 300 * torch.rand(2, 12, 32, 32)
    recoloured = target + 500 * torch.randn(2, 12, 1, 1)  # each crop and band off by its own offset
    assert losses.scene_l1(recoloured, target, std).item() == pytest.approx(0.0, abs=1e-5)
    assert losses.l1(recoloured, target, std).item() > 0.05
    assert losses.scene_l1(torch.flip(target, dims=(-1,)), target, std).item() > 0.05


def test_adversarial_step_trains_the_critic_and_returns_the_generator_term():
    from training import losses

    torch.manual_seed(0)
    critic = losses.PatchDiscriminator()
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    real, fake = torch.randn(2, 12, 32, 32) + 1.0, torch.randn(2, 12, 32, 32, requires_grad=True)
    before = [p.detach().clone() for p in critic.parameters()]
    term = losses.adversarial_step(critic, optimizer, fake, real)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, critic.parameters()))  # the critic stepped
    term.backward()
    assert term.ndim == 0 and fake.grad is not None and fake.grad.abs().sum() > 0  # the generator gets a gradient
