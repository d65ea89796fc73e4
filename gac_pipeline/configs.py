"""Configuration dataclasses, saved as ``config.json`` next to each stage's weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from gac_pipeline.standardization import Standardization

TERRAMIND_LORA_TARGETS = r".*(encoder|decoder)\.\d+\.(attn|self_attn|cross_attn)\.(qkv|q|kv|proj)"
TERRAMIND_CROSS_ATTN_TARGETS = r".*decoder\.\d+\.cross_attn\.(q|kv|proj)"
PRITHVI_LORA_TARGETS = r".*blocks\.\d+\.attn\.(qkv|proj)"


class _JsonConfig:
    """Shared JSON round trip; unknown keys are an error so typos in a config never pass."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}")
        data = dict(data)
        for key, nested in (("standardization", Standardization), ("terramind", TerraMindSpec)):
            if isinstance(data.get(key), dict):
                data[key] = nested.from_dict(data[key]) if key == "standardization" else nested(**data[key])
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path):
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class TerraMindSpec:
    """Which TerraMind to build: a registry size with pretrained weights, or a small custom one."""

    size: str | None = None  # "tiny"|"small"|"base"|"large" (registry) or None (custom dims below)
    pretrained: bool = False  # download TerraMind-1.0 weights from the Hub (registry sizes only)
    revision: str | None = None  # Hub commit of the TerraMind weights (None: the moving "main")
    tokenizer_revision: str | None = None  # Hub commit of the S2L2A tokenizer (generate mode)
    dim: int = 128
    depth: int = 6
    num_heads: int = 4
    # generate mode with size=None: custom generator (decoder depth + small tokenizer kwargs)
    decoder_depth: int = 2
    tokenizer: dict | None = None


@dataclass
class Stage1Config(_JsonConfig):
    """Stage 1: TerraMind S1GRD -> S2L2A."""

    mode: str = "regress"  # "regress" (encoder + pixel decoder) or "generate" (token sampling)
    terramind: TerraMindSpec = field(default_factory=TerraMindSpec)
    decoder_width: int = 32
    decoder_blocks: int = 2
    decoder_stride: int = 1  # 2: the decoder's blocks at half resolution (GAC-mini; see heads.PixelDecoder)
    # > 0 (regress mode): a small UNet on the SAR pixels (the control's architecture, 3 levels, this
    # width) beside the token decoder, outputs added; it starts at zero. 0: no branch.
    unet_branch_width: int = 0
    timesteps: int = 10
    lora_rank: int = 0  # LoRA on attention; only meaningful on a pretrained encoder
    lora_alpha: int = 16
    lora_targets: str = TERRAMIND_LORA_TARGETS
    standardization: Standardization = field(default_factory=Standardization)
    trained: bool = False


@dataclass
class Stage2Config(_JsonConfig):
    """Stage 2: Prithvi-EO-2.0 backbone + LoRA + ConvNeXt head refining opt_v1."""

    backbone: str = "prithvi_eo_tiny"  # terratorch registry name, e.g. prithvi_eo_v2_300
    pretrained: bool = False
    revision: str | None = None  # Hub commit of the Prithvi weights (None: the moving "main")
    embed_dim: int | None = None  # overrides for small custom backbones (None: registry default)
    depth: int | None = None
    num_heads: int | None = None
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: str = PRITHVI_LORA_TARGETS
    head_width: int = 32
    head_blocks: int = 2
    head_stride: int = 1  # 2: the head's blocks at half resolution (GAC-mini; see heads.PixelDecoder)
    cond_dim: int = 16
    # The head's full-resolution path also reads the SAR (VV, VH): where edges sit is in the SAR,
    # not in the blurred opt_v1. Off in GAC-mini (README, "Tried and not kept").
    sar_input: bool = False
    # Month (1..12) and biome indices the embeddings were trained on; others map to 0, "unknown"
    # (trained through conditioning dropout). None: not recorded (older checkpoints), no mapping.
    seen_months: list[int] | None = None
    seen_biomes: list[int] | None = None
    load_in_8bit: bool = False
    standardization: Standardization = field(default_factory=Standardization)
    trained: bool = False


@dataclass
class Stage3Config(_JsonConfig):
    """Stage 3: TerraMind conditioned on S1GRD and opt_v2, grounding it to opt_v3."""

    mode: str = "regress"
    terramind: TerraMindSpec = field(default_factory=TerraMindSpec)
    decoder_width: int = 32
    decoder_blocks: int = 2
    decoder_stride: int = 1  # 2: the decoder's blocks at half resolution (GAC-mini; see heads.PixelDecoder)
    timesteps: int = 10
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: str = TERRAMIND_LORA_TARGETS  # generate mode default: decoder cross-attention
    standardization: Standardization = field(default_factory=Standardization)
    trained: bool = False


@dataclass
class PipelineConfig(_JsonConfig):
    """Top-level ``pipeline_config.json``: what the pipeline is and where its parts came from."""

    name: str = "gac"
    description: str = ""
    trained: bool = False
    tile_size: int = 128
    tile_overlap: int = 32
    # Windows stacked into one forward by translate/translate_file: pays on a GPU; on CPU it did
    # not (issue 15, ``python -m bench.scene``), windows side by side do. Memory grows with it.
    window_batch: int = 1
    # Written by save_pretrained from the stage configs: {"stage1": [{"repo", "filename", "revision", "pinned"}]}
    base_models: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # relative path -> sha256, verified on load
    format_version: int = 1
