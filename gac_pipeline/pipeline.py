"""GACPipeline: SAR -> opt_v1 -> opt_v2 -> opt_v3, readable top to bottom.

    s1 (VV, VH dB) --pad to x16--> stage 1 --> opt_v1 --> stage 2 (+month, biome) --> opt_v2
                                   stage 3 (s1, opt_v2) --> opt_v3 --crop the same pixels back-->

Scenes larger than one tile run window by window with overlapping, smoothly blended windows;
``forward`` runs the stages on a batch of tensors (a plain module call); ``translate`` (one array)
and ``translate_file`` (streams windows from and to disk so memory stays bounded) do the padding,
windows, files and timings around it. ``translate(..., uncertainty=N)`` runs the in-memory chain on N test-time variants (``gac_pipeline.uncertainty``) for a per-pixel
spread per stage.

Outputs are DN >= 0: negative model outputs are clipped to 0 (the stages still pass each other
their raw outputs, as in training). There is no upper bound: L2A reflectance above 1 (DN over
10000) is real over clouds, snow and specular surfaces, so a too-bright prediction is left as is
for the scores to show rather than cut.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gac_pipeline import __version__, hub
from gac_pipeline.configs import PipelineConfig
from gac_pipeline.data import biome_index
from gac_pipeline.io import OpticalWriter, SarSource, write_optical
from gac_pipeline.outputs import STAGE_NAMES, PipelineOutput
from gac_pipeline.stages.base import CONFIG_FILE, CheckpointError, Stage
from gac_pipeline.stages.stage1_terramind import Stage1TerraMind
from gac_pipeline.stages.stage2_prithvi import Stage2Prithvi
from gac_pipeline.stages.stage3_grounding import Stage3Grounding
from gac_pipeline.stages.terramind_common import seed_everything
from gac_pipeline.tiling import crop_pads, pad_to_multiple, tiled_apply, tiled_apply_array
from gac_pipeline.uncertainty import Spread, Variant
from gac_pipeline.uncertainty import describe as describe_variants
from gac_pipeline.uncertainty import variants as uncertainty_variants

ALL_STAGES = ("1", "2", "3")
STAGE_DIRS = {"1": "stage1", "2": "stage2", "3": "stage3"}


class GACPipeline(nn.Module):
    """The three stages, injected; ``from_pretrained`` builds them from a checkpoint folder.

    Args:
        stage1: SAR -> opt_v1.
        stage2: opt_v1 -> opt_v2.
        stage3: (SAR, opt_v2) -> opt_v3.
        config: Name, description, tiling and provenance.

    Attributes:
        preset: Where the pipeline came from, for the outputs' provenance: the checkpoint folder's
            name ("mini") or "repo@commit" for a Hub repo (set by ``from_pretrained``); else
            ``config.name``.
    """

    def __init__(self, stage1: Stage1TerraMind, stage2: Stage2Prithvi, stage3: Stage3Grounding,
                 config: PipelineConfig | None = None):
        super().__init__()
        self.stage1, self.stage2, self.stage3 = stage1, stage2, stage3
        share_s2l2a_tokenizer(stage1, stage3)
        self.config = config or PipelineConfig()
        self.preset = self.config.name
        self.checkpoint_notes: list[str] = []  # e.g. a Hub repo loaded at a moving revision (from_pretrained)
        self.eval()

    @property
    def label(self) -> str:
        """How the pipeline is shown to users, always saying whether it is trained."""
        state = "trained" if self.config.trained else "UNTRAINED (random weights)"
        return f"{self.config.name}: {self.config.description or 'no description'} [{state}]"

    def unpinned_notes(self) -> list[str]:
        """The checkpoint's own note when it came from a moving Hub revision, and one per published
        base file loaded from a moving branch instead of a commit."""
        notes = list(self.checkpoint_notes)
        for key, stage in zip(ALL_STAGES, (self.stage1, self.stage2, self.stage3), strict=True):
            files = stage.base_weights(stage.config) if isinstance(stage, Stage) else []  # not injected stand-ins
            notes += [f"stage {key} base {file} is not pinned to a commit: its owners can change these weights"
                      for file in files if not file.pinned]
        return notes

    def output_tags(self, input_path: str | Path, *, seed: int, stages=ALL_STAGES) -> dict[str, dict[str, str]]:
        """The provenance tags of each output GeoTIFF of one run: {"opt_v1": {...}, ...}.

        ``preset``, ``trained``, ``base_models`` (the published base files each stage loads, with
        their revisions and whether they are pinned to a commit, as in ``pipeline_config.json``),
        ``stage`` (the output), ``stages_run``, ``seed``, ``input`` (the SAR file's name) and
        ``TIFFTAG_SOFTWARE`` (this package and its version).
        """
        common = {"preset": self.preset, "trained": str(self.config.trained).lower(),
                  "base_models": json.dumps(self.config.base_models, sort_keys=True),
                  "stages_run": ",".join(_check_stages(stages)), "seed": str(seed), "input": Path(input_path).name,
                  "TIFFTAG_SOFTWARE": f"gac_pipeline {__version__}"}
        return {name: {**common, "stage": name} for name in ("opt_v1", "opt_v2", "opt_v3")}

    # ----------------------------------------------------------------------------- the model
    def forward(self, s1_db: torch.Tensor, month: torch.Tensor | int | None = None,
                biome: torch.Tensor | str | int | None = None, *, seed: int = 0,
                stages=ALL_STAGES) -> dict[str, torch.Tensor]:
        """The three stages on a batch, on the model's device; a plain module call, so hooks,
        ``torch.compile`` and ``.to()`` work as for any module. ``translate`` and
        ``translate_file`` do the padding, windows, files and timings around it.

        Args:
            s1_db: (B, 2, H, W) VV, VH in dB, H and W multiples of 16, on the model's device and dtype.
            month: (B,) months 1..12 (0 = unknown), or one month (None = unknown) for the batch.
            biome: (B,) biome indices, or one biome name or index (None = unknown) for the batch.
            seed: Sampling seed of generate-mode stages.
            stages: Which stages run; a skipped stage passes its input through.

        Returns:
            {"opt_v1", "opt_v2", "opt_v3"}: (B, 12, H, W) S2L2A DN, unclipped (as the stages pass them on).
        """
        if not isinstance(s1_db, torch.Tensor) or s1_db.ndim != 4 or s1_db.shape[1] != 2:
            raise TypeError(f"GACPipeline.forward takes a (B, 2, H, W) tensor, got {type(s1_db).__name__} of shape "
                            f"{tuple(getattr(s1_db, 'shape', ()))}; for one (2, H, W) array use pipeline.translate(...)")
        month = month if isinstance(month, torch.Tensor) else (month or 0)
        biome = biome if isinstance(biome, torch.Tensor | int | np.integer) else biome_index(biome)
        month, biome = (torch.as_tensor(value, device=s1_db.device).expand(len(s1_db)) for value in (month, biome))
        opt_v1 = self.stage1(s1_db, seed=seed)
        opt_v2 = self.stage2(opt_v1, s1_db=s1_db, month=month, biome=biome) if "2" in stages else opt_v1
        opt_v3 = self.stage3(s1_db, opt_v2, seed=seed) if "3" in stages else opt_v2
        return {"opt_v1": opt_v1, "opt_v2": opt_v2, "opt_v3": opt_v3}

    @contextmanager
    def _stage_timer(self, timings: dict[str, float]) -> Iterator[None]:
        """While active, each stage's forward time is added to ``timings[key]`` (forward hooks); with
        windows run side by side (``_window_workers``), their times add up."""
        started: dict[tuple[int, str], float] = {}  # by thread and stage
        handles = []
        for key, stage in zip(ALL_STAGES, (self.stage1, self.stage2, self.stage3), strict=True):
            handles.append(stage.register_forward_pre_hook(
                lambda module, args, key=key: started.__setitem__((threading.get_ident(), key), time.perf_counter())))
            handles.append(stage.register_forward_hook(
                lambda module, args, output, key=key: timings.__setitem__(
                    key, timings[key] + time.perf_counter() - started[threading.get_ident(), key])))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # ----------------------------------------------------------------------------- one array
    @torch.inference_mode()
    def translate(self, s1_db: np.ndarray | torch.Tensor, *, month: int | None = None,
                 biome: str | int | None = None, seed: int = 0, stages=ALL_STAGES,
                 progress: bool = False, timesteps: int | None = None, uncertainty: int = 0) -> PipelineOutput:
        """Translate one SAR array of any size.

        Args:
            s1_db: (2, H, W) VV, VH in dB (already validated; see ``io.read_s1``).
            month: Acquisition month 1..12, or None if unknown.
            biome: Biome name from ``data.BIOMES`` or its index, or None.
            seed: Seeds ``random``, numpy and torch (TerraMind generate mode samples tokens).
            stages: Which stages run, e.g. ("1", "3") skips the refiner (its input passes through).
            progress: Show a progress bar over windows for scenes larger than one tile.
            timesteps: Diffusion steps for the generate-mode stages, for this call only; None
                keeps each stage's configured value. Regress-mode stages ignore it.
            uncertainty: Number of test-time variants to run the chain on (``gac_pipeline.uncertainty``:
                dihedral transforms, at most 8, or seeds when a stage that runs samples); 0 runs
                the plain chain once. The first variant is the plain run.

        Returns:
            PipelineOutput with opt_v1/opt_v2/opt_v3 as (12, H, W) float32 DN, clipped at 0, and
            with ``uncertainty`` also ``mean`` and ``std`` over the variants.
        """
        stages, timesteps = _check_stages(stages), _check_timesteps(timesteps)
        s1 = np.asarray(s1_db.cpu() if isinstance(s1_db, torch.Tensor) else s1_db, dtype=np.float32)
        if s1.ndim != 3 or s1.shape[0] != 2:
            raise ValueError(f"expected SAR of shape (2, H, W), got {s1.shape}")
        generative = bool(uncertainty) and bool(self.generators(stages))
        chain = uncertainty_variants(uncertainty or 1, seed, generative=generative)  # checked before any work
        seed_everything(seed)
        timings = dict.fromkeys(ALL_STAGES, 0.0)
        tile, overlap = self.config.tile_size, self.config.tile_overlap

        def run(variant: Variant) -> dict[str, np.ndarray]:
            run_tile = self._tile_runner(month, biome, variant.seed, stages)
            s1_variant = variant.apply(s1)
            if max(s1.shape[1:]) <= tile:
                outputs = {name: dn[0] for name, dn in run_tile(s1_variant[None]).items()}
            else:
                outputs = tiled_apply_array(s1_variant, run_tile, tile=tile, overlap=overlap, progress=progress,
                                            batch=self.config.window_batch, workers=self._window_workers(stages))
            return {name: variant.undo(dn) for name, dn in outputs.items()}

        spread = {}
        with self._generate_timesteps(timesteps), self._stage_timer(timings):
            versions = run(chain[0])  # the identity with ``seed``: the plain run
            if uncertainty:
                accumulator = Spread()
                accumulator.add(versions)
                for variant in chain[1:]:
                    accumulator.add(run(variant))
                spread = {"mean": accumulator.mean(), "std": accumulator.std(),
                          "uncertainty": describe_variants(uncertainty, generative=generative)}
        return PipelineOutput(**versions, ran={k: k in stages for k in ALL_STAGES}, timings_s=timings,
                              notes=_skip_notes(stages) + self._conditioning_notes(month, biome, stages)
                              + self.unpinned_notes(), **spread)

    @contextmanager
    def _generate_timesteps(self, timesteps: int | None) -> Iterator[None]:
        """Set the generate-mode stages' diffusion steps for one call, then restore them.

        The stages read ``config.timesteps`` when they run, so a per-call value is applied there
        and put back even when the call fails. Not safe for concurrent calls on one pipeline
        (the app runs one translation at a time).
        """
        if timesteps is None:
            yield
            return
        generators = self.generators()
        saved = [stage.config.timesteps for stage in generators]
        for stage in generators:
            stage.config.timesteps = timesteps
        try:
            yield
        finally:
            for stage, value in zip(generators, saved, strict=True):
                stage.config.timesteps = value

    def _window_workers(self, stages) -> int:
        """How many windows run side by side, each on one torch thread: on CPU, one per torch thread,
        which keeps the cores busier than one window's operations split over them (issue 15:
        ``python -m bench.scene``). One on an accelerator, and when a stage samples (its seeded
        random stream must see the windows in one order)."""
        device, _ = self.placement()
        return 1 if device.type != "cpu" or self.generators(stages) else torch.get_num_threads()

    def generators(self, stages=ALL_STAGES) -> list[nn.Module]:
        """The stages among ``stages`` that sample (generate mode): stage 1 and/or stage 3. With any,
        the test-time variants of ``uncertainty`` are seeds rather than dihedral transforms."""
        return [stage for key, stage in (("1", self.stage1), ("3", self.stage3))
                if key in stages and stage.config.mode == "generate"]

    def _conditioning_notes(self, month, biome, stages) -> list[str]:
        if "2" not in stages:
            return []
        return self.stage2.conditioning_notes(month, biome if isinstance(biome, int) else biome_index(biome))

    def placement(self) -> tuple[torch.device, torch.dtype]:
        """The model's device and floating-point dtype: where and in what the inputs are built.

        Taken from the first floating-point parameter (an 8-bit backbone's int8 weights say
        nothing about the dtype the stages compute in).
        """
        for parameter in self.parameters():
            if parameter.is_floating_point():
                return parameter.device, parameter.dtype
        return torch.device("cpu"), torch.float32

    def _tile_runner(self, month, biome, seed, stages):
        """A function (n, 2, h, w) -> {"opt_v1", "opt_v2", "opt_v3": (n, 12, h, w)}, run on a stack of windows.

        Inputs go to the model's device and dtype (``placement``); outputs come back as CPU float32.
        """
        device, dtype = self.placement()

        def run_tile(s1_windows: np.ndarray) -> dict[str, np.ndarray]:
            # Pad symmetrically to a multiple of 16 and crop exactly the same pixels back.
            s1 = torch.from_numpy(np.ascontiguousarray(s1_windows)).to(device=device, dtype=dtype)
            s1, pads = pad_to_multiple(s1)
            outputs = self(s1, month, biome, seed=seed, stages=stages)
            return {name: crop_pads(v, pads).float().clamp(min=0).cpu().numpy()  # DN >= 0
                    for name, v in outputs.items()}

        return run_tile

    # ------------------------------------------------------------------------ whole files
    @torch.inference_mode()
    def translate_file(self, s1_path: str | Path, out_dir: str | Path, *, units: str | None = None,
                       month: int | None = None, biome: str | int | None = None, seed: int = 0,
                       stages=ALL_STAGES, progress: bool = True, max_pixels: int = 1_000_000_000,
                       timesteps: int | None = None, dtype: str = "float32") -> dict:
        """Stream a SAR GeoTIFF through the pipeline into ``opt_v1/2/3.tif`` in ``out_dir``.

        Windows are read from and written to disk, so memory stays bounded for any scene size.
        The outputs are Cloud-Optimized GeoTIFFs, float32 DN with NaN where the SAR was masked, or
        ``dtype="uint16"``: whole DN with 0 there (``io.writer``); with the tags of
        :meth:`output_tags`; a failed run writes none.
        Month defaults to the one found in the file's metadata or name. ``timesteps`` overrides
        the generate-mode stages' diffusion steps for this call only (see ``translate``).

        Returns:
            {"paths": {name: Path}, "month": int | None, "notes": [...], "timings_s": {...}}
        """
        stages, timesteps = _check_stages(stages), _check_timesteps(timesteps)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(seed)
        timings = dict.fromkeys(ALL_STAGES, 0.0)
        with SarSource(s1_path, units=units, max_pixels=max_pixels) as source, ExitStack() as files:
            month = month if month is not None else source.month
            run_tile = self._tile_runner(month, biome, seed, stages)
            tags = self.output_tags(s1_path, seed=seed, stages=stages)
            paths = {name: out_dir / f"{name}.tif" for name in tags}
            writers = {name: files.enter_context(OpticalWriter(path, source.profile, source.height, source.width,
                                                               tags[name], dtype=dtype))
                       for name, path in paths.items()}
            masks: dict[int, np.ndarray] = {}

            def read(row, col, h, w):
                return source.read(row, col, h, w)[0]  # (data, valid_mask): masks are re-read in write

            def write(name, row0, block):
                # Nodata where the input had NaN/inf/nodata: re-read that strip's mask (cheap).
                if row0 not in masks:
                    masks.clear()
                    masks[row0] = source.read(row0, 0, block.shape[1], source.width)[1]
                writers[name].write_rows(row0, block, valid_mask=masks[row0])

            with self._generate_timesteps(timesteps), self._stage_timer(timings):
                tiled_apply(read, source.height, source.width, run_tile, write, tile=self.config.tile_size,
                            overlap=self.config.tile_overlap, batch=self.config.window_batch,
                            workers=self._window_workers(stages), progress=progress)
            notes = (list(source.notes) + _skip_notes(stages) + self._conditioning_notes(month, biome, stages)
                     + self.unpinned_notes())
        return {"paths": paths, "month": month, "notes": notes, "timings_s": timings}

    def write_uncertainty(self, path: str | Path, output: PipelineOutput, *, input_path: str | Path, profile: dict,
                          valid_mask: np.ndarray | None, seed: int, stages=ALL_STAGES) -> Path:
        """Write ``uncertainty.tif`` from ``translate(..., uncertainty=N)``'s output: float32, one band per
        stage (``opt_v1_std``, ``opt_v2_std``, ``opt_v3_std``), on the input's grid, tagged like the outputs."""
        from gac_pipeline.uncertainty import FILE_BANDS, FILE_DESCRIPTION

        if not output.std:
            raise ValueError("no uncertainty in this output: run translate(..., uncertainty=N) first")
        tags = {**self.output_tags(input_path, seed=seed, stages=stages)["opt_v3"], "stage": "uncertainty",
                "uncertainty": output.uncertainty, "description": FILE_DESCRIPTION}
        write_optical(path, np.stack([output.std[name] for name in ("opt_v1", "opt_v2", "opt_v3")]), profile,
                      valid_mask=valid_mask, tags=tags, bands=FILE_BANDS)
        return Path(path)

    # ---------------------------------------------------------------------- save / load
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``pipeline_config.json`` and one folder per stage, recording file hashes."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = []
        for key, stage in (("1", self.stage1), ("2", self.stage2), ("3", self.stage3)):
            files += stage.save(directory / STAGE_DIRS[key])
        self.config.files = {str(p.relative_to(directory)): hub.sha256(p) for p in files}
        self.config.base_models = base_models(self.stage1.config, self.stage2.config, self.stage3.config)
        self.config.save(directory / hub.PIPELINE_CONFIG)
        return directory

    @classmethod
    def from_pretrained(cls, repo_id_or_dir: str | Path, revision: str | None = None, *,
                        load_in_8bit: bool | None = None) -> GACPipeline:
        """Load a pipeline from a local folder or a Hugging Face Hub repo at ``revision``.

        Args:
            repo_id_or_dir: A folder written by ``save_pretrained`` or a Hub repo id.
            revision: Hub commit/tag to pin (ignored for local folders).
            load_in_8bit: Override the stage-2 config: run the Prithvi backbone in int8.
        """
        root = hub.resolve_checkpoint(repo_id_or_dir, revision)
        config_path = root / hub.PIPELINE_CONFIG
        if not config_path.is_file():
            raise CheckpointError(f"{root}: missing {hub.PIPELINE_CONFIG}")
        config = PipelineConfig.load(config_path)
        hub.verify_folder(root, config.files)
        folders = {key: hub.inside(root, folder) for key, folder in STAGE_DIRS.items()}
        _fetch_base_weights(folders, config.name)
        stage1 = Stage1TerraMind.load(folders["1"])
        stage2 = Stage2Prithvi.load(folders["2"])
        if load_in_8bit and not stage2.config.load_in_8bit:
            stage2.quantize_backbone()
        stage3 = Stage3Grounding.load(folders["3"])
        pipeline = cls(stage1, stage2, stage3, config)
        # A Hub snapshot folder is named by its commit, so a moving revision is recorded as the commit it was.
        local = Path(repo_id_or_dir).expanduser().is_dir()
        pipeline.preset = root.name if local else f"{repo_id_or_dir}@{root.name}"
        if not local:
            from gac_pipeline.presets import preset_notes

            pipeline.checkpoint_notes = preset_notes(f"{repo_id_or_dir}@{revision or 'main'}")
        return pipeline


