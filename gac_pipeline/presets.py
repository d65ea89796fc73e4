"""Named pipelines: the embedded ``mini`` (in the repo, works offline) and ``hub``.

``hub`` is TerraMind-1.0 and Prithvi-EO-2.0 with their pretrained Hub weights (stage 1 and 3
in zero-shot ``generate`` mode); it needs the Hub or a filled local cache. Any other value is a
folder written by ``save_pretrained`` or a Hub repo id (optionally ``repo@revision``).
"""

from __future__ import annotations

from pathlib import Path

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


def load_preset(preset: str = DEFAULT_PRESET, *, load_in_8bit: bool | None = None):
    """Load a pipeline by preset name, folder or Hub repo id."""
    from gac_pipeline.pipeline import GACPipeline

    location, revision = preset_location(preset)
    return GACPipeline.from_pretrained(location, revision, load_in_8bit=load_in_8bit)
