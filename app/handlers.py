"""The app's logic without Gradio: load presets, translate one scene, build images and tables.

Everything here is a plain function that tests can call without a server. User problems
(a bad file, a preset that cannot load, a wrong option) are raised as :class:`AppError`
with a one-line message; the UI layer shows it with ``gr.Error``.

Images use the fixed display stretches of ``gac_pipeline.display`` (one stretch for opt_v1,
opt_v2, opt_v3, the reference and the baseline, so they compare).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gac_pipeline.bands import S2L2A_BANDS
from gac_pipeline.data import BIOMES, DEFAULT_DATA_DIR, PairInfo, evaluation_pairs, list_pairs
from gac_pipeline.display import mean_absolute_change, rgb_composite, sar_false_colour
from gac_pipeline.io import InputError, check_same_grid, read_s1, read_s2, write_optical
from gac_pipeline.metrics import (
    compute_metrics,
    edge_r,
    mask_note,
    sar_edge_agreement,
    sharpness,
    structure_r,
    to_json_safe,
)
from gac_pipeline.outputs import STAGE_NAMES

logger = logging.getLogger(__name__)

PRESET_CHOICES = ("mini", "hub")
# Written by `python -m gac_pipeline publish space` next to app.py: {"preset": "user/gac@<commit>,mini"}.
SPACE_CONFIG = Path(__file__).resolve().parent.parent / "space_config.json"
STAGE_KEYS = ("1", "2", "3")
VERSIONS = ("opt_v1", "opt_v2", "opt_v3")



def preset_choices() -> list[str]:
    """The presets the app offers, the first being the default: ``GAC_PRESET`` (comma-separated),
    else ``space_config.json``'s "preset", else :data:`PRESET_CHOICES`."""
    value = os.environ.get("GAC_PRESET")
    if value is None and SPACE_CONFIG.is_file():
        value = json.loads(SPACE_CONFIG.read_text()).get("preset")
    chosen = [name.strip() for name in (value or "").split(",") if name.strip()]
    return list(dict.fromkeys(chosen)) or list(PRESET_CHOICES)


# Diffusion steps a user may ask of TerraMind's generate mode: each step decodes every token again.
MAX_TIMESTEPS = 50
# Test-time variants of the Translate tab's "Uncertainty" option: the 8 dihedral transforms (regress mode).
UNCERTAINTY_VARIANTS = 8

# Largest scene the app accepts (height x width). Three 12-band float32 outputs of 1 MP are
# ~150 MB in memory; larger scenes belong on the CLI, which streams windows from disk.
MAX_PIXELS = 1024 * 1024

OUTPUT_PREFIX = "gac_app_"
OUTPUT_MAX_AGE_S = 3600  # output folders older than this are removed on the next request

# Sharpness has two columns so each number says what it is relative to: the reference tile
# (when one is given) and the preset's training tiles' median gradient energy (when stored).
# "change vs previous stage": mean |this stage - the one before| over all bands, in reflectance.
CHANGE_COLUMN = "change vs previous stage (reflectance)"
TABLE_COLUMNS = ("image", "PSNR (dB)", "SSIM", "structure r", "edge r", "sharpness (vs reference)",
                 "sharpness (vs train median)", "SAM (deg)", "SAR-edge", CHANGE_COLUMN,
                 "LPIPS")  # LPIPS last: its n/a reason is long
BASELINE_ROW = "mean image (train split)"
REFERENCE_ROW = "reference (real optical)"

ProgressCallback = Callable[[float, str], None]


class AppError(ValueError):
    """A problem the user can fix; ``str(error)`` is one line meant to be shown as is."""


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (our readers already write one line)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# ----------------------------------------------------------------------------- presets


# Loaded presets, most recently used last. The preset box takes typed text (a Hub repo id or a
# folder), so what this process could be asked to hold is unbounded: keep the last LOADED_MAX
# pipelines (a few MB for mini, a few GB for hub-sized checkpoints; an evicted one loads again
# from disk or the local Hub cache) and the last FAILED_MAX failure messages. A failure is
# remembered so that asking again answers at once (an offline "hub" takes seconds to fail), but
# only for FAILED_RETRY_S: a Hub outage or a repo published meanwhile must not stay broken.
LOADED_MAX = 3
FAILED_MAX = 16
FAILED_RETRY_S = 600.0
_loaded: OrderedDict[str, object] = OrderedDict()
_failed: OrderedDict[str, tuple[float, str]] = OrderedDict()
_LOAD_LOCK = threading.Lock()  # two requests for one preset must not both start the (slow) load