def _fetch_base_weights(folders: dict[str, Path], name: str) -> None:
    """Fetch every published base file the stage configs name, before building anything, so a
    missing download is one message naming all of them rather than one per stage build."""
    files = []
    for key, stage_class in (("1", Stage1TerraMind), ("2", Stage2Prithvi), ("3", Stage3Grounding)):
        config_path = folders[key] / CONFIG_FILE
        if config_path.is_file():  # a missing one is reported by Stage.load
            files += [f for f in stage_class.base_weights(stage_class.config_class.load(config_path)) if f not in files]
    hub.fetch(files, name, warn_unpinned=False)


def share_s2l2a_tokenizer(stage1: nn.Module, stage3: nn.Module) -> bool:
    """Let generate-mode stages 1 and 3 hold one S2L2A tokenizer instance when theirs are equal.

    Each builds and loads its own frozen tokenizer (289 M parameters for the published one); two
    equal copies only cost memory, so stage 3 takes stage 1's. Returns whether they now share it.
    """
    tokenizers = [getattr(getattr(stage, "terramind", None), "tokenizer", None) for stage in (stage1, stage3)]
    if any(not isinstance(tokenizer, nn.ModuleDict) for tokenizer in tokenizers):
        return False  # regress mode (an encoder, no tokenizer) or an injected stand-in
    first, second = tokenizers
    shared = False
    for key in set(first) & set(second):
        mine, theirs = first[key].state_dict(), second[key].state_dict()
        if mine.keys() == theirs.keys() and all(
                mine[name].shape == theirs[name].shape and torch.equal(mine[name], theirs[name]) for name in mine):
            second[key] = first[key]
            shared = True
    return shared


