"""Whole-scene speed, memory and quality of the streaming path, ``GACPipeline.translate_file``, lever by lever.

Issue 15 asks for >= 0.5 Mpx/s on 2 cores at 2048 x 2048 px with a peak RSS under 3 GB and the
shipped quality unchanged. Each row ("lever") changes one setting of the code as it was before
issue 15 (``BEFORE``: 128-px windows overlapping by 32, one at a time on all torch threads,
DEFLATE-compressed outputs, overviews built by the COG driver); the last rows are the preset's and the code's defaults now and
variants of them. Every row runs in its own fresh Python process, one after another in one run,
so the rows share whatever else the machine is doing (the load average is printed as they go)
and compare side by side. In each process:

1. load the preset (``--preset``, default mini) and apply the row's settings;
2. ``translate_file`` on one bundled 120-px tile, twice: the first call pays the one-off warm-up
   ("start-up"), the second is the fixed cost of one call;
3. the scene, a ``--size`` px square (default 2048) mosaicked from the bundled test-split SAR
   tiles: Mpx/s = (scene Mpx - tile Mpx) / (scene s - second tile s), so start-up is left out;
4. peak RSS (VmHWM, /proc) of the process so far;
5. quality: the 21 bundled test-split tiles mosaicked 7 x 3 (840 x 360 px), SAR and Sentinel-2
   reference alike, through ``translate_file``; PSNR of opt_v3 and opt_v1 (read back from the
   COGs) against the reference mosaic, as the difference to the first row (target: within
   0.1 dB), and the seams of opt_v3 (``seam_ratio``: 1.00 when blending leaves none).

``--repeats N`` runs the rows N times, each round in another order, and keeps each row's fastest
scene: a machine whose speed drifts (shared hosts do) then favours no row. Then the window-level
table (``WINDOW_ROWS``, one fresh process each, ``--no-windows`` skips it): ms per 128-px window
through ``GACPipeline.forward`` with windows stacked in one forward, with torch's intra-op and
inter-op threads, and with forwards run at once in threads.

    python -m bench.scene [--size 2048] [--levers NAME ...] [--preset NAME_OR_DIR] [--repeats N] [--profile]

``--list`` shows the rows; ``--threads N`` sets torch's threads in every row that sets none. To
compare checkpoints, run it once per ``--preset`` (e.g. an earlier GAC-mini extracted with
``git archive <commit> presets/mini | tar -x -C /tmp/old``).
"""

from __future__ import annotations

import argparse
import contextlib
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
TARGET_PSNR_DB = 0.1  # largest allowed PSNR change against the first row
TILE = 120  # side of the bundled tiles
QUALITY_COLUMNS = 7  # the 21 test tiles as 7 x 3

# The writer's settings before issue 15: deflate (default level) with the floating-point
# predictor, from a deflate-compressed strip file.
OLD_COG_OPTIONS = {"BLOCKSIZE": 512, "COMPRESS": "DEFLATE", "PREDICTOR": "YES", "OVERVIEWS": "AUTO",
                   "OVERVIEW_RESAMPLING": "AVERAGE", "BIGTIFF": "IF_SAFER"}
OLD_PARTIAL_OPTIONS = {"compress": "deflate", "blockysize": 16}

# A row's settings; a key left out keeps the code's default. ``tile``/``overlap``/``batch``: the
# windows and how many go through one forward (the preset's ``pipeline_config.json``: tile_size,
# tile_overlap, window_batch); ``side_by_side``: False runs one window at a time on all torch
# threads, as before issue 15 (``GACPipeline._window_workers``); ``cog``/``partial``/``overviews_first``:
# ``gac_pipeline.io.writer``'s options (None: the code's); ``dtype``: the outputs' data type
# (``translate_file(dtype=)``); ``threads``: torch.set_num_threads; ``mlp_chunk``: pixels per chunk
# of the ConvNeXt blocks' MLP (``gac_pipeline.stages.heads.MLP_CHUNK``; 0: 1x1 convolutions on the
# whole image, as before); ``reorder``: the decoders' linear fuse and output convolutions in the cheaper
# order at inference (``heads.REORDER_AT_INFERENCE``; False: the order they were trained in, as before).
BEFORE = {"tile": 128, "overlap": 32, "batch": 1, "side_by_side": False, "cog": OLD_COG_OPTIONS,
          "partial": OLD_PARTIAL_OPTIONS, "overviews_first": False, "mlp_chunk": 0, "reorder": False}