# No angle brackets: Gradio shows gr.Error messages as HTML.
PRESET_HELP = "a preset name (mini, hub), a checkpoint folder or a Hub repo id user/name@commit"


def check_preset(preset) -> str:
    """The preset text, stripped, if it can name a preset: a name, a folder or ``user/name[@revision]``.

    Only the form is checked (nothing is loaded or downloaded): whether the folder or repo holds
    a checkpoint is the loader's to say.

    Raises:
        AppError: one line, for empty or malformed text, e.g. ``user/gac@`` or ``my model``.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from gac_pipeline.presets import PRESETS

    text = str(preset or "").strip()
    if not text:
        raise AppError(f"choose a preset or type one: {PRESET_HELP}")
    if text in PRESETS or text in preset_choices():
        return text
    if text.startswith((".", "/", "~")) or Path(text).expanduser().is_dir():
        # On a hosted Space (Hugging Face sets SPACE_ID) a visitor must not probe or load the server's folders.
        if os.environ.get("SPACE_ID"):
            raise AppError(f"preset '{text}': folders on the server cannot be typed on a hosted Space; "
                           f"type a Hub repo id user/name@commit")
        return text
    repo, at, revision = text.rpartition("@") if "@" in text else (text, "", "")
    if at and (not revision or any(char.isspace() for char in revision)):
        raise AppError(f"preset '{text}': the revision after '@' is empty or has spaces; expected {PRESET_HELP}")
    try:
        validate_repo_id(repo)
    except HFValidationError as error:
        raise AppError(f"preset '{text}' is not {PRESET_HELP}: {one_line(error)}") from None
    if "/" not in repo:  # a GAC checkpoint lives under a user or an organisation; a bare word is a typo
        raise AppError(f"preset '{text}' is not {PRESET_HELP}")
    return text


def load_pipeline(preset: str, progress: Callable[[str], None] | None = None):
    """The pipeline behind a preset name, folder or ``repo@revision``, loaded on first use.

    Args:
        preset: "mini", "hub", or anything ``gac_pipeline.presets.load_preset`` accepts (typed
            text is checked first: :func:`check_preset`).
        progress: Called with a description ("loading user/gac@abc123 …") when the preset is
            really loaded, i.e. not answered from the cache: a Hub checkpoint downloads then.

    Returns:
        ``(pipeline, None)`` on success, ``(None, message)`` when it cannot load, e.g. "hub"
        without the Hub or a filled cache, or a malformed repo id. The message is one line.
        Both outcomes are cached (see ``LOADED_MAX``); a malformed id is not.
    """
    try:
        preset = check_preset(preset)
    except AppError as error:
        return None, str(error)
    with _LOAD_LOCK:
        if preset in _loaded:
            _loaded.move_to_end(preset)
            return _loaded[preset], None
        failed = _failed.get(preset)
        if failed is not None and time.monotonic() - failed[0] < FAILED_RETRY_S:
            return None, failed[1]
        if progress is not None:
            progress(f"loading {preset} …")
        from gac_pipeline.presets import load_preset  # imports torch and the stages: keep it lazy

        try:
            pipeline = load_preset(preset)
        except Exception as error:  # noqa: BLE001  (any load failure becomes a message, never a crash)
            logger.warning("preset %r failed to load: %s", preset, error)
            message = f"preset '{preset}' could not be loaded: {one_line(error)}"
            _remember(_failed, preset, (time.monotonic(), message), FAILED_MAX)
            return None, message
        _failed.pop(preset, None)
        _remember(_loaded, preset, pipeline, LOADED_MAX)
        return pipeline, None


def _remember(cache: OrderedDict, key: str, value, limit: int) -> None:
    """Put ``key`` last (most recent) and drop the oldest entries beyond ``limit``."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


