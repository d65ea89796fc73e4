"""bench.macs counts multiply-adds per pixel exactly, per child module and in all."""

import re

import torch
from torch import nn

from bench.macs import macs_per_pixel


def test_macs_per_pixel_of_known_convolutions():
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 4, 1))
    counts = macs_per_pixel(model, torch.randn(1, 2, 32, 32), pixels=32 * 32)
    assert counts["0"] == 2 * 8 * 9 and counts["2"] == 8 * 4
    assert counts["total"] == 2 * 8 * 9 + 8 * 4


def test_macs_per_pixel_cli_prints_every_stage_and_the_control(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from bench import macs

    macs.main(["--size", "64"])
    out = capsys.readouterr().out
    for name in ("stage1", "stage2", "stage3", "chain", "control"):  # mini stores a control: a count each
        assert re.search(rf"^  {name} +[1-9][\d,]*$", out, re.MULTILINE), out
