"""Latency of one 128 px tile: each stage and the whole pipeline, embedded ``mini`` and TerraMind generate mode.

The embedded preset is what the app and CLI run by default, so its per-tile latency bounds
how fast everything else can be. Generate mode samples tokens and runs the tokenizer's
diffusion decoder once per timestep, so it is timed at several timestep counts; a tiny
random-init generator (``SMALL_TEST_GENERATOR``) shows the cost of the path itself, not
of TerraMind's published sizes.

    python -m bench.latency [--runs 10] [--timesteps 1 5 10] [--profile] [--compile]

``--compile`` also times the model forward on one scene window (``--window`` px, the
preset's scene window by default), eager against ``torch.compile``, the lever issue 15 lists.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network; set before huggingface_hub loads

import torch

from bench.common import TILE, machine_info, real_tile, verdict

TARGET_S = 1.0  # embedded pipeline, one 128 px tile, 2 CPU cores (issue 5)
STAGES = ("1", "2", "3")


def generate_pipeline(stage2):
    """Stages 1 and 3 as tiny random-init TerraMind generators (small tokenizer), stage 2 from ``mini``."""
    from gac_pipeline.configs import PipelineConfig, Stage1Config, Stage3Config, TerraMindSpec
    from gac_pipeline.pipeline import GACPipeline
    from gac_pipeline.stages import terramind_common as tc
    from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
    from gac_pipeline.stages.stage3_grounding import Stage3Grounding

    small = tc.SMALL_TEST_GENERATOR
    spec = TerraMindSpec(size=None, pretrained=False, dim=small["dim"], depth=small["encoder_depth"],
                         num_heads=small["num_heads"], decoder_depth=small["decoder_depth"],
                         tokenizer=small["tokenizer"])
    torch.manual_seed(0)
    return GACPipeline(
        Stage1TerraMind.build(Stage1Config(mode="generate", terramind=spec, timesteps=1)),
        stage2,
        Stage3Grounding.build(Stage3Config(mode="generate", terramind=spec, timesteps=1, lora_rank=0)),
        PipelineConfig(name="tiny-generate", description="random init, benchmark only"),
    )


def time_pipeline(pipeline, s1, pair, *, runs: int, warmup: int, timesteps: int | None = None) -> dict:
    """Median wall time of whole calls and of each stage (the pipeline's own per-stage timers)."""
    kwargs = {"month": pair.month, "biome": pair.biome, "seed": 0, "timesteps": timesteps}
    for _ in range(warmup):
        pipeline.translate(s1, **kwargs)
    totals, stages = [], {key: [] for key in STAGES}
    for _ in range(runs):
        start = time.perf_counter()
        output = pipeline.translate(s1, **kwargs)
        totals.append(time.perf_counter() - start)
        for key in STAGES:
            stages[key].append(output.timings_s[key])
    return {"total": totals, **stages}


def profile(pipeline, s1, pair, runs: int) -> None:
    """Where a tile's time goes: top-10 Python functions (cProfile) and top-10 torch operators.

    cProfile stops at the modules that call into torch; the operator table says which kernels
    (e.g. which convolutions) the time is spent in.
    """
    kwargs = {"month": pair.month, "biome": pair.biome, "seed": 0}
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        pipeline.translate(s1, **kwargs)
    profiler.disable()
    print(f"\ncProfile of {runs} call(s) of {pipeline.config.name}, top 10 by cumulative time:")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(10)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as operators:
        for _ in range(runs):
            pipeline.translate(s1, **kwargs)
    print(f"torch operators over {runs} call(s), top 10 by self CPU time (with input shapes):")
    print(operators.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=10,
                                                                  max_name_column_width=30,
                                                                  max_shapes_column_width=60))


def time_compile(pipeline, window: int, runs: int) -> None:
    """Eager against ``torch.compile`` (inductor) on the forward of one window: medians, compile time, largest difference."""
    s1 = torch.randn(1, 2, window, window, generator=torch.Generator().manual_seed(0)) * 3 - 12  # dB-like
    compiled = torch.compile(pipeline)
    with torch.inference_mode():
        start = time.perf_counter()
        compiled_out = compiled(s1)
        compile_s = time.perf_counter() - start
        eager_out = pipeline(s1)
        medians = {}
        for name, model in (("eager", pipeline), ("torch.compile", compiled)):
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                model(s1)
                times.append(time.perf_counter() - start)
            medians[name] = statistics.median(times)
    difference = max(float((eager_out[k] - compiled_out[k]).abs().max()) for k in eager_out)
    print(f"\nforward of one {window} px window, median of {runs}: eager {medians['eager']:.3f} s, torch.compile "
          f"{medians['torch.compile']:.3f} s ({medians['eager'] / medians['torch.compile']:.2f}x; compiling took "
          f"{compile_s:.0f} s); largest output difference {difference:.2g} DN")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per case (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (lazy init, allocator)")
    parser.add_argument("--timesteps", type=int, nargs="*", default=[1, 5, 10],
                        help="generate-mode diffusion steps to time; none skips generate mode")
    parser.add_argument("--preset", default="mini", help="the embedded pipeline to time")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile top 10 of the embedded pipeline (also printed when the target is missed)")
    parser.add_argument("--compile", action="store_true", help="also time eager against torch.compile on one window")
    parser.add_argument("--window", type=int, help="window side for --compile (default: the preset's scene window)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from gac_pipeline.presets import load_preset

    print(machine_info())
    s1, pair = real_tile(TILE)
    print(f"tile: {pair.name} ({pair.source}, {pair.biome}, month {pair.month}), 120 px reflect-padded to "
          f"{s1.shape[1]}x{s1.shape[2]}; {args.runs} timed runs after {args.warmup} warm-up")

    start = time.perf_counter()
    pipeline = load_preset(args.preset)
    print(f"load_preset({args.preset!r}), first imports included: {time.perf_counter() - start:.2f} s")

    rows = [(f"{args.preset} (regress)", time_pipeline(pipeline, s1, pair, runs=args.runs, warmup=args.warmup))]
    if args.timesteps:
        generator = generate_pipeline(pipeline.stage2)
        for steps in args.timesteps:
            rows.append((f"generate, {steps} step(s)", time_pipeline(generator, s1, pair, runs=args.runs,
                                                                    warmup=args.warmup, timesteps=steps)))

    print(f"\nmedian seconds per {TILE} px tile (whole call: min..max)")
    print(f"{'case':<24}{'stage 1':>10}{'stage 2':>10}{'stage 3':>10}{'pipeline':>10}   range")
    for name, times in rows:
        cells = "".join(f"{statistics.median(times[key]):>10.3f}" for key in (*STAGES, "total"))
        print(f"{name:<24}{cells}   {min(times['total']):.3f}..{max(times['total']):.3f}")

    embedded = statistics.median(rows[0][1]["total"])
    print(f"\ntarget: embedded pipeline < {TARGET_S:g} s per {TILE} px tile: {verdict(embedded, TARGET_S, 's')}")
    if args.profile or embedded >= TARGET_S:
        profile(pipeline, s1, pair, args.runs)
    if args.compile:
        time_compile(pipeline, args.window or pipeline.config.tile_size, args.runs)


if __name__ == "__main__":
    main()