def run_device() -> str:
    """Where a translation runs: "cuda" when this call sees a GPU, else "cpu" (``resolve_device("auto")``).

    Call it inside the GPU-decorated handler: on Hugging Face ZeroGPU a GPU is attached only while
    a ``spaces.GPU`` function runs (https://huggingface.co/docs/hub/spaces-zerogpu), so the
    answer outside it is "cpu".
    """
    from gac_pipeline.cli import resolve_device

    return resolve_device("auto")


def preset_timesteps(preset: str) -> tuple[int, bool | None]:
    """The preset's diffusion steps and whether any stage runs in generate mode, from its configs.

    Reads the stage ``config.json`` files only (no weights, no network), so the UI can show the
    default as soon as a preset is chosen.

    Returns:
        ``(timesteps, uses_generate)``; ``uses_generate`` is None (and the steps the config
        default) when the preset's files are not local, e.g. a Hub repo id.
    """
    from gac_pipeline.configs import Stage1Config, Stage3Config
    from gac_pipeline.presets import preset_location

    location, _ = preset_location(str(preset))
    paths = [(Path(location) / folder / "config.json", config_class)
             for folder, config_class in (("stage1", Stage1Config), ("stage3", Stage3Config))]
    if not all(path.is_file() for path, _ in paths):
        return Stage1Config().timesteps, None
    try:
        configs = [config_class.load(path) for path, config_class in paths]
    except (OSError, ValueError, TypeError):  # a broken config fails properly when the preset loads
        return Stage1Config().timesteps, None
    generators = [config for config in configs if config.mode == "generate"]
    return (generators or configs)[0].timesteps, bool(generators)


@functools.lru_cache(maxsize=LOADED_MAX + FAILED_MAX)  # bounded: presets are typed text
def training_gradient_energy(preset: str) -> tuple[float | None, str | None]:
    """The preset's stored training median gradient energy, read once per process.

    Returns:
        ``(value, None)`` or ``(None, reason)``; see
        ``gac_pipeline.references.training_gradient_energy_for_preset``.
    """
    from gac_pipeline.references import training_gradient_energy_for_preset  # imports torch: keep it lazy

    return training_gradient_energy_for_preset(str(preset))


# ----------------------------------------------------------------------------- images


# ----------------------------------------------------------------------------- baseline


@functools.lru_cache(maxsize=2)
def training_mean(data_dir: str = str(DEFAULT_DATA_DIR)) -> np.ndarray:
    """Per-band mean DN (12,) over every pixel of the training split's S2 tiles.

    The "mean image" baseline paints this constant spectrum everywhere: a model that cannot
    beat it has learned nothing about the scene.

    Raises:
        AppError: the folder has no training pairs with an S2 tile.
    """
    sums, count = np.zeros(len(S2L2A_BANDS)), 0
    for pair in list_pairs(data_dir, "train"):
        if pair.s2_path is None:
            continue
        optical = read_s2(pair.s2_path)
        valid = optical.valid_mask if optical.valid_mask is not None else np.ones(optical.data.shape[1:], bool)
        sums += optical.data[:, valid].sum(axis=1)
        count += int(valid.sum())
    if count == 0:
        raise AppError(f"no training-split S2 tiles under {data_dir}: cannot build the mean-image baseline")
    return (sums / count).astype(np.float32)


# ----------------------------------------------------------------------------- metrics table


def _cell(value: float | None, digits: int, missing: str, *, significant: bool = False) -> float | str:
    """A rounded number, or "n/a (...)" when there is none or it is not finite.

    ``digits`` are decimals, or significant digits with ``significant`` (for ratios such as
    sharpness, which span orders of magnitude: 0.0004 must not show as 0, the flat image's score).
    """
    if value is None:
        return f"n/a ({missing})"
    if isinstance(value, float) and math.isnan(value):
        return "n/a (undefined: no edges or no valid pixels)"
    if isinstance(value, float) and math.isinf(value):
        return "inf (identical)" if value > 0 else "-inf"
    if significant:
        return float(f"{float(value):.{digits}g}")
    return round(float(value), digits)


