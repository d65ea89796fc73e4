"""Hub references: a preset at a moving revision says so, and a checkpoint folder holds only listed files.

(The ``adapter_config.json`` check is in ``test_pinned_weights.py``, next to the pretrained-base
fixtures that an adapters-only checkpoint needs.)
"""

import json
import shutil

import pytest
from conftest import build_tiny_pipeline
from huggingface_hub import constants

from app import handlers
from gac_pipeline import hub
from gac_pipeline.cli import main
from gac_pipeline.configs import PipelineConfig
from gac_pipeline.io import read_s1
from gac_pipeline.pipeline import GACPipeline
from gac_pipeline.presets import PRESETS, load_preset, preset_notes
from gac_pipeline.references import References

COMMIT = "b" * 40
REPO = "test-org/gac-refs"


# ----------------------------------------------------------------------------- moving revisions


@pytest.mark.parametrize(("preset", "shown"), [(f"{REPO}@main", "main"), (f"{REPO}@v1.0", "v1.0"), (REPO, "main"),
                                               (f"{REPO}@{'B' * 40}", "B" * 40)])
def test_a_moving_hub_revision_gets_a_not_pinned_note(preset, shown):
    notes = preset_notes(preset)
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith(f"preset {REPO}@{shown} is not pinned to a commit: its owners can change these weights")


def test_commits_named_presets_and_folders_get_no_note(saved_tiny_pipeline):
    assert preset_notes(f"{REPO}@{COMMIT}") == []
    assert preset_notes("mini") == preset_notes("hub") == []
    assert preset_notes(str(saved_tiny_pipeline)) == []


@pytest.fixture
def hub_repo(tmp_path, monkeypatch):
    """``REPO`` in a fake Hugging Face cache: one commit, which ``main`` points to."""
    root = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    folder = root / f"models--{REPO.replace('/', '--')}"
    build_tiny_pipeline(1).save_pretrained(folder / "snapshots" / COMMIT)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    return folder


def test_the_note_reaches_the_cli_and_the_app(hub_repo, real_pair, tmp_path):
    expected = f"preset {REPO}@main is not pinned to a commit"
    for preset, noted in ((f"{REPO}@main", True), (f"{REPO}@{COMMIT}", False)):
        out = tmp_path / preset.replace("/", "_")
        assert main(["translate", str(real_pair.s1_path), "--out", str(out), "--preset", preset,
                     "--no-progress"]) == 0
        notes = json.loads((out / "metrics.json").read_text())["notes"]
        assert sum(note.startswith(expected) for note in notes) == noted, notes  # once, or not at all
        api_notes = load_preset(preset).translate(read_s1(real_pair.s1_path).data, seed=0).notes  # the Python API too
        assert sum(note.startswith(expected) for note in api_notes) == noted, api_notes
    app_notes = handlers.translate(real_pair.s1_path, None, f"{REPO}@main", out_dir=tmp_path / "app")["notes"]
    assert any(note.startswith(expected) for note in app_notes)


# ----------------------------------------------------------------------------- unlisted files


@pytest.fixture
def checkpoint(saved_tiny_pipeline, tmp_path):
    return shutil.copytree(saved_tiny_pipeline, tmp_path / "checkpoint")


@pytest.mark.parametrize("relative", ["stage1/extra.safetensors", "stage2/adapter/adapter_model.safetensors",
                                      "notes.txt", "stage3/old/config.json"])
def test_a_file_the_listing_does_not_name_is_refused(checkpoint, relative):
    (checkpoint / relative).parent.mkdir(parents=True, exist_ok=True)
    (checkpoint / relative).write_bytes(b"not listed")
    with pytest.raises(hub.CheckpointSafetyError) as info:
        GACPipeline.from_pretrained(checkpoint)
    assert str(info.value) == (f"{relative}: not listed in pipeline_config.json, refused: an unlisted file has "
                               "no hash to check")


def test_known_extras_are_allowed(checkpoint, real_pair):
    """The model card, the training record, references/ (checked against references.json) and
    what git and the Hub leave behind at the top level load; so do both committed presets."""
    from gac_pipeline.io import read_s1, read_s2

    (checkpoint / "README.md").write_text("# card\n")
    (checkpoint / "training.json").write_text("{}\n")
    (checkpoint / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (checkpoint / ".git").mkdir()
    (checkpoint / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    s1, s2 = read_s1(real_pair.s1_path).data, read_s2(real_pair.s2_path).data
    References.fit(s1[None], s2[None], source="the test pair").save(checkpoint)
    GACPipeline.from_pretrained(checkpoint)
    assert References.load(checkpoint) is not None

    load_preset("mini")
    hub.verify_folder(PRESETS["hub"], PipelineConfig.load(PRESETS["hub"] / hub.PIPELINE_CONFIG).files)


def test_an_unlisted_file_in_references_is_refused_there(checkpoint, real_pair):
    from gac_pipeline.io import read_s1, read_s2

    s1, s2 = read_s1(real_pair.s1_path).data, read_s2(real_pair.s2_path).data
    References.fit(s1[None], s2[None], source="the test pair").save(checkpoint)
    (checkpoint / "references" / "control").mkdir()
    (checkpoint / "references" / "control" / "model.safetensors").write_bytes(b"not listed")
    with pytest.raises(hub.CheckpointSafetyError, match=r"control/model\.safetensors: not listed"):
        References.load(checkpoint)
    GACPipeline.from_pretrained(checkpoint)  # the pipeline itself does not read references/
