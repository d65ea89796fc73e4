"""Memory and CPU time of the ``hub`` preset's full-size architectures, built with random weights.

The hub preset is TerraMind-1.0-base in generate mode for stages 1 and 3 (each with the
289 M-parameter S2L2A tokenizer that turns tokens into pixels) and Prithvi-EO-2.0-300M with LoRA
for stage 2. What it costs in memory and time does not depend on the weight values, so this
builds the same architectures from ``presets/hub``'s configs with random weights (no download),
gives stage 3 stage 1's tokenizer weights (the published tokenizer is one file, which the
pipeline then holds once: ``pipeline.share_s2l2a_tokenizer``) and translates one real SAR tile
at the preset's window size (224 px) and diffusion steps (10). It prints the parameters, the
peak RSS (VmHWM: building holds both tokenizer copies for a moment) and the CPU and wall seconds
of the tile. The outputs are noise: only the costs mean anything.

    python -m bench.hub_memory [--timesteps 10] [--tile 224] [--threads N]

Issue 14 asks for the hardware the hub preset needs; the README's *Speed and memory* states it
from these figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded; set before huggingface_hub loads

import torch

from bench.common import machine_info, proc_memory_mb, real_tile

GB = 1024  # MB


def build_random_hub_pipeline():
    """The hub preset's pipeline with every pretrained flag off (random weights), tokenizer shared."""
    from gac_pipeline.configs import PipelineConfig
    from gac_pipeline.pipeline import GACPipeline
    from gac_pipeline.presets import PRESETS
    from gac_pipeline.stages.base import CONFIG_FILE
    from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
    from gac_pipeline.stages.stage2_prithvi import Stage2Prithvi
    from gac_pipeline.stages.stage3_grounding import Stage3Grounding

    folder = PRESETS["hub"]
    stages = []
    for key, stage_class in (("1", Stage1TerraMind), ("2", Stage2Prithvi), ("3", Stage3Grounding)):
        config = stage_class.config_class.load(folder / f"stage{key}" / CONFIG_FILE)
        if hasattr(config, "terramind"):
            config.terramind = dataclasses.replace(config.terramind, pretrained=False)
        else:
            config.pretrained = False
        torch.manual_seed(0)
        stages.append(stage_class.build(config))
    stage1, stage2, stage3 = stages
    for name, tokenizer in stage3.terramind.tokenizer.items():  # the published weights are one file
        tokenizer.load_state_dict(stage1.terramind.tokenizer[name].state_dict())
    config = PipelineConfig.load(folder / "pipeline_config.json")
    return GACPipeline(stage1, stage2, stage3, config)


def parameter_counts(pipeline) -> dict[str, int]:
    """Parameters per stage and in all, a tensor held by two stages counted once in the total."""
    counts = {f"stage {key}": sum(p.numel() for p in stage.parameters())
              for key, stage in (("1", pipeline.stage1), ("2", pipeline.stage2), ("3", pipeline.stage3))}
    unique = {p.data_ptr(): p.numel() for p in pipeline.parameters()}
    counts["pipeline (shared tokenizer once)"] = sum(unique.values())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timesteps", type=int, default=None, help="diffusion steps (default: the preset's)")
    parser.add_argument("--tile", type=int, default=None, help="tile side in px (default: the preset's window)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_info())
    start_mb = proc_memory_mb(os.getpid())["VmRSS"]

    started = time.perf_counter()
    pipeline = build_random_hub_pipeline()
    build_s = time.perf_counter() - started
    loaded = proc_memory_mb(os.getpid())
    shared = pipeline.stage1.terramind.tokenizer is not None and all(
        pipeline.stage3.terramind.tokenizer[name] is tokenizer
        for name, tokenizer in pipeline.stage1.terramind.tokenizer.items())

    tile = args.tile or pipeline.config.tile_size
    timesteps = args.timesteps or pipeline.stage1.config.timesteps
    sar, _ = real_tile(tile)
    cpu, wall = time.process_time(), time.perf_counter()
    with torch.inference_mode():
        output = pipeline.translate(sar, month=6, timesteps=timesteps)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = proc_memory_mb(os.getpid())

    print(f"hub preset architectures with random weights (built in {build_s:.0f} s); "
          f"S2L2A tokenizer shared by stages 1 and 3: {'yes' if shared else 'NO'}")
    for name, count in parameter_counts(pipeline).items():
        print(f"  parameters, {name:34s}{count / 1e6:9.1f} M")
    print(f"  RSS before building{start_mb / GB:23.2f} GB")
    print(f"  RSS after loading{loaded['VmRSS'] / GB:25.2f} GB")
    print(f"  peak RSS while loading{loaded['VmHWM'] / GB:20.2f} GB")
    print(f"  peak RSS after one tile{after['VmHWM'] / GB:19.2f} GB")
    print(f"one {tile} px tile, {timesteps} diffusion steps, {torch.get_num_threads()} torch threads: "
          f"{cpu:.1f} CPU s, {wall:.1f} s wall (stages {', '.join(f'{k} {v:.1f} s' for k, v in output.timings_s.items())})")


if __name__ == "__main__":
    main()