def _metric_row(name: str, metrics: dict, has_reference: bool, change: float | str) -> list:
    """One row of the table; ``change`` is the cell of ``CHANGE_COLUMN`` (a number or a reason)."""
    no_ref = "no reference"
    lpips_reason = metrics.get("lpips_reason") or "not computed"
    if not has_reference:
        lpips_reason = no_ref
    return [
        name,
        _cell(metrics["psnr"], 2, no_ref),
        _cell(metrics["ssim"], 3, no_ref),
        _cell(metrics["structure_r"], 3, no_ref),
        _cell(metrics["edge_r"], 3, no_ref),
        _cell(metrics["sharpness"], 3, no_ref, significant=True),
        _cell(metrics["sharpness_vs_training"], 3, metrics.get("sharpness_vs_training_reason") or "not computed",
              significant=True),
        _cell(metrics["sam_deg"], 2, no_ref),
        _cell(metrics["sar_edge"], 3, "not computed"),
        change if isinstance(change, str) else _cell(change, 3, "not computed", significant=True),
        _cell(metrics["lpips"], 3, lpips_reason),
    ]


def _reference_row(reference_dn: np.ndarray, reference_edge: float, train_energy: float | None,
                   train_reason: str | None, valid: np.ndarray | None = None) -> list:
    """The real optical tile's own scores: what a realistic image gets (the ceiling).

    PSNR, SSIM, SAM and LPIPS against itself say nothing ("—"); structure r, edge r and
    sharpness against itself are 1 by definition (nan for a flat tile), and its sharpness
    against the training median shows how sharp real tiles of this scene are. ``valid``: the
    pixels scored (the others are masked in the SAR or the reference).
    """
    vs_training = None if train_energy is None else sharpness(reference_dn, train_energy, valid)
    return [REFERENCE_ROW, "—", "—",
            _cell(structure_r(reference_dn, reference_dn, valid), 3, "not computed"),
            _cell(edge_r(reference_dn, reference_dn, valid), 3, "not computed"),
            _cell(sharpness(reference_dn, reference_dn, valid), 3, "not computed", significant=True),
            _cell(vs_training, 3, train_reason or "not computed", significant=True),
            "—", _cell(reference_edge, 3, "not computed"), "—", "—"]


def stage_changes(versions: dict[str, np.ndarray]) -> dict[str, float | str]:
    """Each stage's mean absolute change from the stage before, in reflectance (opt_v1: why none)."""
    changes: dict[str, float | str] = {VERSIONS[0]: "n/a (first stage)"}
    for before, after in itertools.pairwise(VERSIONS):
        changes[after] = mean_absolute_change(versions[after], versions[before])
    return changes


def metrics_table(rows: list[list]) -> pd.DataFrame:
    """Rows as a DataFrame; mixed number/text columns are kept as objects for display."""
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS), dtype=object)


# ----------------------------------------------------------------------------- translate


def _check_options(month, biome, seed, stages) -> tuple[int | None, str, int, tuple[str, ...]]:
    """Validate the form values; month 0/None means "from the file"."""
    try:
        month = int(month or 0)
        seed = int(seed or 0)
    except (TypeError, ValueError) as error:
        raise AppError(f"month and seed must be whole numbers: {one_line(error)}") from None
    if not 0 <= month <= 12:
        raise AppError(f"month must be 1..12, or 0 to read it from the file; got {month}")
    biome = biome or "unknown"
    if biome not in BIOMES:
        raise AppError(f"unknown biome '{biome}'; choose one of {', '.join(BIOMES)}")
    stages = tuple(sorted({str(s).strip() for s in (stages or ())}))  # an API client may repeat one
    if "1" not in stages:
        raise AppError("stage 1 must run: it is the only stage that turns SAR into optical")
    unknown = sorted(set(stages) - set(STAGE_KEYS))
    if unknown:
        raise AppError(f"unknown stage(s) {', '.join(unknown)}; choose from 1, 2, 3")
    return month or None, biome, seed, stages


def _check_timesteps(timesteps) -> int | None:
    """None/empty keeps the preset's steps; otherwise a whole number 1..MAX_TIMESTEPS."""
    if timesteps is None or timesteps == "":
        return None
    try:
        value = float(timesteps)
    except (TypeError, ValueError):
        value = math.nan
    if not (value.is_integer() and 1 <= value <= MAX_TIMESTEPS):
        raise AppError(f"timesteps must be a whole number from 1 to {MAX_TIMESTEPS}; got {timesteps}")
    return int(value)


