"""What every stage shares: LoRA injection and saving/loading one stage folder.

A stage folder holds ``config.json`` and either
- ``model.safetensors``: every weight (bases trained here, e.g. the embedded ``mini`` preset), or
- ``adapter/`` (peft format: ``adapter_config.json`` + ``adapter_model.safetensors``) and
  ``head.safetensors``: for a pretrained base from the Hub only the LoRA adapters and the
  newly trained head are stored; the base is rebuilt from its pinned Hub weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from gac_pipeline import hub
from gac_pipeline.stages import terramind_common as tm
from gac_pipeline.stages.heads import PixelDecoder

CONFIG_FILE = "config.json"
FULL_WEIGHTS = "model.safetensors"
HEAD_WEIGHTS = "head.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing files or its weights do not match the architecture."""


def add_lora(module: nn.Module, *, rank: int, alpha: int, targets: str, dropout: float = 0.0) -> LoraConfig:
    """Inject LoRA adapters into ``module`` in place; only adapters stay trainable.

    Args:
        module: The base network (a TerraMind encoder/generator or a Prithvi backbone).
        rank: LoRA rank.
        alpha: LoRA scaling numerator (scale = alpha / rank).
        targets: Regular expression matched against full module names.
        dropout: Dropout on the adapter input.

    Returns:
        The peft ``LoraConfig`` used, saved next to the adapter weights.
    """
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    inject_adapter_in_model(config, module)
    for name, parameter in module.named_parameters():
        parameter.requires_grad = "lora_" in name
    return config


class Stage(nn.Module):
    """Base class: subclasses set ``config_class``, implement ``build`` and name their base.

    ``base_name`` is the attribute holding the (possibly pretrained) foundation model; when it
    carries pretrained weights only its LoRA adapters are saved.
    """

    config_class: type
    base_name: str

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.lora_config: LoraConfig | None = None

    @classmethod
    def build(cls, config) -> Stage:
        raise NotImplementedError

    @property
    def base(self) -> nn.Module:
        return getattr(self, self.base_name)

    @classmethod
    def base_weights(cls, config) -> list[hub.HubFile]:
        """The published foundation-model files the base loads (empty: the base is trained here)."""
        raise NotImplementedError

    def _saves_adapters_only(self) -> bool:
        return bool(self.base_weights(self.config)) and self.lora_config is not None

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save(self, directory: str | Path) -> list[Path]:
        """Write this stage's folder; returns the files written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_FILE)
        written = [directory / CONFIG_FILE]
        if not self._saves_adapters_only():
            save_file(_contiguous(self.state_dict()), directory / FULL_WEIGHTS)
            return written + [directory / FULL_WEIGHTS]
        adapter_dir = directory / ADAPTER_DIR
        adapter_dir.mkdir(exist_ok=True)
        (adapter_dir / ADAPTER_CONFIG).write_text(json.dumps(self.lora_config.to_dict(), indent=2, default=list))
        save_file(_contiguous(get_peft_model_state_dict(self.base)), adapter_dir / ADAPTER_WEIGHTS)
        # The head, plus any base weights trained in full (e.g. the last blocks unfrozen on top of LoRA).
        trained_base = {n for n, p in self.named_parameters()
                        if p.requires_grad and n.startswith(self.base_name + ".") and "lora_" not in n}
        head = {k: v for k, v in self.state_dict().items()
                if not k.startswith(self.base_name + ".") or k in trained_base}
        save_file(_contiguous(head), directory / HEAD_WEIGHTS)
        return written + [adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS, directory / HEAD_WEIGHTS]

    @classmethod
    def load(cls, directory: str | Path) -> Stage:
        """Build the architecture from ``config.json`` and load weights with strict key checks."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise CheckpointError(f"{directory}: missing {CONFIG_FILE}")
        stage = cls.build(cls.config_class.load(directory / CONFIG_FILE))
        if not stage.config.trained and not any((directory / f).exists() for f in (FULL_WEIGHTS, ADAPTER_DIR)):
            return stage  # an untrained head over a pretrained base: labelled untrained everywhere
        if not stage._saves_adapters_only():
            _load_strict(stage, _read(directory / FULL_WEIGHTS), directory / FULL_WEIGHTS)
            return stage
        _check_adapter_config(directory / ADAPTER_DIR / ADAPTER_CONFIG, stage.lora_config)
        adapter_file = directory / ADAPTER_DIR / ADAPTER_WEIGHTS
        result = set_peft_model_state_dict(stage.base, _read(adapter_file))
        missing_lora = [k for k in result.missing_keys if "lora_" in k]
        if missing_lora or result.unexpected_keys:
            raise CheckpointError(
                f"{adapter_file}: adapter keys do not match (missing {missing_lora[:3]}, "
                f"unexpected {list(result.unexpected_keys)[:3]})"
            )
        head = _read(directory / HEAD_WEIGHTS)
        result = _load_state(stage, head, directory / HEAD_WEIGHTS)
        missing_head = [k for k in result.missing_keys if not k.startswith(stage.base_name + ".")]
        if missing_head or result.unexpected_keys:
            raise CheckpointError(
                f"{directory / HEAD_WEIGHTS}: keys do not match (missing {missing_head[:3]}, "
                f"unexpected {result.unexpected_keys[:3]})"
            )
        # Base weights stored with the head were trained in full: mark them so a re-save keeps them.
        parameters = dict(stage.named_parameters())
        for key in head:
            if key.startswith(stage.base_name + ".") and key in parameters:
                parameters[key].requires_grad_(True)
        return stage


