"""The bundled test tiles as examples, and a cache of results so that a clicked example answers at once.

Every test-split pair with a reference is an example, shown in a gallery by a thumbnail (the
left half of the SAR false colour beside the right half of the reference in true colour, like
the slider) and a caption. Gradio's own example cache cannot hold what the Translate tab keeps
per run (the 12-band arrays in a ``gr.State``; its cache stores outputs as CSV/JSON), so the
app caches results itself: :func:`translate` answers a repeated request (same file contents,
preset and options) from memory, whoever asked first. :func:`warm` fills the cache for every
example in a background thread when the first page is opened, so examples are cached shortly
after start-up without making the start-up itself slower.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app import handlers
from gac_pipeline.data import DEFAULT_DATA_DIR, PairInfo
from gac_pipeline.display import rgb_composite, sar_false_colour
from gac_pipeline.io import read_s1, read_s2

logger = logging.getLogger(__name__)

DIVIDER_PX = 2  # white line between the SAR and the reference halves of a thumbnail

# Results kept: small scenes only, the most recently used within a memory budget. A bundled
# 120-px tile's result is ~3 MB (its 12-band arrays), so every example fits.
CACHE_MAX_BYTES = 96 * 2**20
CACHE_MAX_PIXELS = 128 * 128
CACHE_MAX_FILE_BYTES = 16 * 2**20  # larger inputs are not hashed, so never cached
WARM_UP_PAUSE_S = 0.05

_results: OrderedDict[tuple, dict] = OrderedDict()
# One translation at a time in this process: the warm-up thread and the app's requests.
_lock = threading.RLock()
_warm_started = threading.Event()


@dataclass(frozen=True)
class Example:
    """One bundled pair as an example: its files, a caption and a thumbnail."""

    pair: PairInfo
    caption: str
    thumbnail: np.ndarray


def caption(pair: PairInfo) -> str:
    """"alpine, Jun 2017" (biome, acquisition month and year when the name has a date)."""
    month = calendar.month_abbr[pair.month] if pair.month else "month ?"
    year = next((part[:4] for part in pair.name.split("_") if len(part) >= 8 and part[:8].isdigit()), "")
    return f"{pair.biome}, {month} {year}".rstrip()


def thumbnail(pair: PairInfo) -> np.ndarray:
    """uint8 (H, W, 3): the left half of the SAR false colour, a white divider, the right half of the reference."""
    sar = sar_false_colour(read_s1(pair.s1_path).data)
    image = rgb_composite(read_s2(pair.s2_path).data)
    middle = image.shape[1] // 2
    image[:, :middle] = sar[:, :middle]
    image[:, middle - DIVIDER_PX // 2: middle + DIVIDER_PX - DIVIDER_PX // 2] = 255
    return image


def examples(data_dir: str | Path = DEFAULT_DATA_DIR) -> list[Example]:
    """Every bundled test-split pair with a reference, different biomes first (see ``handlers.example_pairs``)."""
    return [Example(pair, caption(pair), thumbnail(pair)) for pair in handlers.example_pairs(None, data_dir)]


# ----------------------------------------------------------------------------- result cache


def _digest(path: str | Path) -> str | None:
    """SHA-256 of a file's bytes, None when it is too large to cache or unreadable."""
    try:
        if Path(path).stat().st_size > CACHE_MAX_FILE_BYTES:
            return None
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def cache_key(s1_path, reference_path, preset, month, biome, seed, stages, units, timesteps,
              uncertainty=0) -> tuple | None:
    """What a result depends on: the files' contents, the preset and the options as the pipeline sees them.

    Options are normalised the way ``handlers.translate`` reads them (so a stage list in another
    order, or the preset's own timesteps given explicitly, hit the same entry); timesteps count
    only for presets with a generate-mode stage. ``uncertainty`` (test-time variants, 0 = off)
    counts: a run with it carries the uncertainty maps and the variant means.

    Returns:
        The key, or None when the request is not cached (no file, or a file too large).

    Raises:
        handlers.AppError: an option is invalid (the same message ``handlers.translate`` gives).
    """
    if not s1_path:
        return None
    month, biome, seed, stages = handlers._check_options(month, biome, seed, stages)
    steps, uses_generate = handlers.preset_timesteps(str(preset))
    chosen = handlers._check_timesteps(timesteps)  # checked even where unused, as handlers.translate does
    steps = None if uses_generate is False else (chosen or steps)
    digests = (_digest(s1_path), _digest(reference_path) if reference_path else "")
    if None in digests:
        return None
    # The names count too: the month may come from a file's name, and the outputs' tags name the input.
    names = (Path(s1_path).name, Path(reference_path).name if reference_path else "")
    return digests, names, str(preset), month, biome, seed, stages, units or None, steps, int(uncertainty or 0)