def cleanup_old_outputs(max_age_s: float = OUTPUT_MAX_AGE_S) -> None:
    """Remove this app's output folders in the temp dir that are older than ``max_age_s``."""
    cutoff = time.time() - max_age_s
    for folder in Path(tempfile.gettempdir()).glob(f"{OUTPUT_PREFIX}*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # another worker may have removed it first


def translate(
    s1_path: str | Path | None,
    reference_path: str | Path | None = None,
    preset: str = "mini",
    month: int | None = 0,
    biome: str | None = "unknown",
    seed: int | None = 0,
    stages: Sequence[str] = STAGE_KEYS,
    *,
    units: str | None = None,
    timesteps: int | None = None,
    uncertainty: int = 0,
    out_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    data_dir: str | Path = DEFAULT_DATA_DIR,
) -> dict:
    """Translate one SAR GeoTIFF and score every stage.

    Args:
        s1_path: Sentinel-1 GRD GeoTIFF (VV, VH in dB, or with linear units in its metadata).
        reference_path: Optional real Sentinel-2 L2A GeoTIFF on the same grid.
        preset: "mini", "hub", a checkpoint folder or ``repo@revision``.
        month: 1..12, or 0/None to use the acquisition month from the file (if any).
        biome: One of ``BIOMES``.
        seed: Random seed (generate-mode stages sample tokens).
        stages: Stages to run, e.g. ("1", "3"); a skipped stage passes its input through.
        units: SAR units, "db" or "linear" (power, converted to dB); None reads them from the
            file's metadata (dB when it says nothing).
        timesteps: Diffusion steps of the TerraMind generate-mode stages (1..50) for this run;
            None keeps the preset's. Regress-mode stages (the ``mini`` preset) ignore it.
        uncertainty: Test-time variants to run the chain on for a per-pixel uncertainty
            (``gac_pipeline.uncertainty``; ``UNCERTAINTY_VARIANTS`` in the app); 0 (default) runs once.
        out_dir: Folder for the GeoTIFFs; default a fresh temporary folder.
        progress: Optional callback ``(fraction, description)``.
        data_dir: Dataset folder whose training split gives the mean-image baseline.

    Returns:
        A dict with ``images`` (name -> uint8 (H, W, 3): "sar", "opt_v1", "opt_v2",
        "opt_v3", "reference" or None, "mean image"; true colour), ``dn`` (name -> (12, H, W)
        float32 DN: "opt_v1", "opt_v2", "opt_v3", "reference" or None), ``table`` (DataFrame: one row per stage,
        the baseline and, with a reference, the reference ceiling), ``files`` (GeoTIFF
        and metrics.json paths), ``label``, ``trained``, ``month``, ``timesteps`` (the steps
        the generate-mode stages used, None without such a stage), ``notes`` and ``timings_s``
        (per stage, plus the total including reading, loading and scoring). With ``uncertainty``
        also ``std`` (name -> (H, W) float32 DN: std over the variants of the mean of B02, B03,
        B04, B08), ``mean`` (name -> (12, H, W) float32: the mean over the variants) and
        ``uncertainty`` (what the variants were); empty dicts and None without it.

    Raises:
        AppError: a bad file, option or preset; the message is one line.
    """
    report = progress or (lambda fraction, description: None)
    if not s1_path:
        raise AppError("upload a Sentinel-1 GeoTIFF (2 bands: VV, VH in dB)")
    month, biome, seed, stages = _check_options(month, biome, seed, stages)
    timesteps = _check_timesteps(timesteps)
    preset = check_preset(preset)
    started = time.perf_counter()

    # Validate every input before any model work, so a bad reference costs nothing.
    report(0.05, "reading inputs")
    try:
        sar = read_s1(s1_path, units=units, max_pixels=MAX_PIXELS)
        reference = read_s2(reference_path, max_pixels=MAX_PIXELS) if reference_path else None
        if reference is not None:
            check_same_grid(sar, reference, s1_path, reference_path)
    except InputError as error:
        raise AppError(one_line(error)) from None
    month = month if month is not None else sar.month

    pipeline, message = load_pipeline(preset, progress=lambda description: report(0.15, description))
    if pipeline is None:
        raise AppError(message)
    # ZeroGPU rule (https://huggingface.co/docs/hub/spaces-zerogpu): CUDA exists only inside the
    # spaces.GPU-decorated call, so presets load on CPU and move here, in the call (this function
    # runs inside ui.run_translate): each call on ZeroGPU, a no-op once there on a GPU machine.
    pipeline.to(run_device())

    report(0.3, "running the pipeline")
    try:
        # progress=True: scenes over one tile show a tqdm bar over windows (the UI tracks tqdm).
        output = pipeline.translate(sar.data, month=month, biome=biome, seed=seed, stages=stages, progress=True,
                          timesteps=timesteps, uncertainty=int(uncertainty or 0))
    except ValueError as error:
        raise AppError(one_line(error)) from None
    versions = output.versions()
    generators = [stage for key, stage in (("1", pipeline.stage1), ("3", pipeline.stage3))
                  if key in stages and stage.config.mode == "generate"]
    steps_used = (timesteps or generators[0].config.timesteps) if generators else None

    report(0.7, "writing GeoTIFFs")
    cleanup_old_outputs()
    out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix=OUTPUT_PREFIX))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    tags = pipeline.output_tags(s1_path, seed=seed, stages=stages)
    for name, dn in versions.items():
        path = out_dir / f"{name}.tif"
        write_optical(path, dn, sar.profile, valid_mask=sar.valid_mask, tags=tags[name])  # input's CRS/transform
        files.append(path)
    if output.std:  # the uncertainty option: the same uncertainty.tif as the CLI's --uncertainty
        files.append(pipeline.write_uncertainty(out_dir / "uncertainty.tif", output, input_path=s1_path,
                                                profile=sar.profile, valid_mask=sar.valid_mask, seed=seed,
                                                stages=stages))

    report(0.8, "scoring")
    target = None if reference is None else reference.data
    # Every score leaves out the pixels the SAR or the reference masks (nodata, mask band, NaN).
    valid = sar.valid_mask if reference is None else sar.valid_mask & reference.valid_mask
    baseline = np.broadcast_to(training_mean(str(data_dir))[:, None, None], (len(S2L2A_BANDS), *sar.data.shape[1:]))
    train_energy, train_reason = training_gradient_energy(str(preset))
    scores = {name: compute_metrics(dn, sar.data, target, valid_mask=valid, training_gradient_energy=train_energy)
              for name, dn in versions.items()}
    scores[BASELINE_ROW] = compute_metrics(np.ascontiguousarray(baseline), sar.data, target,
                                           valid_mask=valid, training_gradient_energy=train_energy)
    if train_reason is not None:  # more specific than compute_metrics' generic reason
        for entry in scores.values():
            entry["sharpness_vs_training_reason"] = train_reason
    changes = stage_changes(versions)
    rows = [_metric_row(name, scores[name], target is not None, changes.get(name, "n/a (not a stage)"))
            for name in (*VERSIONS, BASELINE_ROW)]
    if reference is not None:
        reference_edge = sar_edge_agreement(reference.data, sar.data, valid)
        rows.append(_reference_row(reference.data, reference_edge, train_energy, train_reason, valid))
    else:
        reference_edge = None

    notes = (list(sar.notes) + (list(reference.notes) if reference is not None else []) + list(output.notes)
             + [note for note in [mask_note(valid)] if note])
    if month is None:
        notes.append("month unknown (not in the file's metadata or name): month conditioning off")
    timings = {f"{key} {STAGE_NAMES[key]}": seconds for key, seconds in output.timings_s.items()}
    timings["total (with reading, loading, scoring)"] = time.perf_counter() - started

    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(to_json_safe({
        "pipeline": pipeline.label, "trained": pipeline.config.trained, "input": Path(s1_path).name,
        "reference": Path(reference_path).name if reference_path else None, "month": month,
        "biome": biome, "seed": seed, "stages_run": list(stages), "timesteps": steps_used, "notes": notes,
        "timings_s": timings, "training_gradient_energy": train_energy, "uncertainty": output.uncertainty,
        "scores": scores, "reference_sar_edge": reference_edge,
    }), indent=2) + "\n")
    files.append(metrics_path)

    report(0.95, "building images")
    images = {"sar": sar_false_colour(sar.data)}
    images.update({name: rgb_composite(dn) for name, dn in versions.items()})
    images["reference"] = rgb_composite(reference.data) if reference is not None else None
    images[BASELINE_ROW] = rgb_composite(baseline)
    return {
        "images": images,
        "dn": {**versions, "reference": None if reference is None else reference.data},
        "table": metrics_table(rows),
        "files": [str(path) for path in files],
        "label": pipeline.label,
        "name": pipeline.config.name,
        "description": pipeline.config.description,
        "trained": bool(pipeline.config.trained),
        "month": month,
        "biome": biome,
        "stages": stages,
        "timesteps": steps_used,
        "notes": notes,
        "timings_s": timings,
        "std": dict(output.std),
        "mean": dict(output.mean),
        "uncertainty": output.uncertainty,
    }