def base_models(stage1_config, stage2_config, stage3_config) -> dict:
    """``pipeline_config.json``'s record of the published files each stage's base loads."""
    records = {}
    for key, stage_class, config in (("1", Stage1TerraMind, stage1_config), ("2", Stage2Prithvi, stage2_config),
                                     ("3", Stage3Grounding, stage3_config)):
        files = stage_class.base_weights(config)
        if files:
            records[STAGE_DIRS[key]] = [file.describe() for file in files]
    return records


def _check_stages(stages) -> tuple[str, ...]:
    stages = tuple(str(s).strip() for s in stages)
    unknown = sorted(set(stages) - set(ALL_STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from 1, 2, 3")
    if "1" not in stages:
        raise ValueError("stage 1 must run: it is the only stage that turns SAR into optical")
    return stages


def _check_timesteps(timesteps: int | None) -> int | None:
    """None (keep the configured steps) or a whole number >= 1, checked before any work."""
    if timesteps is None:
        return None
    if isinstance(timesteps, bool) or not isinstance(timesteps, int | np.integer) or timesteps < 1:
        raise ValueError(f"timesteps must be a whole number >= 1, got {timesteps!r}")
    return int(timesteps)


def _skip_notes(stages: tuple[str, ...]) -> list[str]:
    return [f"stage {k} ({STAGE_NAMES[k]}) skipped: its input passes through unchanged"
            for k in ALL_STAGES if k not in stages]
