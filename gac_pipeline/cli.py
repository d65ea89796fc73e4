"""Command line: ``python -m gac_pipeline translate S1.tif --out DIR [options]`` and ``publish model|space``.

``translate`` also takes a folder or a quoted glob of scenes: each goes to ``DIR/<file stem>/``
(:mod:`gac_pipeline.batch`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gac_pipeline import publish
from gac_pipeline.bands import S2L2A_BANDS

# Scoring reads the three outputs back into memory; beyond this the scene is written but not scored.
MAX_SCORED_PIXELS = 2048 * 2048

# --uncertainty and --preview hold the scene in memory: they are refused on larger scenes.
MAX_IN_MEMORY_PIXELS = MAX_SCORED_PIXELS
# preview.png: every column at least this many pixels wide (a 120-px tile x3), a label strip above.
PREVIEW_MIN_PX = 360
PREVIEW_LABEL_PX = 20
PREVIEW_GAP_PX = 4

# metrics.json layout: 2 added structure_r, edge_r, sharpness, sharpness_vs_training (+ _reason) per
# stage and training_gradient_energy, reference_sharpness_vs_training at the top level; 3 added masked_pixels and
# mask_reason per stage (masked pixels are left out of every score).
METRICS_SCHEMA_VERSION = 3

# What a scene's output folder may hold; metrics.json, written last, marks a finished scene.
OUTPUT_FILES = ("metrics.json", "opt_v1.tif", "opt_v2.tif", "opt_v3.tif", "uncertainty.tif", "preview.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gac_pipeline",
                                     description="GAC: Sentinel-1 SAR to Sentinel-2 optical in three stages.")
    commands = parser.add_subparsers(dest="command", required=True)
    translate = commands.add_parser("translate",
                                    help="translate SAR GeoTIFFs (VV, VH in dB): one file, a folder or a glob")
    translate.add_argument("s1", type=Path, metavar="S1",
                           help="SAR GeoTIFF with 2 bands VV, VH (dB unless --sar-units linear); or a folder (its "
                                "*.tif/*.tiff) or a quoted glob ('scenes/*.tif'): each scene into OUT/<file stem>/")
    translate.add_argument("--out", type=Path, required=True,
                           help="output folder for opt_v1/2/3.tif + metrics.json (many scenes: one subfolder each)")
    translate.add_argument("--reference", type=Path, help="12-band S2L2A GeoTIFF to score against (one scene only)")
    translate.add_argument("--preset", default="mini", help="mini (embedded), hub, a checkpoint folder or repo@rev")
    translate.add_argument("--stages", default="1,2,3", help="stages to run, e.g. 1,3 (skipped stages pass through)")
    translate.add_argument("--month", type=int, choices=range(1, 13), metavar="1..12",
                           help="acquisition month (default: from the file's metadata or name)")
    translate.add_argument("--biome", type=str.lower,
                           help="biome name, any case (see gac_pipeline.data.BIOMES); default unknown")
    translate.add_argument("--seed", type=int, default=0)
    translate.add_argument("--sar-units", choices=("db", "linear"),
                           help="units of the SAR values (default: from metadata, else dB)")
    translate.add_argument("--load-in-8bit", action="store_true", help="run the Prithvi backbone in int8")
    translate.add_argument("--timesteps", type=int, metavar="N",
                           help="diffusion steps of generate-mode stages (default: each stage's own; regress ignores it)")
    translate.add_argument("--uncertainty", type=int, default=0, metavar="N",
                           help="also write uncertainty.tif: per-pixel std over N test-time variants (regress mode: "
                                "dihedral transforms, N <= 8; generate mode: N seeds)")
    translate.add_argument("--preview", action="store_true",
                           help="also write preview.png: SAR | opt_v1 | opt_v2 | opt_v3 [| reference]")
    translate.add_argument("--dtype", choices=("float32", "uint16"), default="float32",
                           help="opt_v*.tif: float32 DN with NaN nodata (default), or uint16 DN as Sentinel-2 L2A "
                                "stores them (whole DN, 0 nodata; half the size, written faster)")
    translate.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                           help="where the model runs (default auto: cuda when available, else cpu)")
    translate.add_argument("--no-progress", action="store_true", help="no progress bar")
    translate.add_argument("--shard", metavar="i/N",
                           help="many scenes: translate only those whose index in the sorted list is i mod N "
                                "(0 <= i < N); default under torchrun: RANK/WORLD_SIZE")
    translate.add_argument("--overwrite", action="store_true",
                           help="many scenes: redo scenes already done (by default a scene whose folder holds "
                                "metrics.json is skipped, even if it was made with other options)")
    publish.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "publish":
        return publish.main(args)
    # Imported here so `--help` is instant and import problems become one-line errors too.
    from gac_pipeline import batch
    from gac_pipeline.io import InputError

    try:
        check_out_folder(args.out)
        scenes = batch.expand_scenes(args.s1)
        if scenes is not None:
            return batch.run(args, scenes)
        if args.shard is not None:
            raise ValueError("--shard needs many scenes: give a folder or a glob")
        report = translate(args)
    except (InputError, ValueError, OSError, RuntimeError) as error:  # OSError: e.g. --out not writable
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "pipeline": report["pipeline"], "notes": report["notes"]}, indent=2))
    return 0


def translate(args: argparse.Namespace, pipeline=None, training_energy: tuple | None = None) -> dict:
    """One scene into ``args.out``; ``pipeline`` and ``training_energy`` (from
    ``training_gradient_energy_for_preset``) are loaded from ``args.preset`` when not given."""
    from gac_pipeline.data import biome_index
    from gac_pipeline.io import SarSource, check_same_grid, read_output, read_s1, read_s2

    if args.biome is not None:
        biome_index(args.biome)  # fail fast with the list of valid names
    stages = stage_list(args.stages)
    device = resolve_device(args.device)
    _check_in_memory_options(args)
    # Validate every input before any model work, so a bad reference costs nothing.
    with SarSource(args.s1, units=args.sar_units) as source:
        scorable = source.height * source.width <= MAX_SCORED_PIXELS
    if args.reference is not None and not scorable:
        raise ValueError(f"--reference: scenes over {MAX_SCORED_PIXELS} pixels are written but not scored; "
                         "run without --reference")
    sar = read_s1(args.s1, units=args.sar_units, max_pixels=MAX_SCORED_PIXELS) if scorable else None
    reference = read_s2(args.reference) if args.reference is not None else None
    if reference is not None and sar is not None:
        check_same_grid(sar, reference, args.s1, args.reference)
    # The model libraries take about 20 s to import: only once the inputs are known to be good.
    from gac_pipeline.metrics import compute_metrics, mask_note, sar_edge_agreement, sharpness, to_json_safe
    from gac_pipeline.presets import load_preset
    from gac_pipeline.references import training_gradient_energy_for_preset

    check_options(args, stages)
    if pipeline is None:
        pipeline = load_preset(args.preset, load_in_8bit=args.load_in_8bit or None).to(device)
    check_uncertainty(args, pipeline, stages)
    spread = _run_uncertainty(args, pipeline, stages)
    # The inputs and options are good: nothing from an earlier run with other options stays next to this
    # one's files (metrics.json, the finished-scene marker, first; opt_v*.tif are replaced as they are written).
    for name in OUTPUT_FILES:
        if not name.startswith("opt_v"):
            (args.out / name).unlink(missing_ok=True)
    result = pipeline.translate_file(args.s1, args.out, units=args.sar_units, month=args.month,
                                     biome=args.biome, seed=args.seed, stages=stages,
                                     progress=not args.no_progress, timesteps=args.timesteps, dtype=args.dtype)
    _write_uncertainty_and_preview(args, pipeline, stages, spread, result["paths"])
    # The training tiles' median sharpness, stored with the preset's references (if any).
    train_energy, train_energy_reason = training_energy or training_gradient_energy_for_preset(args.preset)
    report = {"schema_version": METRICS_SCHEMA_VERSION, "pipeline": pipeline.label,
              "trained": pipeline.config.trained, "input": str(args.s1),
              "reference": str(args.reference) if args.reference else None, "month": result["month"],
              "biome": args.biome, "seed": args.seed, "bands": list(S2L2A_BANDS),
              "notes": result["notes"] + (reference.notes if reference is not None else []),
              "timings_s": result["timings_s"],
              "training_gradient_energy": train_energy, "stages": {}}
    valid = None  # scored pixels: neither the SAR nor the reference masks them (nodata, mask band, NaN)
    if sar is None:
        report["notes"].append(f"metrics n/a: scenes over {MAX_SCORED_PIXELS} pixels are written but not scored")
    else:
        valid = sar.valid_mask if reference is None else sar.valid_mask & reference.valid_mask
        report["notes"] += [note for note in [mask_note(valid)] if note]
    for index, (name, path) in enumerate(result["paths"].items(), start=1):
        entry = {"file": str(path), "ran": str(index) in stages}
        if sar is not None:
            entry.update(compute_metrics(read_output(path), sar.data,
                                         None if reference is None else reference.data,
                                         valid_mask=valid, training_gradient_energy=train_energy))
            if train_energy_reason is not None:
                entry["sharpness_vs_training_reason"] = train_energy_reason
        report["stages"][name] = entry
    if reference is not None and sar is not None:
        report["reference_sar_edge"] = sar_edge_agreement(reference.data, sar.data, valid)  # the ceiling
        # What a real tile scores against the training median (None without one).
        report["reference_sharpness_vs_training"] = (None if train_energy is None
                                                     else sharpness(reference.data, train_energy, valid))
    report = to_json_safe(report)
    # Written last and atomically: a readable metrics.json marks a finished scene (batch runs skip it).
    partial = args.out / "metrics.json.partial"
    partial.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(partial, args.out / "metrics.json")
    return report


def stage_list(text: str) -> tuple[str, ...]:
    """``--stages`` as stage names: "1,3" and "1, 3" give ("1", "3")."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def check_options(args: argparse.Namespace, stages: tuple[str, ...]) -> None:
    """``--stages`` and ``--timesteps``, checked before the model loads: ValueError."""
    from gac_pipeline.pipeline import _check_stages, _check_timesteps

    _check_stages(stages)
    _check_timesteps(args.timesteps)


