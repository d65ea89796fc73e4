"""Translate-tab timing: one bundled 120-px tile on the ``mini`` preset, plain and with uncertainty.

Issue 16's targets (2 CPU cores): a 120-px tile with every panel in < 3 s with uncertainty off
and < 10 s with 8 variants. Start-up (imports, loading the preset) is left out: each case runs
once untimed, then ``--runs`` times; the best and the median are printed.

- app handler: ``app.handlers.translate`` with the tile's reference: reading, the pipeline, three
  GeoTIFFs, every score and the images, as the tab runs it without Gradio;
- panels: ``app.panels.render`` (every panel of one composite, a pixel marked) and the spectrum
  chart at that pixel;
- pipeline: ``GACPipeline.__call__`` alone, plain and with ``uncertainty=N``.

The app does not run uncertainty yet, so its time with uncertainty is estimated as the app's
plain time plus what the uncertainty adds to the pipeline call.

    python -m bench.app_timing [--runs 5] [--uncertainty 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network; set before huggingface_hub loads

from bench.common import machine_info, test_pairs, verdict

TARGET_PLAIN_S = 3.0
TARGET_UNCERTAINTY_S = 10.0


def timed(function: Callable[[], object], runs: int) -> list[float]:
    """Seconds of ``runs`` calls after one untimed warm-up call."""
    function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (best and median reported)")
    parser.add_argument("--uncertainty", type=int, default=8, help="test-time variants of the uncertainty case")
    parser.add_argument("--preset", default="mini")
    args = parser.parse_args()

    from app import handlers, panels
    from gac_pipeline.io import read_s1

    print(machine_info())
    pair = test_pairs()[0]
    s1 = read_s1(pair.s1_path).data
    print(f"tile: {pair.name} ({s1.shape[1]}x{s1.shape[2]} px, with its reference); {args.runs} timed runs "
          "after one warm-up per case")
    pipeline, message = handlers.load_pipeline(args.preset)  # the app's cached instance
    if pipeline is None:
        raise SystemExit(message)
    options = {"month": pair.month, "biome": pair.biome, "seed": 0}
    pixel = (s1.shape[1] // 2, s1.shape[2] // 2)
    with tempfile.TemporaryDirectory() as out_dir:
        result = handlers.translate(pair.s1_path, pair.s2_path, preset=args.preset, out_dir=out_dir, **options)
        run = panels.run_of(result)
        rows = {
            "app handler": timed(lambda: handlers.translate(pair.s1_path, pair.s2_path, preset=args.preset,
                                                            out_dir=out_dir, **options), args.runs),
            "panels + spectrum": timed(lambda: (panels.render(run, pixel=pixel), panels.spectrum_figure(run, pixel)),
                                       args.runs),
            "pipeline, plain": timed(lambda: pipeline.translate(s1, **options), args.runs),
            f"pipeline, uncertainty={args.uncertainty}": timed(
                lambda: pipeline.translate(s1, uncertainty=args.uncertainty, **options), args.runs),
        }

    print(f"\n{'case':<28}{'best s':>8}{'median s':>10}")
    for name, times in rows.items():
        print(f"{name:<28}{min(times):>8.3f}{statistics.median(times):>10.3f}")
    best = {name: min(times) for name, times in rows.items()}
    plain = best["app handler"] + best["panels + spectrum"]
    extra = best[f"pipeline, uncertainty={args.uncertainty}"] - best["pipeline, plain"]
    print(f"\napp, every panel, uncertainty off: {plain:.3f} s (handler + panels, best of each)")
    print(f"app, uncertainty={args.uncertainty} (estimate: + {extra:.3f} s of pipeline): {plain + extra:.3f} s")
    print(f"target: uncertainty off < {TARGET_PLAIN_S:g} s: {verdict(plain, TARGET_PLAIN_S, 's')}")
    print(f"target: {args.uncertainty} variants < {TARGET_UNCERTAINTY_S:g} s: "
          f"{verdict(plain + extra, TARGET_UNCERTAINTY_S, 's')}")


if __name__ == "__main__":
    main()
