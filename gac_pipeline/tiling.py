"""Padding to patch multiples and streaming, blended tiled inference.

The ViT stages use 16-px patches, so inputs are padded symmetrically to a multiple of 16 and
exactly the same pixels are cropped back afterwards (padding one side but cropping the centre
shifts the output against the ground truth). Large scenes are processed as overlapping windows
whose outputs are blended with a smooth taper, streaming one strip of rows at a time so memory
does not grow with the image height.
"""

from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# Keeps every blend weight positive, so normalising by the summed weights can never divide
# by zero, whatever tile and overlap a caller picks.
WEIGHT_FLOOR = 1e-3


@dataclass(frozen=True)
class Pads:
    """Pixels added on each side of the last two axes by `pad_to_multiple`."""

    top: int
    bottom: int
    left: int
    right: int


def _pad_index(size: int, before: int, after: int) -> np.ndarray:
    """Source indices along one axis for reflect padding, or replicate when reflect cannot work.

    Args:
        size: Length of the axis.
        before: Pixels to add before index 0.
        after: Pixels to add after index size - 1.

    Returns:
        Integer indices of length before + size + after into the original axis.
    """
    index = np.arange(-before, size + after)
    if max(before, after) < size:
        # Reflect about the edge pixels without repeating them (torch/numpy "reflect").
        index = np.abs(index)
        return np.where(index >= size, 2 * (size - 1) - index, index)
    # Reflect would need pixels the axis does not have.
    return np.clip(index, 0, size - 1)