def conditioning_warning(notes: Sequence[str]) -> str:
    """A "Warning:" line when the month or biome was not seen in training (stage 2 used "unknown"), else ""."""
    unseen = [note for note in notes if "not seen in training" in note]
    if not unseen:
        return ""
    return ("**Warning:** the preset was not trained on this month or biome, so stage 2 was conditioned on "
            "\"unknown\" instead: " + "; ".join(unseen) + ".")


def provenance_markdown(description: str) -> str:
    """A preset description ("overall | stage 1: ... | stage 2: ...") as a line and one bullet per part."""
    first, *parts = (description or "no description").split(" | ")
    return "\n".join([first + ("" if not parts else ":"), *(f"- {part}" for part in parts)])


def summary_markdown(result: dict) -> str:
    """Pipeline label (a loud warning when untrained), timings and notes as Markdown."""
    lines = []
    # A short heading; the (long) provenance of the weights as plain text below it.
    if not result["trained"]:
        lines.append(f"### ⚠️ {result['name']} [UNTRAINED (random weights)]\n\n{provenance_markdown(result['description'])}\n\n"
                     "These weights are **not trained**: the images show "
                     "what the stages do, not what GAC will produce. Compare with the mean-image baseline.")
    else:
        lines.append(f"### {result['name']} [trained]\n\n{provenance_markdown(result['description'])}")
    month = result["month"] if result["month"] is not None else "unknown"
    steps = f" · diffusion timesteps: {result['timesteps']}" if result["timesteps"] else ""
    lines.append(f"month: {month} · biome: {result['biome']} · stages run: {', '.join(result['stages'])}{steps}")
    timings = " · ".join(f"{name}: {seconds:.2f} s" for name, seconds in result["timings_s"].items())
    lines.append(f"**Timings** — {timings}")
    if result.get("uncertainty"):
        lines.append(f"**Uncertainty** over {result['uncertainty']}: std of the mean of B02, B03, B04, B08 (DN) "
                     "per pixel; the panels show the plain run unless \"show the mean over variants\" is ticked.")
    if result.get("cached"):
        lines.append("Shown from the app's cache: this file ran before with these options (timings of that run).")
    if result["notes"]:
        lines.append("**Notes**\n" + "\n".join(f"- {note}" for note in result["notes"]))
    lines.append("PSNR, SSIM, SAM on bands B02, B03, B04, B08; SAR-edge: agreement of optical and SAR edges, "
                 "best close to the reference row (the real optical's own score): far above it means SAR structure "
                 "copied into the optical. Change vs previous stage: mean |this stage - the stage before| over "
                 "all 12 bands and pixels, in reflectance.")
    return "\n\n".join(lines)


def example_pairs(count: int | None = 3, data_dir: str | Path = DEFAULT_DATA_DIR) -> list[PairInfo]:
    """Bundled test-split pairs with a reference (``count`` of them, None: all), of different biomes first."""
    pairs = [p for p in evaluation_pairs(data_dir) if p.s2_path is not None]
    pairs.sort(key=lambda p: (p.source != "BENv2", p.name))  # georeferenced (BENv2) tiles first
    chosen, biomes = [], set()
    for pair in pairs:
        if pair.biome not in biomes:
            chosen.append(pair)
            biomes.add(pair.biome)
    chosen += [p for p in pairs if p not in chosen]
    return chosen if count is None else chosen[:count]
