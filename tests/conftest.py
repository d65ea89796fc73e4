"""Shared fixtures: tiny random-init pipelines of the real architectures, real bundled tiles."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network; set before huggingface_hub loads

import pytest
import torch

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.configs import PipelineConfig, Stage1Config, Stage2Config, Stage3Config, TerraMindSpec
from gac_pipeline.data import DEFAULT_DATA_DIR, list_pairs


def tiny_terramind(**overrides) -> TerraMindSpec:
    return TerraMindSpec(size=None, pretrained=False, dim=32, depth=1, num_heads=2, **overrides)


def tiny_configs(mode: str = "regress") -> tuple[Stage1Config, Stage2Config, Stage3Config]:
    stage1 = Stage1Config(mode=mode, terramind=tiny_terramind(), decoder_width=8, decoder_blocks=1, timesteps=1)
    stage2 = Stage2Config(embed_dim=32, depth=1, num_heads=2, lora_rank=2, head_width=8, head_blocks=1, cond_dim=4)
    stage3 = Stage3Config(mode=mode, terramind=tiny_terramind(), decoder_width=8, decoder_blocks=1, timesteps=1,
                          lora_rank=2)
    return stage1, stage2, stage3


def build_tiny_pipeline(seed: int = 0, *, randomize_heads: bool = True):
    """A random-init pipeline; heads get small random outputs so every stage changes the image."""
    from gac_pipeline.pipeline import GACPipeline
    from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
    from gac_pipeline.stages.stage2_prithvi import Stage2Prithvi
    from gac_pipeline.stages.stage3_grounding import Stage3Grounding

    torch.manual_seed(seed)
    c1, c2, c3 = tiny_configs()
    pipeline = GACPipeline(Stage1TerraMind.build(c1), Stage2Prithvi.build(c2), Stage3Grounding.build(c3),
                           PipelineConfig(name="tiny-test", description="random init, tests only"))
    if randomize_heads:
        for head in (pipeline.stage1.decoder, pipeline.stage2.head, pipeline.stage3.decoder):
            torch.nn.init.normal_(head.out.weight, std=0.05)
    return pipeline


@pytest.fixture(scope="session")
def tiny_pipeline():
    return build_tiny_pipeline()


@pytest.fixture(scope="session")
def real_pair():
    """A real BigEarthNet pair with a CRS (benv2, test split)."""
    pairs = [p for p in list_pairs(DEFAULT_DATA_DIR, "test") if p.source == "BENv2"]
    return pairs[0]


@pytest.fixture(scope="session")
def saved_tiny_pipeline(tmp_path_factory, tiny_pipeline):
    directory = tmp_path_factory.mktemp("tiny_pipeline")
    tiny_pipeline.save_pretrained(directory)
    return directory
