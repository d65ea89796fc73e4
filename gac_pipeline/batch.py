"""Many scenes in one command: ``python -m gac_pipeline translate DIR_OR_GLOB --out OUT``.

Each scene goes to ``OUT/<file stem>/`` with the files of a single-file run. ``metrics.json`` is
written last (atomically), so it marks a finished scene: scenes whose folder holds one are skipped
(``--overwrite`` redoes them); a folder without it, left by a killed run, is redone. ``--shard i/N``
(or torchrun's RANK/WORLD_SIZE) picks every N-th scene of the sorted list, from the i-th. The pipeline
is loaded once; a bad scene is reported on one line and the batch goes on.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from pathlib import Path

SCENE_SUFFIXES = (".tif", ".tiff")


def expand_scenes(source: Path) -> list[Path] | None:
    """The sorted scenes of a folder (``*.tif``/``*.tiff``, not recursive) or a glob; None for one file.

    A path that exists as a file, or that is neither a folder nor a pattern, is None: the
    single-file mode handles it (and reports a missing file as before).
    """
    if source.is_dir():
        scenes = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SCENE_SUFFIXES)
    elif not source.exists() and any(char in str(source) for char in "*?["):
        scenes = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if Path(p).is_file())
    else:
        return None
    if not scenes:
        raise ValueError(f"{source}: no scenes found (a folder's *.tif/*.tiff files, or a glob's matching files)")
    by_stem: dict[str, Path] = {}
    for scene in scenes:
        if scene.stem in by_stem:
            raise ValueError(f"{by_stem[scene.stem]} and {scene} have the same stem: both would be written to "
                             f"--out/{scene.stem}/; rename one")
        by_stem[scene.stem] = scene
    return scenes


def pick_shard(scenes: list[Path], shard: str | None, environ=os.environ) -> tuple[list[Path], str | None]:
    """``(scenes of this process, "i/N" or None)``: index ≡ i mod N, from ``--shard`` or RANK/WORLD_SIZE."""
    where = "--shard"
    if shard is None and "RANK" in environ and "WORLD_SIZE" in environ:
        shard, where = f"{environ['RANK']}/{environ['WORLD_SIZE']}", "RANK/WORLD_SIZE"
    if shard is None:
        return scenes, None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not match or not int(match[1]) < int(match[2]):
        raise ValueError(f"{where} must be i/N with 0 <= i < N (e.g. 0/4), got {shard!r}")
    index, count = int(match[1]), int(match[2])
    return scenes[index::count], f"{index}/{count}"


def is_done(folder: Path) -> bool:
    """A finished scene: its metrics.json (written last, atomically) is there and readable."""
    try:
        report = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and "stages" in report


def run(args: argparse.Namespace, scenes: list[Path]) -> int:
    """Translate ``scenes`` into ``args.out/<stem>/``; 0 when none failed, else 1. Setup errors raise."""
    from tqdm.auto import tqdm

    from gac_pipeline import cli
    from gac_pipeline.data import biome_index

    if args.reference is not None:
        raise ValueError("--reference takes a single scene: per-scene references are not supported for a "
                         "folder or glob; translate those scenes one by one")
    mine, shard = pick_shard(scenes, args.shard)
    todo = [scene for scene in mine if args.overwrite or not is_done(args.out / scene.stem)]
    skipped = len(mine) - len(todo)
    if shard is not None:
        print(f"shard {shard}: {len(mine)} of {len(scenes)} scenes")
    if skipped:
        print(f"skipping {skipped} scene(s) already done in {args.out} (--overwrite redoes them)")
    translated, failures = 0, []
    if todo:
        # The options are checked once, before the model loads; the scenes are checked one by one.
        from gac_pipeline.presets import load_preset  # the model libraries: only when there is work
        from gac_pipeline.references import training_gradient_energy_for_preset

        if args.biome is not None:
            biome_index(args.biome)
        stages = cli.stage_list(args.stages)
        cli.check_options(args, stages)
        device = cli.resolve_device(args.device)
        if device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
            import torch

            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        pipeline = load_preset(args.preset, load_in_8bit=args.load_in_8bit or None).to(device)
        cli.check_uncertainty(args, pipeline, stages)
        energy = training_gradient_energy_for_preset(args.preset)
    for scene in tqdm(todo, desc="scenes", unit="scene", disable=args.no_progress):
        folder = args.out / scene.stem
        try:
            for name in cli.OUTPUT_FILES:  # nothing stale from an earlier or killed run stays next to the new files
                (folder / name).unlink(missing_ok=True)
            cli.translate(argparse.Namespace(**{**vars(args), "s1": scene, "out": folder, "no_progress": True}),
                          pipeline=pipeline, training_energy=energy)
            translated += 1
        except Exception as error:  # noqa: BLE001 - a bad scene must not stop the batch
            failures.append((scene.name, _reason(error, scene.name)))
            tqdm.write(f"failed: {scene.name}: {failures[-1][1]}", file=sys.stderr)
    summary = f"{translated} translated, {skipped} skipped (done), {len(failures)} failed"
    summary += ": " + "; ".join(f"{name}: {reason}" for name, reason in failures) if failures else ""
    print(("" if shard is None else f"shard {shard}: ") + summary)
    return 1 if failures else 0


def _reason(error: Exception, name: str) -> str:
    """The error's first line without a leading ``name: `` (the input errors name their file)."""
    from gac_pipeline.io import InputError

    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if not text or not isinstance(error, (InputError, ValueError, OSError, RuntimeError)):
        text = f"{type(error).__name__}: {text}".rstrip(": ")  # an unexpected error: say which
    return text.removeprefix(f"{name}: ")