ROWS = {
    "before": BEFORE,
    "window 256": BEFORE | {"tile": 256},
    "overlap 16": BEFORE | {"overlap": 16},
    "batches of 4 windows": BEFORE | {"batch": 4},
    "windows side by side": BEFORE | {"side_by_side": True},
    "COG zstd-1, raw strips": BEFORE | {"cog": None, "partial": None},
    "overviews built first": BEFORE | {"overviews_first": True},
    "defaults now": {},
    "defaults, window 128": {"tile": 128},
    "defaults, MLP as 1x1 convolutions": {"mlp_chunk": 0},
    "defaults, decoders in training order": {"reorder": False},
    "defaults, overlap 16": {"overlap": 16},
    "defaults, uint16 outputs": {"dtype": "uint16"},
}

# Window-level rows: ``batch`` windows per forward, torch ``threads`` (intra-op) and ``interop``
# threads, ``workers`` forwards at once (threads).
WINDOW_ROWS = {
    "1 window, 1 thread": {"batch": 1, "threads": 1},
    "batch of 4, 1 thread": {"batch": 4, "threads": 1},
    "batch of 8, 1 thread": {"batch": 8, "threads": 1},
    "1 window, 2 threads": {"batch": 1, "threads": 2},
    "1 window, 2 threads, 1 interop": {"batch": 1, "threads": 2, "interop": 1},
    "batch of 4, 2 threads": {"batch": 4, "threads": 2},
    "2 windows at once, 1 thread each": {"batch": 1, "threads": 1, "workers": 2},
    "2 batches of 4 at once": {"batch": 4, "threads": 1, "workers": 2},
}
WINDOWS_TIMED = 16  # windows per timed repeat


# ---------------------------------------------------------------------------------- the scenes
def _tiles(kind: str) -> list[np.ndarray]:
    from gac_pipeline.io import read_s1, read_s2

    if kind == "sar":
        return [read_s1(pair.s1_path).data for pair in test_pairs()]
    return [read_s2(pair.s2_path).data for pair in test_pairs()]


def _write(path: Path, rows: int, cols: int, count: int, strips, tags: dict[str, str] | None = None) -> None:
    """A tiled float32 GeoTIFF written strip by strip from (row0, strip) pairs."""
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "dtype": "float32", "count": count, "height": rows, "width": cols,
               "crs": "EPSG:32633", "transform": from_origin(300000, 5400000, 10, 10),
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(path, "w", **profile) as dataset:
        if count == 2:
            dataset.descriptions = ("VV", "VH")
        dataset.update_tags(**(tags or {}))
        for row0, strip in strips:
            dataset.write(strip, window=rasterio.windows.Window(0, row0, cols, strip.shape[1]))


