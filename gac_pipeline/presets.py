"""Named pipelines: the embedded ``mini`` (in the repo, works offline) and ``hub``.

``hub`` is TerraMind-1.0 and Prithvi-EO-2.0 with their pretrained Hub weights (stage 1 and 3
in zero-shot ``generate`` mode); it needs the Hub or a filled local cache. Any other value is a
folder written by ``save_pretrained`` or a Hub repo id (optionally ``repo@revision``).
"""

from __future__ import annotations

from pathlib import Path

from gac_pipeline import hub

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
PRESETS = {"mini": PRESETS_DIR / "mini", "hub": PRESETS_DIR / "hub"}
DEFAULT_PRESET = "mini"


def preset_location(preset: str) -> tuple[str | Path, str | None]:
    """Map a preset name, folder or ``repo@revision`` to (location, revision)."""
    if preset in PRESETS:
        return PRESETS[preset], None
    if "@" in preset and not Path(preset).exists():
        repo, revision = preset.rsplit("@", 1)
        return repo, revision
    return preset, None


def preset_notes(preset: str) -> list[str]:
    """The notes every output of ``preset`` carries: one when it is a Hub repo at a moving revision.

    ``repo@branch``, ``repo@tag`` and a bare ``repo`` (its ``main`` branch) are not pinned: the
    repo's owners can move them to other weights, as with a base model loaded from a branch
    (``GACPipeline.unpinned_notes``). ``repo@<40-hex commit>``, the named presets and local
    folders get no note.
    """
    location, revision = preset_location(preset)
    if preset in PRESETS or Path(location).expanduser().is_dir() or hub.is_commit(revision):
        return []
    note = (f"preset {location}@{revision or 'main'} is not pinned to a commit: its owners can change these "
            f"weights (the outputs' preset tag records the commit used; pass {location}@<commit> to pin it)")
    return [note]


def load_preset(preset: str = DEFAULT_PRESET, *, load_in_8bit: bool | None = None):
    """Load a pipeline by preset name, folder or Hub repo id (notes for it: :func:`preset_notes`)."""
    from gac_pipeline.pipeline import GACPipeline

    location, revision = preset_location(preset)
    return GACPipeline.from_pretrained(location, revision, load_in_8bit=load_in_8bit)