def check_uncertainty(args: argparse.Namespace, pipeline, stages: tuple[str, ...]) -> None:
    """``--uncertainty N`` against the loaded pipeline (at most 8 dihedral variants in regress mode): ValueError."""
    from gac_pipeline.uncertainty import variants

    if args.uncertainty:
        variants(args.uncertainty, args.seed, generative=bool(pipeline.generators(stages)))


def check_out_folder(out: Path) -> None:
    """``--out`` must be a folder or not exist yet, and nothing above it may be a file: ValueError."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"--out {out}: {path} is a file, expected a folder")
            return


def resolve_device(name: str) -> str:
    """``--device``: "auto" (cuda when available, else cpu), "cpu" or "cuda"; ValueError otherwise."""
    import torch

    name = name.strip().lower()
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    return name


def _check_in_memory_options(args: argparse.Namespace) -> None:
    """Refuse --uncertainty and --preview on scenes over ``MAX_IN_MEMORY_PIXELS``, before any model work."""
    from gac_pipeline.io import SarSource

    if not (args.uncertainty or args.preview):
        return
    with SarSource(args.s1, units=args.sar_units) as source:
        height, width = source.height, source.width
    if height * width > MAX_IN_MEMORY_PIXELS:
        raise ValueError(f"--uncertainty and --preview hold the scene in memory: {width}x{height} px is over "
                         f"{MAX_IN_MEMORY_PIXELS} px; run without them")


def _run_uncertainty(args: argparse.Namespace, pipeline, stages: tuple[str, ...]):
    """The in-memory run with ``uncertainty=args.uncertainty`` (a PipelineOutput), or None without the flag."""
    from gac_pipeline.io import read_s1

    if not args.uncertainty:
        return None
    sar = read_s1(args.s1, units=args.sar_units, max_pixels=MAX_IN_MEMORY_PIXELS)
    return pipeline.translate(sar.data, month=args.month if args.month is not None else sar.month,
                              biome=args.biome, seed=args.seed, stages=stages, timesteps=args.timesteps,
                              uncertainty=args.uncertainty)


def _write_uncertainty_and_preview(args: argparse.Namespace, pipeline, stages: tuple[str, ...], spread,
                                   paths: dict[str, Path]) -> None:
    """``uncertainty.tif`` (from ``spread``, on the input's grid) and ``preview.png`` (from the written outputs)."""
    import numpy as np

    from gac_pipeline.io import read_output, read_s1, read_s2

    if spread is None and not args.preview:
        return
    sar = read_s1(args.s1, units=args.sar_units, max_pixels=MAX_IN_MEMORY_PIXELS)
    if spread is not None:
        pipeline.write_uncertainty(args.out / "uncertainty.tif", spread, input_path=args.s1, profile=sar.profile,
                                   valid_mask=sar.valid_mask, seed=args.seed, stages=stages)
    if args.preview:
        versions = {name: read_output(path) for name, path in paths.items()}
        reference = read_s2(args.reference).data if args.reference is not None else None
        preview_image(np.where(sar.valid_mask, sar.data, np.nan), versions, reference).save(args.out / "preview.png")


def preview_image(s1_db, versions: dict, reference=None):
    """A PIL image: SAR | opt_v1 | opt_v2 | opt_v3 [| reference], the app's fixed stretches, labelled columns.

    SAR in false colour (``display.sar_false_colour``), the optical images in true colour
    (``display.rgb_composite``), each upscaled by a whole factor (nearest neighbour) to at least
    ``PREVIEW_MIN_PX`` wide, under a ``PREVIEW_LABEL_PX`` strip with its name.
    """
    import math

    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from gac_pipeline.display import rgb_composite, sar_false_colour

    columns = {"SAR": sar_false_colour(s1_db), **{name: rgb_composite(dn) for name, dn in versions.items()}}
    if reference is not None:
        columns["reference"] = rgb_composite(reference)
    height, width = s1_db.shape[1:]
    factor = max(1, math.ceil(PREVIEW_MIN_PX / max(height, width)))
    image = Image.new("RGB", (len(columns) * (width * factor + PREVIEW_GAP_PX) - PREVIEW_GAP_PX,
                              PREVIEW_LABEL_PX + height * factor), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default(size=14)
    for index, (label, rgb) in enumerate(columns.items()):
        left = index * (width * factor + PREVIEW_GAP_PX)
        upscaled = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)  # nearest neighbour
        image.paste(Image.fromarray(upscaled), (left, PREVIEW_LABEL_PX))
        draw.text((left + 2, PREVIEW_LABEL_PX // 2), label, fill="black", font=font, anchor="lm")
    return image