def write_scene(path: Path, size: int) -> None:
    """Mosaic the bundled test SAR tiles into a size x size GeoTIFF, one strip of tiles at a time."""
    tiles = _tiles("sar")

    def strips():
        for index, row in enumerate(range(0, size, TILE)):
            rows = min(TILE, size - row)
            yield row, np.concatenate([tiles[(index * 7 + col) % len(tiles)][:, :rows]
                                       for col in range(-(-size // TILE))], axis=2)[:, :, :size]

    _write(path, size, size, 2, strips(), {"ACQUISITION_DATE": "2017-06-12"})


def write_quality_mosaics(sar_path: Path, reference_path: Path) -> None:
    """The test tiles laid out QUALITY_COLUMNS wide, each once, as SAR and as Sentinel-2 reference (DN).

    No acquisition date: the tiles' months differ, so stage 2 runs with the month unknown.
    """
    for path, kind in ((sar_path, "sar"), (reference_path, "reference")):
        tiles = _tiles(kind)
        rows = [np.concatenate(tiles[i : i + QUALITY_COLUMNS], axis=2) for i in range(0, len(tiles), QUALITY_COLUMNS)]
        image = np.concatenate(rows, axis=1)
        _write(path, image.shape[1], image.shape[2], image.shape[0], [(0, image)])


# ------------------------------------------------------------------------------- one row's process
def apply(settings: dict, pipeline) -> None:
    """Set a row's settings in this process."""
    import torch

    from gac_pipeline.io import writer
    from gac_pipeline.stages import heads

    pipeline.config.tile_size = settings.get("tile", pipeline.config.tile_size)
    pipeline.config.tile_overlap = settings.get("overlap", pipeline.config.tile_overlap)
    pipeline.config.window_batch = settings.get("batch", pipeline.config.window_batch)
    if not settings.get("side_by_side", True):
        pipeline._window_workers = lambda stages: 1
    writer.COG_OPTIONS = settings.get("cog") or writer.COG_OPTIONS
    writer.PARTIAL_OPTIONS = settings.get("partial") or writer.PARTIAL_OPTIONS
    writer.OVERVIEWS_FIRST = settings.get("overviews_first", writer.OVERVIEWS_FIRST)
    heads.MLP_CHUNK = settings.get("mlp_chunk", heads.MLP_CHUNK)
    heads.REORDER_AT_INFERENCE = settings.get("reorder", heads.REORDER_AT_INFERENCE)
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])


def seam_ratio(image: np.ndarray, tile: int, overlap: int) -> float:
    """Mean jump between neighbouring pixels inside the windows' blend zones over the mean jump
    elsewhere, both axes (1.00: the blend leaves no seam). The quality mosaic's own tile edges,
    real jumps, are left out."""
    from gac_pipeline.tiling import window_starts

    ratios = []
    for axis in (1, 2):
        jump = np.abs(np.diff(image, axis=axis)).mean(axis=(0, 3 - axis))  # per pixel boundary along axis
        zone, keep = np.zeros(len(jump), bool), np.ones(len(jump), bool)
        for start in window_starts(image.shape[axis], tile, overlap)[1:]:
            zone[start : start + overlap] = True
        for edge in range(TILE, image.shape[axis], TILE):
            keep[edge - 3 : edge + 2] = False
        if (zone & keep).any():
            ratios.append(jump[zone & keep].mean() / jump[~zone & keep].mean())
    return float(np.mean(ratios)) if ratios else 1.0


def quality(out_dir: Path, reference_path: Path, tile: int, overlap: int) -> dict[str, float]:
    """PSNR of opt_v3 and opt_v1 against the reference mosaic (pixels valid in both), and opt_v3's seams."""
    import rasterio

    from gac_pipeline.io import read_output
    from gac_pipeline.metrics import psnr

    with rasterio.open(reference_path) as dataset:
        reference = dataset.read()
    scores = {}
    for name in ("opt_v3", "opt_v1"):
        prediction = read_output(out_dir / f"{name}.tif")  # NaN where masked, float32 or uint16 outputs alike
        valid = np.isfinite(prediction).all(axis=0) & np.isfinite(reference).all(axis=0)
        scores[name] = psnr(np.nan_to_num(prediction), reference, valid_mask=valid)
        if name == "opt_v3":
            scores["seams"] = seam_ratio(np.nan_to_num(prediction), tile, overlap)
    return scores


def child(settings: dict, work: Path, profile: bool) -> None:
    """One row in this fresh process: print its figures as one JSON line (the last line)."""
    import torch

    from gac_pipeline.presets import load_preset

    pipeline = load_preset(settings["preset"])
    apply(settings, pipeline)
    figures = {"threads": torch.get_num_threads(), "tile": pipeline.config.tile_size,
               "overlap": pipeline.config.tile_overlap}

    def translate(name: str, scene: Path, out: str) -> None:
        start = time.perf_counter()
        result = pipeline.translate_file(scene, work / out, progress=False, dtype=settings.get("dtype", "float32"))
        figures[f"{name}_s"] = time.perf_counter() - start
        figures[f"{name}_stages_s"] = sum(result["timings_s"].values())

    translate("first_tile", test_pairs()[0].s1_path, "tile")
    translate("tile", test_pairs()[0].s1_path, "tile")
    profiler = cProfile.Profile() if profile else None
    with profiler or contextlib.nullcontext():
        translate("scene", work / "scene.tif", "scene")
    figures["peak_rss_mb"] = proc_memory_mb(os.getpid())["VmHWM"]
    figures["outputs_mb"] = sum(path.stat().st_size for path in (work / "scene").glob("*.tif")) / 2**20
    for path in (work / "scene").glob("*.tif"):
        path.unlink()  # a 4096 px scene writes ~2 GB of outputs
    translate("quality", work / "quality_sar.tif", "quality")
    figures["quality"] = quality(work / "quality", work / "quality_reference.tif", figures["tile"], figures["overlap"])
    if profiler:
        print("cProfile of translate_file on the scene, top 15 by internal time:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)
    print(json.dumps(figures), flush=True)


def window_child(settings: dict) -> None:
    """One window-level row in this fresh process: ms per window, best and median of 5 repeats (JSON line)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from bench.common import real_tile
    from gac_pipeline.presets import load_preset

    if settings.get("interop"):
        torch.set_num_interop_threads(settings["interop"])  # before any parallel work
    torch.set_num_threads(settings["threads"])
    pipeline = load_preset(settings["preset"])
    batch, workers = settings["batch"], settings.get("workers", 1)
    windows = torch.from_numpy(real_tile()[0])[None].expand(batch, -1, -1, -1).contiguous()

    def forward(_=None) -> None:
        with torch.no_grad():  # per thread
            pipeline(windows, month=6)

    def timed() -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(forward, range(WINDOWS_TIMED // batch)))
        return (time.perf_counter() - start) / WINDOWS_TIMED * 1000

    timed()  # warm-up
    times = sorted(timed() for _ in range(5))
    print(json.dumps({"best_ms": times[0], "median_ms": times[2]}), flush=True)


def run_row(name: str, settings: dict, work: Path | None, profile: bool, timeout: float) -> dict:
    """Run one row (a window-level one without ``work``) in a fresh process; its figures."""
    command = [sys.executable, "-m", "bench.scene", "--child", json.dumps(settings), str(work or "")]
    done = subprocess.run(command + (["--profile"] if profile else []), check=False, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"row {name!r} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    *lines, last = done.stdout.strip().splitlines()
    if lines:
        print("\n".join(lines))
    return json.loads(last)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ------------------------------------------------------------------------------------- the report
def print_table(results: dict[str, dict], size: int, baseline: str) -> None:
    from gac_pipeline.tiling import window_starts

    base = results[baseline]["quality"]
    print(f"\n{'lever':26s}{'windows':>8}{'thr':>4}{'start-up':>9}{'scene s':>8}{'Mpx/s':>7}{'stages':>7}"
          f"{'other':>6}{'RSS peak':>10}{'outputs':>9}{'dPSNR v3':>9}{'dPSNR v1':>9}{'seams':>6}")
    for name, f in results.items():
        windows = len(window_starts(size, f["tile"], f["overlap"])) ** 2
        deltas = [f["quality"][key] - base[key] for key in ("opt_v3", "opt_v1")]
        print(f"{name:26s}{windows:>8}{f['threads']:>4}{f['first_tile_s'] - f['tile_s']:>8.1f}s{f['scene_s']:>8.1f}"
              f"{f['mpx_s']:>7.3f}{f['scene_stages_s']:>7.1f}{f['scene_s'] - f['scene_stages_s']:>6.1f}"
              f"{f['peak_rss_mb']:>8.0f}MB{f['outputs_mb']:>7.0f}MB" + "".join(f"{delta:>+9.3f}" for delta in deltas)
              + f"{f['quality']['seams']:>6.2f}")
    print(f"start-up: the first 120-px tile call minus the second; Mpx/s: scene minus one tile call, start-up left "
          f"out; stages: time inside the three stages (with workers > 1, summed over the threads); other: the rest "
          f"(reading, blending, writing the COGs); outputs: the three COGs' size on disk; dPSNR: dB against '{baseline}' (opt_v3 {base['opt_v3']:.3f} dB, "
          f"opt_v1 {base['opt_v1']:.3f} dB); seams: opt_v3's jumps in the blend zones over those elsewhere")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="scene side in px (default 2048)")
    parser.add_argument("--levers", nargs="+", choices=list(ROWS), metavar="NAME", default=list(ROWS),
                        help="rows to run (default: all); the first is the quality baseline")
    parser.add_argument("--list", action="store_true", help="print the rows and their settings, and exit")
    parser.add_argument("--threads", type=int, help="torch threads in rows that set none (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the rows; each row's fastest is kept")
    parser.add_argument("--profile", action="store_true", help="cProfile the scene call (slows it down)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per row")
    parser.add_argument("--no-windows", action="store_true", help="skip the window-level table")
    parser.add_argument("--preset", default="mini", help="preset name or checkpoint folder (default mini)")
    parser.add_argument("--child", nargs=2, metavar=("SETTINGS", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        settings, work = json.loads(args.child[0]), args.child[1]
        if work:
            child(settings, Path(work), args.profile)
        else:
            window_child(settings)
        return
    if args.list:
        for name, settings in [*ROWS.items(), *WINDOW_ROWS.items()]:
            print(f"{name:32s} {json.dumps(settings)}")
        return

    print(machine_info())
    print(f"scene {args.size} x {args.size} px mosaicked from {len(test_pairs())} bundled test SAR tiles; quality "
          f"on the same tiles {QUALITY_COLUMNS} wide; preset {args.preset}; one fresh process per row, {args.repeats} round(s)"
          + (f"; {args.threads} torch thread(s) in rows that set none" if args.threads else "")
          + ("; under cProfile (slower)" if args.profile else ""))
    print(f"load average before: {load_average()}", flush=True)
    tile_mpx, scene_mpx = TILE * TILE / 1e6, args.size**2 / 1e6
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gac_bench_scene_") as folder:
        work = Path(folder)
        write_scene(work / "scene.tif", args.size)
        write_quality_mosaics(work / "quality_sar.tif", work / "quality_reference.tif")
        for round_ in range(args.repeats):
            shift = round_ * len(args.levers) // args.repeats  # each round starts elsewhere in the list
            for name in args.levers[shift:] + args.levers[:shift]:
                settings = ROWS[name] | {"preset": args.preset} | (
                    {"threads": args.threads} if args.threads and "threads" not in ROWS[name] else {})
                f = run_row(name, settings, work, args.profile, args.timeout)
                f["mpx_s"] = (scene_mpx - tile_mpx) / (f["scene_s"] - f["tile_s"])
                print(f"round {round_ + 1}, {name}: scene {f['scene_s']:.1f} s, {f['mpx_s']:.3f} Mpx/s "
                      f"(load average {load_average()})", flush=True)
                if name not in results or f["mpx_s"] > results[name]["mpx_s"]:
                    results[name] = f
    results = {name: results[name] for name in args.levers}
    baseline = args.levers[0]
    print_table(results, args.size, baseline)
    print(f"load average after: {load_average()}")

    def worst_delta(name: str) -> float:
        return max(abs(results[name]["quality"][key] - results[baseline]["quality"][key]) for key in ("opt_v3", "opt_v1"))

    best = max((name for name in results if worst_delta(name) <= TARGET_PSNR_DB), key=lambda n: results[n]["mpx_s"])
    f = results[best]
    print(f"\nfastest row with PSNR within {TARGET_PSNR_DB:g} dB of '{baseline}': {best} "
          f"(largest PSNR change {worst_delta(best):.3f} dB, seams {f['quality']['seams']:.2f})")
    print(f"target: throughput >= {TARGET_MPX_S:g} Mpx/s at {args.size} px: "
          f"{verdict(f['mpx_s'], TARGET_MPX_S, 'Mpx/s', below=False)}")
    print(f"target: peak RSS < {TARGET_RSS_MB:g} MB: {verdict(f['peak_rss_mb'], TARGET_RSS_MB, 'MB')}")
    if not args.no_windows:
        window_table(args.timeout, args.preset)


def window_table(timeout: float, preset: str) -> None:
    """The window-level rows, one fresh process each."""
    print(f"\nper 128-px window through GACPipeline.forward, {WINDOWS_TIMED} windows per repeat, 5 repeats after a "
          f"warm-up (load average {load_average()})")
    print(f"{'setting':34s}{'best ms':>9}{'median ms':>11}")
    for name, settings in WINDOW_ROWS.items():
        figures = run_row(name, settings | {"preset": preset}, None, False, timeout)
        print(f"{name:34s}{figures['best_ms']:>9.1f}{figures['median_ms']:>11.1f}", flush=True)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