def pad_to_multiple(x: ArrayT, multiple: int = 16) -> tuple[ArrayT, Pads]:
    """Pads the last two axes symmetrically up to a multiple of `multiple`.

    The extra rows are split top = total // 2, bottom = the rest (same for columns), using
    reflect padding per axis, or replicate padding on an axis too short to reflect
    (reflect needs every pad to be smaller than the axis).

    Args:
        x: Array or tensor shaped (..., H, W), any dtype; torch tensors keep device and autograd.
        multiple: The padded H and W are multiples of this.

    Returns:
        A new padded array of the same type, and the `Pads` that `crop_pads` removes again.

    Raises:
        ValueError: If x has fewer than two axes or multiple is not positive.
    """
    if x.ndim < 2:
        raise ValueError(f"pad_to_multiple needs an array shaped (..., H, W), got shape {tuple(x.shape)}")
    if multiple < 1:
        raise ValueError(f"multiple must be positive, got {multiple}")
    height, width = x.shape[-2], x.shape[-1]
    extra_h = -height % multiple
    extra_w = -width % multiple
    pads = Pads(top=extra_h // 2, bottom=extra_h - extra_h // 2, left=extra_w // 2, right=extra_w - extra_w // 2)

    # Gathering by index gives one code path for numpy and torch, every dtype, and a padding
    # mode chosen per axis (a thin strip may need replicate on one axis only).
    rows = _pad_index(height, pads.top, pads.bottom)
    cols = _pad_index(width, pads.left, pads.right)
    if isinstance(x, torch.Tensor):
        rows = torch.as_tensor(rows, device=x.device)
        cols = torch.as_tensor(cols, device=x.device)
    return x[..., rows, :][..., cols], pads


def crop_pads(x: ArrayT, pads: Pads) -> ArrayT:
    """Removes exactly the pixels `pad_to_multiple` added.

    Args:
        x: Array or tensor shaped (..., H, W), e.g. a model output on the padded input.
        pads: The pads returned by `pad_to_multiple`.

    Returns:
        A view of x without the padded rows and columns.
    """
    height, width = x.shape[-2], x.shape[-1]
    # Explicit stops: a slice like [top:-0] would be empty.
    return x[..., pads.top : height - pads.bottom, pads.left : width - pads.right]


def window_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of overlapping windows covering [0, size) along one axis.

    Windows step by tile - overlap; the last one is aligned to the end so every window is
    full-size. When size <= tile there is a single window at 0, and the caller deals with
    the shorter extent.

    Args:
        size: Length of the axis.
        tile: Window length.
        overlap: Minimum overlap between neighbouring windows, 0 <= overlap < tile.

    Returns:
        Increasing start offsets.

    Raises:
        ValueError: If size or tile is not positive, or overlap is outside [0, tile).
    """
    if size < 1 or tile < 1:
        raise ValueError(f"size and tile must be positive, got size={size}, tile={tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    # The end-aligned window overlaps its neighbour by at least `overlap`.
    starts.append(size - tile)
    return starts


_SIDES = ("top", "bottom", "left", "right")


def _taper(length: int, overlap: int, rise: bool, fall: bool) -> np.ndarray:
    """Raised-cosine ramp from ~0 to 1 over `overlap` pixels at the start and/or the end."""
    taper = np.ones(length)
    if overlap <= 0:
        return taper
    centres = np.arange(length) + 0.5
    if rise:
        taper *= np.sin(0.5 * np.pi * np.clip(centres / overlap, 0.0, 1.0)) ** 2
    if fall:
        taper *= np.sin(0.5 * np.pi * np.clip((length - centres) / overlap, 0.0, 1.0)) ** 2
    return taper


def blend_weights(tile_h: int, tile_w: int, overlap: int, *, flat: Collection[str] = ()) -> np.ndarray:
    """Per-pixel blend weights for one window: a smooth taper towards its edges.

    Args:
        tile_h: Window height.
        tile_w: Window width.
        overlap: Length of the taper on each side.
        flat: Sides ("top", "bottom", "left", "right") that keep full weight. `tiled_apply`
            uses this for sides on the image border: no other window blends in there, and a
            taper would leave only the floor, averaging neighbouring windows with equal weight.

    Returns:
        float32 array (tile_h, tile_w) in [WEIGHT_FLOOR, 1].

    Raises:
        ValueError: On an unknown side name.
    """
    unknown = set(flat) - set(_SIDES)
    if unknown:
        raise ValueError(f"unknown sides {sorted(unknown)}, expected some of {_SIDES}")
    rows = _taper(tile_h, overlap, rise="top" not in flat, fall="bottom" not in flat)
    cols = _taper(tile_w, overlap, rise="left" not in flat, fall="right" not in flat)
    return np.maximum(np.outer(rows, cols), WEIGHT_FLOOR).astype(np.float32)


def _unstack(outputs: dict[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
    """fn's outputs for a stack of `count` windows, {name: (count, ...)}, as one dict per window."""
    for name, out in outputs.items():
        if len(out) != count:
            raise ValueError(f"fn output {name!r} holds {len(out)} windows for a stack of {count}")
    return [{name: out[k] for name, out in outputs.items()} for k in range(count)]


def tiled_apply(
    read: Callable[[int, int, int, int], np.ndarray],
    height: int,
    width: int,
    fn: Callable[[np.ndarray], dict[str, np.ndarray]],
    write: Callable[[str, int, np.ndarray], None],
    *,
    tile: int = 128,
    overlap: int = 32,
    out_channels: int = 12,
    progress: bool = True,
    desc: str = "windows",
    batch: int = 1,
    workers: int = 1,
) -> None:
    """Applies `fn` over overlapping windows and streams the blended result out row by row.

    Every output pixel is sum(w_i * out_i) / sum(w_i) over the windows covering it, with
    `blend_weights` as w (flat on sides that lie on the image border). Window rows are
    processed top to bottom; the weighted sums live in a strip one window tall, and rows that
    no later window touches are normalised and passed to `write` straight away, so memory is
    O(tile * width * out_channels * outputs) whatever the image height.

    Args:
        read: read(row, col, h, w) returns the input window (C, h, w) float32; the window
            always lies inside the image.
        height: Image height.
        width: Image width.
        fn: Maps a stack of up to `batch` windows of one window row (n, C, h, w) to
            {name: (n, out_channels, h, w)}, the same names for every stack. Windows are
            tile x tile, or the whole extent along an axis shorter than tile, so fn must accept
            any size (pipelines pad internally).
        write: write(name, row0, block) receives finished rows (out_channels, n_rows, width)
            float32; per name, rows arrive in increasing order and each row exactly once.
        tile: Window size in pixels.
        overlap: Overlap between neighbouring windows, also the taper length.
        out_channels: Channels of every output of fn.
        progress: Show a tqdm progress bar over windows.
        desc: Label of the progress bar.
        batch: Windows per call of fn (stacked); a model then runs each operation on more
            data at once, which pays on CPU for small windows.
        workers: Calls of fn run at once, each in its own thread with one torch thread (a
            per-thread setting) and the caller's grad and inference mode: on CPU, windows
            side by side keep the cores busier than one window's operations split over them.
            For a thread-safe fn only. `read`, blending and `write` stay in the calling thread
            and run while the workers compute.

        The result does not depend on batch or workers, as long as fn's result for a window
        does not depend on the other windows of its stack.

    Raises:
        ValueError: On an empty image, a bad tile/overlap/batch/workers, or an fn output with
            the wrong shape or names.
    """
    if batch < 1 or workers < 1:
        raise ValueError(f"batch and workers must be at least 1, got batch={batch}, workers={workers}")
    row_starts = window_starts(height, tile, overlap)
    col_starts = window_starts(width, tile, overlap)
    win_h, win_w = min(tile, height), min(tile, width)

    # Strip row 0 is always the current window row's first image row: after window row i,
    # rows above window row i + 1 are final and get flushed, so one window height suffices.
    weight_sum = np.zeros((win_h, width), np.float32)
    sums: dict[str, np.ndarray] = {}

    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(windows: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        # Grad and inference mode are per thread: a worker takes the caller's.
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return _unstack(fn(np.stack(windows)), len(windows))

    def blend(row: int, col: int, outputs: dict[str, np.ndarray]) -> None:
        nonlocal sums
        border = {"top": row == 0, "bottom": row + win_h == height, "left": col == 0, "right": col + win_w == width}
        weights = blend_weights(win_h, win_w, overlap, flat=[side for side, on in border.items() if on])
        if not sums:
            if not outputs:
                raise ValueError("fn returned no outputs")
            sums = {name: np.zeros((out_channels, win_h, width), np.float32) for name in outputs}
        if set(outputs) != set(sums):
            raise ValueError(f"fn returned outputs {sorted(outputs)}, expected {sorted(sums)}")
        for name, out in outputs.items():
            out = np.asarray(out, dtype=np.float32)
            if out.shape != (out_channels, win_h, win_w):
                raise ValueError(f"fn output {name!r} has shape {out.shape}, expected {(out_channels, win_h, win_w)}")
            sums[name][:, :, col : col + win_w] += weights * out
        weight_sum[:, col : col + win_w] += weights

    def flush(i: int) -> None:
        """Write the rows of window row i that no later window touches; shift the strip up."""
        row = row_starts[i]
        done = (row_starts[i + 1] if i + 1 < len(row_starts) else height) - row
        for name, strip in sums.items():
            write(name, row, strip[:, :done] / weight_sum[:done])
            strip[:, : win_h - done] = strip[:, done:]
            strip[:, win_h - done :] = 0.0
        weight_sum[: win_h - done] = weight_sum[done:]
        weight_sum[win_h - done :] = 0.0

    # Stacks of up to `batch` windows, each within one window row, in reading order.
    stacks = [(i, row, col_starts[k : k + batch]) for i, row in enumerate(row_starts)
              for k in range(0, len(col_starts), batch)]
    # With workers, the calling thread reads, blends and writes while they compute: `workers`
    # stacks are started beyond the one being blended, across window rows too, so no worker
    # waits for the blending or the writing of a finished row. With one worker each stack runs
    # in the calling thread on all its torch threads.
    ahead = workers if workers > 1 else 0

    with (tqdm(total=len(row_starts) * len(col_starts), desc=desc, disable=not progress) as bar,
          ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool):

        def start(stack: tuple[int, int, list[int]]) -> Future:
            _, row, cols = stack
            windows = [read(row, col, win_h, win_w) for col in cols]
            if workers > 1:
                return pool.submit(run, windows)
            finished: Future = Future()
            finished.set_result(run(windows))
            return finished

        started: deque[Future] = deque()
        for index, (i, row, cols) in enumerate(stacks):
            while len(started) <= ahead and index + len(started) < len(stacks):
                started.append(start(stacks[index + len(started)]))
            for col, outputs in zip(cols, started.popleft().result(), strict=True):
                blend(row, col, outputs)
                bar.update()
            if cols[-1] == col_starts[-1]:  # the window row is complete
                flush(i)


def tiled_apply_array(
    x: np.ndarray,
    fn: Callable[[np.ndarray], dict[str, np.ndarray]],
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """Runs `tiled_apply` on an in-memory image.

    Args:
        x: Input image (C, H, W); converted to float32.
        fn: As in `tiled_apply`.
        **kwargs: Keyword arguments of `tiled_apply` (tile, overlap, out_channels, progress, desc,
            batch, workers).

    Returns:
        {name: (out_channels, H, W) float32} for every output of fn.

    Raises:
        ValueError: If x is not 3-dimensional, or as `tiled_apply`.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"tiled_apply_array needs an array shaped (C, H, W), got shape {x.shape}")
    _, height, width = x.shape
    results: dict[str, np.ndarray] = {}

    def read(row: int, col: int, h: int, w: int) -> np.ndarray:
        return x[:, row : row + h, col : col + w]

    def write(name: str, row0: int, block: np.ndarray) -> None:
        if name not in results:
            results[name] = np.empty((block.shape[0], height, width), np.float32)
        results[name][:, row0 : row0 + block.shape[1]] = block

    tiled_apply(read, height, width, fn, write, **kwargs)
    return results
