"""Whole-scene throughput and peak memory of the streaming path, ``GACPipeline.translate_file``.

A scene of N x N px is a mosaic of the real bundled test-split SAR tiles (realistic dB
values and texture), written as a tiled GeoTIFF to a temp folder. Each size runs in a fresh
Python process, so the peak RSS it reports (VmHWM, /proc) belongs to that size alone: the
streaming path must keep it flat as the scene grows. Sizes run smallest first; before each
larger one the time is estimated from the last throughput and the size is skipped when the
estimate exceeds ``--max-seconds``.

    python -m bench.scene [--sizes 1024 2048 4096] [--max-seconds 300] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network; set before huggingface_hub loads

import numpy as np

from bench.common import REPO, machine_info, proc_memory_mb, test_pairs, verdict

TARGET_MPX_S = 0.5
TARGET_RSS_MB = 3000.0
# "Independent of size": the largest scene's peak may exceed the smallest's by at most this fraction.
RSS_GROWTH_ALLOWED = 0.10


def write_scene(path: Path, size: int) -> None:
    """Mosaic the bundled test SAR tiles into a size x size GeoTIFF, one strip of tiles at a time."""
    import rasterio
    from rasterio.transform import from_origin

    from gac_pipeline.io import read_s1

    tiles = [read_s1(pair.s1_path).data for pair in test_pairs()]
    tile = tiles[0].shape[1]
    profile = {"driver": "GTiff", "dtype": "float32", "count": 2, "height": size, "width": size,
               "crs": "EPSG:32633", "transform": from_origin(300000, 5400000, 10, 10),
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.descriptions = ("VV", "VH")
        dataset.update_tags(ACQUISITION_DATE="2017-06-12")
        for index, row in enumerate(range(0, size, tile)):
            rows = min(tile, size - row)
            strip = np.concatenate([tiles[(index * 7 + col) % len(tiles)][:, :rows]
                                    for col in range(-(-size // tile))], axis=2)[:, :, :size]
            dataset.write(strip, window=rasterio.windows.Window(0, row, size, rows))


def child(scene: str, out_dir: str, preset: str, profile: bool) -> None:
    """Load the preset and stream one scene; print figures as one JSON line (the last line)."""
    from gac_pipeline.presets import load_preset

    start = time.perf_counter()
    pipeline = load_preset(preset)
    load_s = time.perf_counter() - start
    loaded = proc_memory_mb(os.getpid())
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    result = pipeline.translate_file(scene, out_dir, progress=False)
    if profiler:
        profiler.disable()
    run_s = time.perf_counter() - start
    memory = proc_memory_mb(os.getpid())
    if profiler:
        print("cProfile of translate_file, top 10 by cumulative time:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(10)
    print(json.dumps({"load_s": load_s, "run_s": run_s, "rss_loaded_mb": loaded["VmRSS"],
                      "peak_rss_mb": memory["VmHWM"], "stages_s": result["timings_s"]}), flush=True)


def run_size(size: int, work: Path, preset: str, profile: bool, timeout: float) -> dict:
    """Write the scene, stream it in a fresh process, return the child's figures plus its wall time."""
    scene, out_dir = work / f"scene_{size}.tif", work / f"out_{size}"
    write_scene(scene, size)
    command = [sys.executable, "-m", "bench.scene", "--child", str(scene), str(out_dir), "--preset", preset]
    start = time.perf_counter()
    done = subprocess.run(command + (["--profile"] if profile else []), check=False, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    wall_s = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{size} px scene failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    *lines, last = done.stdout.strip().splitlines()
    if lines:
        print("\n".join(lines))
    for path in (scene, *out_dir.glob("*.tif")):
        path.unlink()  # a 4096 px scene writes ~2.5 GB of outputs
    return json.loads(last) | {"wall_s": wall_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096], help="scene sides in px")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="skip a size whose translate_file time, estimated from the last size, exceeds this")
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--profile", action="store_true", help="cProfile translate_file (slows it down)")
    parser.add_argument("--child", nargs=2, metavar=("SCENE", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.preset, args.profile)
        return

    from gac_pipeline.configs import PipelineConfig
    from gac_pipeline.tiling import window_starts

    config = PipelineConfig.load(REPO / "presets" / args.preset / "pipeline_config.json") \
        if (REPO / "presets" / args.preset).is_dir() else PipelineConfig()
    print(machine_info())
    print(f"preset {args.preset}: windows of {config.tile_size} px, overlap {config.tile_overlap}; "
          f"scene = mosaic of {len(test_pairs())} real bundled test SAR tiles; one fresh process per size"
          + ("; under cProfile (slower)" if args.profile else ""))
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gac_bench_scene_") as work:
        for size in sorted(args.sizes):
            windows = len(window_starts(size, config.tile_size, config.tile_overlap)) ** 2
            if results:
                last = results[max(results)]
                estimate = size * size / 1e6 / last["mpx_s"]
                print(f"{size} px: estimated {estimate:.0f} s for translate_file "
                      f"(from {max(results)} px at {last['mpx_s']:.3f} Mpx/s)")
                if estimate > args.max_seconds:
                    print(f"{size} px: skipped, estimate over --max-seconds {args.max_seconds:g}")
                    continue
            figures = run_size(size, Path(work), args.preset, args.profile, timeout=2 * args.max_seconds + 120)
            figures |= {"windows": windows, "mpx_s": size * size / 1e6 / figures["run_s"]}
            results[size] = figures
            print(f"{size} px: done in {figures['wall_s']:.1f} s (process start and load {figures['load_s']:.1f} s)",
                  flush=True)

    if not results:
        return
    print(f"\n{'side':>6}{'Mpx':>7}{'windows':>9}{'run s':>8}{'Mpx/s':>8}{'stage1':>8}{'stage2':>8}{'stage3':>8}"
          f"{'other':>8}{'RSS load':>10}{'RSS peak':>10}")
    for size, f in results.items():
        stages = [f["stages_s"][key] for key in ("1", "2", "3")]
        print(f"{size:>6}{size * size / 1e6:>7.2f}{f['windows']:>9}{f['run_s']:>8.1f}{f['mpx_s']:>8.3f}"
              + "".join(f"{s:>8.1f}" for s in stages)
              + f"{f['run_s'] - sum(stages):>8.1f}{f['rss_loaded_mb']:>8.0f}MB{f['peak_rss_mb']:>8.0f}MB")
    print("(run s: translate_file wall time; other: reading, blending, writing; RSS load: after loading the preset)")

    slowest = min(f["mpx_s"] for f in results.values())
    peaks = {size: f["peak_rss_mb"] for size, f in results.items()}
    growth = peaks[max(peaks)] / peaks[min(peaks)] - 1
    print(f"\ntarget: throughput >= {TARGET_MPX_S:g} Mpx/s (slowest size): "
          f"{verdict(slowest, TARGET_MPX_S, 'Mpx/s', below=False)}")
    print(f"target: peak RSS < {TARGET_RSS_MB:g} MB: {verdict(max(peaks.values()), TARGET_RSS_MB, 'MB')}")
    if len(peaks) > 1:
        bounded = "yes" if growth <= RSS_GROWTH_ALLOWED else "NO"
        print(f"peak RSS independent of size (<= {RSS_GROWTH_ALLOWED:.0%} growth): {bounded}, "
              f"{peaks[min(peaks)]:.0f} MB at {min(peaks)} px -> {peaks[max(peaks)]:.0f} MB at {max(peaks)} px "
              f"({growth:+.1%})")


if __name__ == "__main__":
    main()