# The adapter_config.json fields that must agree with the LoRA that config.json builds: the weights'
# shapes (r), their scale (lora_alpha / r: a wrong one loads silently) and which layers carry them.
ADAPTER_CHECKED = ("peft_type", "r", "lora_alpha", "target_modules")


def _check_adapter_config(path: Path, expected: LoraConfig) -> None:
    """Refuse a peft ``adapter_config.json`` whose LoRA settings disagree with ``config.json``'s."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the LoRA adapter's peft config)")
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: expected a JSON object (peft's LoraConfig), got {type(saved).__name__}")

    def comparable(value):  # peft keeps a list of module names as a set; JSON holds a list
        return sorted(value) if isinstance(value, list | set | tuple) else value

    wanted = json.loads(json.dumps(expected.to_dict(), default=list))
    differ = [f"{key} {saved.get(key)!r} (config.json: {wanted[key]!r})" for key in ADAPTER_CHECKED
              if comparable(saved.get(key)) != comparable(wanted[key])]
    if differ:
        raise CheckpointError(f"{path}: disagrees with config.json: {', '.join(differ)}")


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing weights file")
    return load_file(path)


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path):
    try:
        return module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches raise even with strict=False
        raise CheckpointError(f"{path}: weights do not fit the architecture in config.json ({error})") from None


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    result = _load_state(module, state, path)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: keys do not match the architecture in config.json "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; cloning also drops tied views.
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


class TerraMindStage(Stage):
    """Stages 1 and 3: a TerraMind encoder + pixel decoder (``regress``) or generator (``generate``).

    Subclasses name their pixel inputs in ``input_modalities``; the decoder's full-resolution
    path sees all of them.
    """

    base_name = "terramind"
    input_modalities: tuple[str, ...]

    def __init__(self, config, terramind: nn.Module, decoder: nn.Module | None = None):
        super().__init__(config)
        if config.mode not in ("regress", "generate"):
            raise ValueError(f"{type(self).__name__} mode must be 'regress' or 'generate', got {config.mode!r}")
        if config.mode == "regress" and decoder is None:
            raise ValueError(f"{type(self).__name__} in regress mode needs a pixel decoder")
        self.terramind = terramind
        self.decoder = decoder

    @classmethod
    def build(cls, config) -> TerraMindStage:
        modalities = list(cls.input_modalities)
        if config.mode == "generate":
            stage = cls(config, tm.build_generator_from_spec(config.terramind, input_modalities=modalities,
                                                              timesteps=config.timesteps))
        else:
            encoder = tm.build_encoder_from_spec(config.terramind, modalities=modalities)
            pixel_channels = sum(tm.INPUT_CHANNELS[m] for m in modalities)
            decoder = PixelDecoder(tm.encoder_dim(encoder), pixel_channels,
                                   width=config.decoder_width, blocks=config.decoder_blocks,
                                   stride=config.decoder_stride)
            stage = cls(config, encoder, decoder)
        if config.lora_rank > 0:
            stage.lora_config = add_lora(stage.terramind, rank=config.lora_rank, alpha=config.lora_alpha,
                                         targets=config.lora_targets)
        return stage

    @classmethod
    def base_weights(cls, config) -> list[hub.HubFile]:
        spec = config.terramind
        if not spec.pretrained or spec.size is None:  # a custom size has no published weights (build says so)
            return []
        files = [tm.terramind_weights(spec.size, spec.revision)]
        if config.mode == "generate":
            files.append(tm.s2l2a_tokenizer_weights(spec.tokenizer_revision))
        return files
