"""``translate`` on a folder or glob: one subfolder per scene, resumable, sharded, a bad scene reported and skipped."""

import json
from pathlib import Path

import pytest

from gac_pipeline import presets
from gac_pipeline.cli import main
from tests import bad_inputs

OUTPUTS = ("opt_v1.tif", "opt_v2.tif", "opt_v3.tif", "metrics.json")


def _scenes(folder: Path, names=("a.tif", "b.tif", "c.tif")) -> Path:
    """Tiny valid SAR scenes (``bad_inputs``' 32x32 dB rasters) named ``names`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        bad_inputs.write_raster(folder / name, bad_inputs.sar_db(seed=seed))
    return folder


def _run(source, out: Path, preset: Path, *extra: str) -> int:
    return main(["translate", str(source), "--out", str(out), "--preset", str(preset), "--no-progress", *extra])


def _done(out: Path) -> set[str]:
    return {folder.name for folder in out.iterdir() if (folder / "metrics.json").is_file()} if out.exists() else set()


def _mtimes(out: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}


def _one_line_error(capsys, *fragments: str) -> None:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    assert all(fragment in err for fragment in fragments), err


@pytest.fixture
def load_count(monkeypatch):
    """How many times a pipeline was loaded."""
    calls = []
    original = presets.load_preset
    monkeypatch.setattr(presets, "load_preset", lambda *a, **k: calls.append(a) or original(*a, **k))
    return calls


def test_folder_translates_each_scene_once_then_skips(saved_tiny_pipeline, tmp_path, capsys, load_count):
    scenes = _scenes(tmp_path / "scenes", ("a.tif", "b.tif", "c.TIFF"))
    _scenes(scenes / "nested", ("d.tif",))  # not recursive
    (scenes / "notes.txt").write_text("not a scene\n")
    out = tmp_path / "out"
    assert _run(scenes, out, saved_tiny_pipeline) == 0
    assert load_count == [(str(saved_tiny_pipeline),)]  # once for the batch
    assert "3 translated, 0 skipped (done), 0 failed" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"a", "b", "c"}
    for stem, name in (("a", "a.tif"), ("b", "b.tif"), ("c", "c.TIFF")):
        assert all((out / stem / file).is_file() for file in OUTPUTS)
        report = json.loads((out / stem / "metrics.json").read_text())
        assert Path(report["input"]).name == name and set(report["stages"]) == {"opt_v1", "opt_v2", "opt_v3"}
    assert not list(out.rglob("*.partial"))

    before = _mtimes(out)
    assert _run(scenes, out, saved_tiny_pipeline, "--preset", "other-options-still-skip") == 0
    printed = capsys.readouterr().out
    assert "skipping 3 scene(s) already done" in printed and "0 translated, 3 skipped (done), 0 failed" in printed
    assert _mtimes(out) == before and len(load_count) == 1  # nothing rewritten, no pipeline loaded


def test_partial_folders_are_redone_and_overwrite_redoes_all(saved_tiny_pipeline, tmp_path, capsys):
    scenes, out = _scenes(tmp_path / "scenes"), tmp_path / "out"
    assert _run(scenes, out, saved_tiny_pipeline) == 0
    (out / "b" / "metrics.json").unlink()  # a run killed before b's marker
    (out / "c" / "metrics.json").write_text('{"stages": ')  # a marker cut short (older, non-atomic writer)
    (out / "b" / "preview.png").write_bytes(b"stale")
    kept = (out / "a" / "opt_v1.tif").stat().st_mtime_ns
    capsys.readouterr()
    assert _run(scenes, out, saved_tiny_pipeline) == 0
    assert "2 translated, 1 skipped (done), 0 failed" in capsys.readouterr().out
    assert _done(out) == {"a", "b", "c"} and json.loads((out / "c" / "metrics.json").read_text())["stages"]
    assert not (out / "b" / "preview.png").exists()  # the redone folder holds only this run's files
    assert (out / "a" / "opt_v1.tif").stat().st_mtime_ns == kept

    assert _run(scenes, out, saved_tiny_pipeline, "--overwrite") == 0
    assert "3 translated, 0 skipped (done), 0 failed" in capsys.readouterr().out
    assert (out / "a" / "opt_v1.tif").stat().st_mtime_ns != kept


def test_shards_split_the_sorted_list(saved_tiny_pipeline, tmp_path, capsys, monkeypatch):
    scenes = _scenes(tmp_path / "scenes", ("c.tif", "a.tif", "d.tif", "b.tif"))
    monkeypatch.setenv("RANK", "0")  # --shard wins over torchrun's variables
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert _run(scenes, tmp_path / "s0", saved_tiny_pipeline, "--shard", "0/2") == 0
    assert "shard 0/2: 2 of 4 scenes" in capsys.readouterr().out
    assert _run(scenes, tmp_path / "s1", saved_tiny_pipeline, "--shard", " 1 / 2 ") == 0
    assert _done(tmp_path / "s0") == {"a", "c"} and _done(tmp_path / "s1") == {"b", "d"}


def test_torchrun_rank_and_world_size_pick_the_shard(saved_tiny_pipeline, tmp_path, capsys, monkeypatch):
    scenes = _scenes(tmp_path / "scenes")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _run(scenes, tmp_path / "out", saved_tiny_pipeline) == 0
    assert "shard 1/2: 1 of 3 scenes" in capsys.readouterr().out
    assert _done(tmp_path / "out") == {"b"}


def test_glob_takes_the_sorted_matches(saved_tiny_pipeline, tmp_path):
    scenes = _scenes(tmp_path / "scenes", ("x1.tif", "x2.tif", "y.tif", "x3.tiff"))
    assert _run(scenes / "x*.tif", tmp_path / "out", saved_tiny_pipeline) == 0
    assert _done(tmp_path / "out") == {"x1", "x2"}


def test_a_bad_scene_is_reported_and_the_batch_goes_on(saved_tiny_pipeline, tmp_path, capsys):
    scenes = _scenes(tmp_path / "scenes")
    bad_inputs.write_not_a_tiff(scenes)
    bad_inputs.write_sar_bands(scenes)
    out = tmp_path / "out"
    assert _run(scenes, out, saved_tiny_pipeline) == 1
    captured = capsys.readouterr()
    assert _done(out) == {"a", "b", "c"}
    failures = captured.err.strip().splitlines()
    assert len(failures) == 2 and failures[0].startswith("failed: not_a_tiff.tif: not a readable raster")
    assert failures[1] == "failed: sar_3_bands.tif: expected 2 SAR bands (VV, VH), found 3"
    summary = captured.out.strip().splitlines()[-1]
    assert summary.startswith("3 translated, 0 skipped (done), 2 failed: not_a_tiff.tif: not a readable raster")
    assert summary.endswith("; sar_3_bands.tif: expected 2 SAR bands (VV, VH), found 3")

    assert _run(scenes, out, saved_tiny_pipeline) == 1  # failed scenes are retried, done ones skipped
    assert "0 translated, 3 skipped (done), 2 failed" in capsys.readouterr().out


@pytest.mark.parametrize("shard", ["2/2", "1/1", "0/0", "-1/2", "a/b", "1", "0/2/4", ""])
def test_bad_shard_is_one_line(shard, saved_tiny_pipeline, tmp_path, capsys):
    assert _run(_scenes(tmp_path / "scenes"), tmp_path / "out", saved_tiny_pipeline, f"--shard={shard}") == 2
    _one_line_error(capsys, "--shard must be i/N with 0 <= i < N", repr(shard))
    assert not (tmp_path / "out").exists()


def test_bad_torchrun_variables_are_one_line(saved_tiny_pipeline, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "4")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert _run(_scenes(tmp_path / "scenes"), tmp_path / "out", saved_tiny_pipeline) == 2
    _one_line_error(capsys, "RANK/WORLD_SIZE must be i/N", "'4/4'")


def test_refusals_before_any_work(saved_tiny_pipeline, tmp_path, capsys, load_count):
    scenes, out = _scenes(tmp_path / "scenes"), tmp_path / "out"
    bad_inputs.write_raster(scenes / "a.tiff", bad_inputs.sar_db())
    assert _run(scenes, out, saved_tiny_pipeline) == 2
    _one_line_error(capsys, "a.tif and ", "a.tiff have the same stem")

    (scenes / "a.tiff").unlink()
    assert _run(scenes, out, saved_tiny_pipeline, "--reference", str(scenes / "a.tif")) == 2
    _one_line_error(capsys, "--reference takes a single scene")
    assert _run(tmp_path / "empty*.tif", out, saved_tiny_pipeline) == 2
    _one_line_error(capsys, "no scenes found")
    assert _run(scenes / "a.tif", out, saved_tiny_pipeline, "--shard", "0/2") == 2
    _one_line_error(capsys, "--shard needs many scenes")
    assert _run(scenes, out, saved_tiny_pipeline, "--stages", "2,3") == 2
    _one_line_error(capsys, "stage 1 must run")
    assert not out.exists() and load_count == []
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    assert _run(scenes, taken, saved_tiny_pipeline) == 2
    _one_line_error(capsys, "is a file, expected a folder")
    assert load_count == []


def test_a_bad_uncertainty_count_is_one_setup_error(saved_tiny_pipeline, tmp_path, capsys):
    scenes, out = _scenes(tmp_path / "scenes"), tmp_path / "out"
    assert _run(scenes, out, saved_tiny_pipeline, "--uncertainty", "9") == 2  # regress mode: 8 dihedral variants
    _one_line_error(capsys, "8 dihedral variants, got 9")
    assert _done(out) == set()
