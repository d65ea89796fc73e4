"""Write ``presets/hub`` (configs only) and, on request, an untrained ``mini``-architecture pipeline.

Usage: ``python -m training.init_presets`` (rewrites ``presets/hub``),
``python -m training.init_presets --pin`` (the same, with every base model pinned to the commit
its ``main`` branch points to now: downloads the weight files, several GB, into the Hugging Face
cache; offline it records the commit of the copies already cached), or
``python -m training.init_presets --untrained-mini DIR`` (a random-init pipeline of the mini
architecture, labelled UNTRAINED). The trained ``presets/mini`` comes from
``python -m training.train_mini --out presets/mini``; this script never touches it. Seeded.

- ``mini_pipeline``: the embedded default's architecture at small size, random init: the
  starting point of the training scripts.
- ``hub``: configs only. TerraMind-1.0-base (stage 1 and 3, zero-shot ``generate``) and
  Prithvi-EO-2.0-300M (stage 2) load their pretrained weights from the Hub at build time; the
  stage-2 head and stage-3 adapters are untrained (identity) until trained adapters are
  published.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gac_pipeline.configs import (
    TERRAMIND_CROSS_ATTN_TARGETS,
    PipelineConfig,
    Stage1Config,
    Stage2Config,
    Stage3Config,
    TerraMindSpec,
)
from gac_pipeline.hub import PIPELINE_CONFIG, commit_of, fetch, sha256
from gac_pipeline.pipeline import STAGE_DIRS, GACPipeline, base_models
from gac_pipeline.presets import PRESETS_DIR
from gac_pipeline.stages import terramind_common as tm
from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
from gac_pipeline.stages.stage2_prithvi import Stage2Prithvi, prithvi_weights
from gac_pipeline.stages.stage3_grounding import Stage3Grounding

MINI_TERRAMIND = TerraMindSpec(size=None, pretrained=False, dim=96, depth=4, num_heads=4)


def mini_pipeline(seed: int = 0) -> GACPipeline:
    torch.manual_seed(seed)
    # Decoders at half resolution: a quarter of their cost, most of a scene's time on CPU (issue 15).
    stage1 = Stage1TerraMind.build(Stage1Config(mode="regress", terramind=MINI_TERRAMIND, decoder_stride=2))
    stage2 = Stage2Prithvi.build(Stage2Config(embed_dim=96, depth=2, num_heads=4, lora_rank=8, head_stride=2))
    stage3 = Stage3Grounding.build(Stage3Config(mode="regress", terramind=MINI_TERRAMIND, lora_rank=0,
                                                decoder_stride=2))
    # Windows of 256 px (issue 15: ``python -m bench.scene``, fewer overlaps to compute twice).
    config = PipelineConfig(name="GAC-mini", trained=False, tile_size=256,
                            description="small TerraMind/Prithvi-architecture stages, random init")
    return GACPipeline(stage1, stage2, stage3, config)


# TerraMind and its S2L2A tokenizer were pretrained on 224-px images (14 x 14 tokens): the hub
# preset runs them on windows of that size, overlapping by 32 px.
HUB_WINDOW, HUB_OVERLAP = 224, 32


def write_hub_preset(directory: Path, *, pin: bool = False) -> None:
    """Configs only: the bases load their published weights at the revisions recorded here."""
    terramind = TerraMindSpec(size="base", pretrained=True)
    configs = {
        "1": Stage1Config(mode="generate", terramind=terramind, timesteps=10),
        "2": Stage2Config(backbone="prithvi_eo_v2_300", pretrained=True, lora_rank=8, head_width=64),
        "3": Stage3Config(mode="generate", terramind=terramind, timesteps=10, lora_rank=8,
                          lora_targets=TERRAMIND_CROSS_ATTN_TARGETS),
    }
    if pin:
        pin_revisions(configs["1"].terramind, configs["2"])
    files = {}
    for key, config in configs.items():
        (directory / STAGE_DIRS[key]).mkdir(parents=True, exist_ok=True)
        path = directory / STAGE_DIRS[key] / "config.json"
        config.save(path)
        files[str(path.relative_to(directory))] = sha256(path)
    PipelineConfig(
        name="GAC-hub", trained=False, files=files,
        description="TerraMind-1.0-base zero-shot (stages 1, 3) + Prithvi-EO-2.0-300M with an untrained head",
        tile_size=HUB_WINDOW, tile_overlap=HUB_OVERLAP,
        base_models=base_models(configs["1"], configs["2"], configs["3"]),
    ).save(directory / PIPELINE_CONFIG)


def pin_revisions(terramind: TerraMindSpec, prithvi: Stage2Config) -> None:
    """Replace each base's branch by the commit of the files fetched for it.

    Online that is the commit the branch points to now (the weight files are downloaded into
    the Hugging Face cache: several GB, needed to run the preset anyway); offline, the commit
    of the copy already cached.
    """
    files = [tm.terramind_weights(terramind.size, terramind.revision),
             tm.s2l2a_tokenizer_weights(terramind.tokenizer_revision), prithvi_weights(prithvi)]
    paths = fetch(files, "base-model", warn_unpinned=False, advice="run --pin on a machine that reaches the Hub")
    terramind.revision, terramind.tokenizer_revision, prithvi.revision = (
        commit_of(path, file) for path, file in zip(paths, files, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PRESETS_DIR / "hub", help="where the hub preset goes")
    parser.add_argument("--pin", action="store_true",
                        help="record the commit each base model's branch points to now (downloads the weights)")
    parser.add_argument("--untrained-mini", type=Path, default=None, help="also write a random-init mini here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        write_hub_preset(args.out, pin=args.pin)
    except RuntimeError as error:
        raise SystemExit(f"init_presets: {error}") from None
    print(f"wrote {args.out}")
    if args.untrained_mini is not None:
        mini_pipeline(args.seed).save_pretrained(args.untrained_mini)
        print(f"wrote {args.untrained_mini} (random init, labelled UNTRAINED)")


if __name__ == "__main__":
    main()
