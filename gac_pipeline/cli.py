"""Command line: ``python -m gac_pipeline translate S1.tif --out DIR [options]`` and ``publish model|space``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gac_pipeline import publish
from gac_pipeline.bands import S2L2A_BANDS

# Scoring reads the three outputs back into memory; beyond this the scene is written but not scored.
MAX_SCORED_PIXELS = 2048 * 2048

# metrics.json layout: 2 added structure_r, edge_r, sharpness, sharpness_vs_training (+ _reason) per
# stage and training_gradient_energy, reference_sharpness_vs_training at the top level.
METRICS_SCHEMA_VERSION = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gac_pipeline",
                                     description="GAC: Sentinel-1 SAR to Sentinel-2 optical in three stages.")
    commands = parser.add_subparsers(dest="command", required=True)
    translate = commands.add_parser("translate", help="translate a SAR GeoTIFF (VV, VH in dB)")
    translate.add_argument("s1", type=Path, help="SAR GeoTIFF with 2 bands VV, VH (dB unless --sar-units linear)")
    translate.add_argument("--out", type=Path, required=True, help="output folder for opt_v1/2/3.tif + metrics.json")
    translate.add_argument("--reference", type=Path, help="12-band S2L2A GeoTIFF to score against")
    translate.add_argument("--preset", default="mini", help="mini (embedded), hub, a checkpoint folder or repo@rev")
    translate.add_argument("--stages", default="1,2,3", help="stages to run, e.g. 1,3 (skipped stages pass through)")
    translate.add_argument("--month", type=int, choices=range(1, 13), metavar="1..12",
                           help="acquisition month (default: from the file's metadata or name)")
    translate.add_argument("--biome", help="biome name (see gac_pipeline.data.BIOMES); default unknown")
    translate.add_argument("--seed", type=int, default=0)
    translate.add_argument("--sar-units", choices=("db", "linear"),
                           help="units of the SAR values (default: from metadata, else dB)")
    translate.add_argument("--load-in-8bit", action="store_true", help="run the Prithvi backbone in int8")
    translate.add_argument("--no-progress", action="store_true")
    publish.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "publish":
        return publish.main(args)
    # Imported here so `--help` is instant and import problems become one-line errors too.
    from gac_pipeline.io import InputError

    try:
        report = translate(args)
    except (InputError, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "pipeline": report["pipeline"], "notes": report["notes"]}, indent=2))
    return 0


def translate(args: argparse.Namespace) -> dict:
    from gac_pipeline.data import biome_index
    from gac_pipeline.io import SarSource, check_same_grid, read_s1, read_s2
    from gac_pipeline.metrics import compute_metrics, sar_edge_agreement, sharpness, to_json_safe
    from gac_pipeline.presets import load_preset
    from gac_pipeline.references import training_gradient_energy_for_preset

    if args.biome is not None:
        biome_index(args.biome)  # fail fast with the list of valid names
    stages = tuple(s for s in args.stages.split(",") if s)
    # Validate every input before any model work, so a bad reference costs nothing.
    with SarSource(args.s1, units=args.sar_units) as source:
        scorable = source.height * source.width <= MAX_SCORED_PIXELS
    sar = read_s1(args.s1, units=args.sar_units, max_pixels=MAX_SCORED_PIXELS) if scorable else None
    reference = read_s2(args.reference) if args.reference is not None else None
    if reference is not None and sar is not None:
        check_same_grid(sar, reference, args.s1, args.reference)
    pipeline = load_preset(args.preset, load_in_8bit=args.load_in_8bit or None)
    result = pipeline.translate_file(args.s1, args.out, units=args.sar_units, month=args.month,
                                     biome=args.biome, seed=args.seed, stages=stages,
                                     progress=not args.no_progress)
    # The training tiles' median sharpness, stored with the preset's references (if any).
    train_energy, train_energy_reason = training_gradient_energy_for_preset(args.preset)
    report = {"schema_version": METRICS_SCHEMA_VERSION, "pipeline": pipeline.label,
              "trained": pipeline.config.trained, "input": str(args.s1),
              "reference": str(args.reference) if args.reference else None, "month": result["month"],
              "biome": args.biome, "seed": args.seed, "bands": list(S2L2A_BANDS),
              "notes": result["notes"], "timings_s": result["timings_s"],
              "training_gradient_energy": train_energy, "stages": {}}
    if sar is None:
        report["notes"].append(f"metrics n/a: scenes over {MAX_SCORED_PIXELS} pixels are written but not scored")
    for index, (name, path) in enumerate(result["paths"].items(), start=1):
        entry = {"file": str(path), "ran": str(index) in stages}
        if sar is not None:
            entry.update(compute_metrics(_read_back(path), sar.data,
                                         None if reference is None else reference.data,
                                         valid_mask=sar.valid_mask, training_gradient_energy=train_energy))
            if train_energy_reason is not None:
                entry["sharpness_vs_training_reason"] = train_energy_reason
        report["stages"][name] = entry
    if reference is not None and sar is not None:
        report["reference_sar_edge"] = sar_edge_agreement(reference.data, sar.data)  # the ceiling
        # What a real tile scores against the training median (None without one).
        report["reference_sharpness_vs_training"] = (None if train_energy is None
                                                     else sharpness(reference.data, train_energy))
    report = to_json_safe(report)
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _read_back(path: Path):
    import numpy as np
    import rasterio

    with rasterio.open(path) as dataset:
        return np.nan_to_num(dataset.read().astype(np.float32))