def _still_there(result: dict) -> bool:
    """Whether a cached result's files still exist; if so, mark their folder as used (kept another hour)."""
    paths = [Path(path) for path in result["files"]]
    if not all(path.is_file() for path in paths):
        return False
    for folder in {path.parent for path in paths}:
        try:
            os.utime(folder)  # handlers.cleanup_old_outputs removes folders by age
        except OSError:
            return False
    return True


def translate(s1_path, reference_path=None, preset="mini", month=0, biome="unknown", seed=0,
              stages: Sequence[str] = handlers.STAGE_KEYS, *, units=None, timesteps=None, uncertainty=0,
              progress=None) -> dict:
    """``handlers.translate``, answered from the cache when the same request ran before.

    A cached answer is the earlier result with ``"cached": True`` (the same arrays: do not
    modify them); it is re-run when its GeoTIFFs were cleaned up meanwhile.
    """
    key = cache_key(s1_path, reference_path, preset, month, biome, seed, stages, units, timesteps, uncertainty)
    with _lock:
        hit = _results.get(key) if key is not None else None
        if hit is not None and _still_there(hit):
            _results.move_to_end(key)
            return {**hit, "cached": True}
        result = handlers.translate(s1_path, reference_path, preset, month, biome, seed, stages, units=units,
                                    timesteps=timesteps, uncertainty=uncertainty, progress=progress)
        height, width = result["dn"]["opt_v1"].shape[1:]
        if key is not None and height * width <= CACHE_MAX_PIXELS:
            _results[key] = result
            _results.move_to_end(key)
            while sum(map(result_bytes, _results.values())) > CACHE_MAX_BYTES:
                _results.popitem(last=False)
    return result


def result_bytes(result: dict) -> int:
    """Memory a cached result holds: its arrays (the rest is small)."""
    arrays = [*result["dn"].values(), *result["images"].values(), *result.get("std", {}).values(),
              *result.get("mean", {}).values()]
    return sum(array.nbytes for array in arrays if array is not None)


def clear_cache() -> None:
    with _lock:
        _results.clear()


def warm(preset: str, pairs: Sequence[PairInfo]) -> int:
    """Run every example with the form's default options into the cache; returns how many are cached.

    Stops at the first failure (e.g. a preset that cannot load), logged, never raised.
    """
    done = 0
    for pair in pairs:
        try:
            translate(pair.s1_path, pair.s2_path, preset, 0, pair.biome, 0, handlers.STAGE_KEYS)
        except Exception as error:  # noqa: BLE001  (a background warm-up must not crash the app)
            logger.warning("example cache warm-up stopped at %s: %s", pair.name, handlers.one_line(error))
            break
        done += 1
        time.sleep(WARM_UP_PAUSE_S)  # let a waiting request take the lock: a lock is not fair
    logger.info("example cache: %d of %d examples cached for preset %s", done, len(pairs), preset)
    return done


def start_warm_up(preset: str, pairs: Sequence[PairInfo]) -> bool:
    """Start :func:`warm` in a daemon thread, once per process; False when it was already started."""
    if _warm_started.is_set():
        return False
    _warm_started.set()
    threading.Thread(target=warm, args=(preset, list(pairs)), name="gac-example-warm-up", daemon=True).start()
    return True
