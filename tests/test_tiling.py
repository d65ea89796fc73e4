"""Tests for padding to patch multiples and streaming tiled inference."""

import threading
import time
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gac_pipeline.tiling import (
    WEIGHT_FLOOR,
    Pads,
    blend_weights,
    crop_pads,
    pad_to_multiple,
    tiled_apply,
    tiled_apply_array,
    window_starts,
)

SIZES = [(120, 120), (128, 128), (8, 8), (4, 4), (1, 1), (600, 400), (121, 127), (5, 130)]


def _image(height: int, width: int, channels: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(channels, height, width)).astype(np.float32))


# --- padding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_pad_crop_round_trip_is_exact(height: int, width: int) -> None:
    x = _image(height, width)
    padded, pads = pad_to_multiple(x)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    assert padded.shape[-2:] == (height + pads.top + pads.bottom, width + pads.left + pads.right)
    assert torch.equal(crop_pads(padded, pads), x)
    # The original sits at (top, left) inside the padded image: nothing is shifted.
    assert torch.equal(padded[:, pads.top : pads.top + height, pads.left : pads.left + width], x)


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_padding_is_symmetric(height: int, width: int) -> None:
    _, pads = pad_to_multiple(torch.zeros(height, width))
    assert 0 <= pads.bottom - pads.top <= 1
    assert 0 <= pads.right - pads.left <= 1


def test_bundled_tile_size_pads_four_each_side() -> None:
    _, pads = pad_to_multiple(torch.zeros(2, 120, 120))
    assert pads == Pads(top=4, bottom=4, left=4, right=4)


def test_multiple_of_16_gets_zero_pads() -> None:
    x = _image(128, 64)
    padded, pads = pad_to_multiple(x)
    assert pads == Pads(0, 0, 0, 0)
    assert torch.equal(padded, x)


def test_reflect_padding_values() -> None:
    x = torch.arange(120.0).reshape(1, 120).expand(3, 120, 120)
    padded, pads = pad_to_multiple(x)
    # Reflect mirrors about the edge pixel without repeating it.
    assert padded[0, 0, : pads.left + 2].tolist() == [4.0, 3.0, 2.0, 1.0, 0.0, 1.0]
    assert padded[0, 0, -(pads.right + 2) :].tolist() == [118.0, 119.0, 118.0, 117.0, 116.0, 115.0]


def test_replicate_fallback_on_short_axis_only() -> None:
    # Height 4 needs 6 rows above and below (more than it has): replicate; width 120 reflects.
    x = torch.arange(4.0 * 120).reshape(4, 120)
    padded, pads = pad_to_multiple(x)
    assert padded.shape == (16, 128)
    assert pads.top == pads.bottom == 6
    for r in range(pads.top):
        assert torch.equal(padded[r, pads.left : -pads.right], x[0])
        assert torch.equal(padded[-1 - r, pads.left : -pads.right], x[-1])
    assert torch.equal(padded[pads.top : -pads.bottom, : pads.left], x[:, 1 : pads.left + 1].flip(-1))


def test_numpy_and_torch_agree_and_keep_type() -> None:
    x = _image(121, 100)
    padded_t, pads_t = pad_to_multiple(x)
    padded_n, pads_n = pad_to_multiple(x.numpy())
    assert isinstance(padded_n, np.ndarray) and pads_n == pads_t
    np.testing.assert_array_equal(padded_n, padded_t.numpy())
    np.testing.assert_array_equal(crop_pads(padded_n, pads_n), x.numpy())


def test_padding_keeps_gradients_and_leading_dims() -> None:
    x = _image(120, 120).reshape(1, 2, 120, 120).requires_grad_()
    padded, pads = pad_to_multiple(x)
    assert padded.shape == (1, 2, 128, 128)
    crop_pads(padded, pads).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_per_pixel_function_through_pad_and_crop_is_unshifted(height: int, width: int) -> None:
    weights = torch.tensor([[0.5, -1.5], [2.0, 0.25], [1.0, 1.0]])
    x = _image(height, width)

    def per_pixel(image: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.einsum("oc,chw->ohw", weights, image))

    padded, pads = pad_to_multiple(x)
    torch.testing.assert_close(crop_pads(per_pixel(padded), pads), per_pixel(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("height", "width"), [(120, 120), (600, 400), (121, 127)])
def test_spatial_function_through_pad_and_crop_matches_on_interior(height: int, width: int) -> None:
    kernel = torch.from_numpy(np.random.default_rng(1).normal(size=(4, 2, 3, 3)).astype(np.float32))
    x = _image(height, width).unsqueeze(0)

    padded, pads = pad_to_multiple(x)
    result = crop_pads(F.conv2d(padded, kernel, padding=1), pads)
    # Valid convolution of the original: exactly the pixels whose 3x3 support lies inside it.
    expected = F.conv2d(x, kernel)
    assert result.shape[-2:] == (height, width)
    torch.testing.assert_close(result[..., 1:-1, 1:-1], expected, rtol=0, atol=1e-5)
    # A one-pixel shift (the right/bottom-pad, centre-crop bug) would not match.
    assert not torch.allclose(result[..., 2:, 2:], expected, atol=1e-2)


# --- windows ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [128, 129, 200, 224, 225, 400, 600, 4096])
def test_window_starts_cover_and_end_aligned(size: int) -> None:
    tile, overlap = 128, 32
    starts = window_starts(size, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] == size - tile
    assert starts == sorted(set(starts))
    steps = np.diff(starts)
    assert np.all(steps <= tile - overlap)  # neighbours overlap by at least `overlap`
    covered = np.zeros(size, bool)
    for start in starts:
        covered[start : start + tile] = True
    assert covered.all()


def test_window_starts_regular_stride() -> None:
    assert window_starts(600, 128, 32) == [0, 96, 192, 288, 384, 472]


@pytest.mark.parametrize("size", [1, 8, 120, 127])
def test_window_starts_smaller_than_tile(size: int) -> None:
    assert window_starts(size, 128, 32) == [0]


@pytest.mark.parametrize(("size", "tile", "overlap"), [(0, 128, 32), (100, 0, 0), (100, 128, 128), (100, 128, -1)])
def test_window_starts_rejects_bad_arguments(size: int, tile: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        window_starts(size, tile, overlap)


def test_blend_weights_taper_and_stay_positive() -> None:
    weights = blend_weights(128, 96, 32)
    assert weights.shape == (128, 96) and weights.dtype == np.float32
    assert weights.min() >= WEIGHT_FLOOR
    assert weights[64, 48] == 1.0
    assert weights[0, 48] < 0.01 and weights[64, 0] < 0.01
    np.testing.assert_allclose(weights, weights[::-1, ::-1], atol=1e-7)
    # Monotone rise over the overlap towards the centre.
    assert np.all(np.diff(weights[:33, 48]) >= 0)


def test_blend_weights_flat_sides() -> None:
    weights = blend_weights(64, 64, 16, flat=["top", "left"])
    assert weights[0, 0] == 1.0 and weights[0, 32] == 1.0
    assert weights[-1, 32] < 0.01 and weights[32, -1] < 0.01
    with pytest.raises(ValueError, match="unknown sides"):
        blend_weights(64, 64, 16, flat=["middle"])


# --- tiled application -----------------------------------------------------------------------

MIX = np.random.default_rng(2).normal(size=(12, 2)).astype(np.float32)


def _linear(window: np.ndarray) -> np.ndarray:
    return np.einsum("oc,...chw->...ohw", MIX, window)  # one window (C, h, w) or a stack (n, C, h, w)


def _two_outputs(window: np.ndarray) -> dict[str, np.ndarray]:
    return {"opt_v1": _linear(window), "opt_v2": np.tanh(_linear(window)) + 1.0}


def test_tiling_equals_untiled_for_per_pixel_fn() -> None:
    x = _image(600, 400).numpy()
    result = tiled_apply_array(x, _two_outputs, tile=128, overlap=32, progress=False)
    expected = _two_outputs(x)
    assert set(result) == {"opt_v1", "opt_v2"}
    for name in expected:
        assert result[name].shape == (12, 600, 400) and result[name].dtype == np.float32
        np.testing.assert_allclose(result[name], expected[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("height", "width"), [(120, 120), (100, 300), (300, 100), (129, 129)])
def test_tiling_small_or_odd_images(height: int, width: int) -> None:
    x = _image(height, width).numpy()
    shapes = []

    def fn(window: np.ndarray) -> dict[str, np.ndarray]:
        shapes.append(window.shape)
        return {"opt": _linear(window)}

    result = tiled_apply_array(x, fn, progress=False)
    np.testing.assert_allclose(result["opt"], _linear(x), rtol=1e-5, atol=1e-5)
    # Along an axis shorter than the tile, fn gets the whole extent.
    assert set(shapes) == {(1, 2, min(128, height), min(128, width))}


def test_write_once_per_row_in_order() -> None:
    height, width = 600, 400
    x = _image(height, width).numpy()
    calls: dict[str, list[tuple[int, int]]] = {"opt_v1": [], "opt_v2": []}

    def write(name: str, row0: int, block: np.ndarray) -> None:
        assert block.shape[0] == 12 and block.shape[2] == width and block.dtype == np.float32
        calls[name].append((row0, block.shape[1]))

    def read(row: int, col: int, h: int, w: int) -> np.ndarray:
        assert 0 <= row and row + h <= height and 0 <= col and col + w <= width
        return x[:, row : row + h, col : col + w]

    tiled_apply(read, height, width, _two_outputs, write, progress=False)
    for name, blocks in calls.items():
        rows = [row for row0, n in blocks for row in range(row0, row0 + n)]
        assert rows == list(range(height)), name


@pytest.mark.parametrize(("batch", "workers"), [(4, 1), (1, 3), (3, 2)])
def test_batches_and_workers_give_the_same_result(batch: int, workers: int) -> None:
    x = _image(600, 400).numpy()
    plain = tiled_apply_array(x, _two_outputs, tile=128, overlap=16, progress=False)
    result = tiled_apply_array(x, _two_outputs, tile=128, overlap=16, progress=False, batch=batch, workers=workers)
    for name in plain:
        np.testing.assert_array_equal(result[name], plain[name])


def test_windows_in_stacks_of_batch_and_workers_get_the_callers_grad_mode_and_one_thread() -> None:
    x = _image(300, 500).numpy()
    stacks: list[int] = []
    threads = torch.get_num_threads()

    def fn(windows: np.ndarray) -> dict[str, np.ndarray]:
        assert windows.ndim == 4 and not torch.is_grad_enabled() and torch.is_inference_mode_enabled()
        assert torch.get_num_threads() == 1
        stacks.append(len(windows))
        return _two_outputs(windows)

    with torch.inference_mode():
        tiled_apply_array(x, fn, tile=128, overlap=16, progress=False, batch=3, workers=2)
    # 5 windows per row: a stack of 3 and one of the 2 left, for each of 3 window rows.
    assert sorted(stacks) == [2, 2, 2, 3, 3, 3]
    assert torch.get_num_threads() == threads  # the caller's own setting is untouched


def test_with_workers_the_caller_reads_ahead_while_they_compute_and_keeps_a_bounded_queue() -> None:
    height, width, tile, overlap, workers = 500, 500, 128, 16, 2  # 5 x 5 windows
    x = _image(height, width).numpy()
    row_starts, col_starts = window_starts(height, tile, overlap), window_starts(width, tile, overlap)
    events: list[tuple[str, int]] = []  # ("read", window index) / ("computed", window index) / ("write", row0)
    lock = threading.Lock()

    def read(row: int, col: int, h: int, w: int) -> np.ndarray:
        events.append(("read", row_starts.index(row) * len(col_starts) + col_starts.index(col)))
        return x[:, row : row + h, col : col + w]

    def fn(windows: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(0.01)  # a model's compute: the calling thread goes on meanwhile
        with lock:
            done = sum(kind == "computed" for kind, _ in events)
            events.append(("computed", done))
        return _two_outputs(windows)

    def write(name: str, row0: int, block: np.ndarray) -> None:
        if name == "opt_v1":
            events.append(("write", row0))

    tiled_apply(read, height, width, fn, write, tile=tile, overlap=overlap, workers=workers, progress=False)
    reads = [index for kind, index in events if kind == "read"]
    assert reads == list(range(len(row_starts) * len(col_starts)))
    # The next window row's first windows are read before the row above is written: the
    # workers are not left waiting for the blending and writing of a finished row.
    first_write = events.index(("write", 0))
    assert ("read", len(col_starts)) in events[:first_write]
    # At most `workers` windows beyond the one being blended are read and not yet used.
    for position, (kind, _) in enumerate(events):
        if kind == "read":
            read_so_far = sum(k == "read" for k, _ in events[: position + 1])
            computed = sum(k == "computed" for k, _ in events[:position])
            assert read_so_far - computed <= workers + 1


def test_bad_batch_or_workers_or_stack_outputs_are_rejected() -> None:
    x = _image(200, 200).numpy()
    for bad in ({"batch": 0}, {"workers": 0}):
        with pytest.raises(ValueError, match="at least 1"):
            tiled_apply_array(x, _two_outputs, progress=False, **bad)
    with pytest.raises(ValueError, match="windows for a stack"):
        tiled_apply_array(x, lambda w: _two_outputs(w[:1]), progress=False, batch=2)


def test_bad_fn_output_is_rejected() -> None:
    x = _image(200, 200).numpy()
    with pytest.raises(ValueError, match="shape"):
        tiled_apply_array(x, lambda w: {"opt": w}, progress=False)
    names = iter([{"a": _linear}, {"b": _linear}] * 10)

    def changing_names(window: np.ndarray) -> dict[str, np.ndarray]:
        return {name: f(window) for name, f in next(names).items()}

    with pytest.raises(ValueError, match="outputs"):
        tiled_apply_array(x, changing_names, progress=False)


def test_window_dependent_fn_blends_without_seams() -> None:
    height, width, tile, overlap = 600, 400, 128, 32
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    x = np.stack([rows / 100, np.sin(cols / 40)])

    def add_window_mean(window: np.ndarray) -> dict[str, np.ndarray]:
        return {"opt": _linear(window) + window.mean(axis=(1, 2, 3), keepdims=True)}

    offset = tiled_apply_array(x, add_window_mean, tile=tile, overlap=overlap, progress=False)["opt"] - _linear(x)
    assert np.isfinite(offset).all()
    # The offset is the same convex blend of window means in every channel.
    np.testing.assert_allclose(offset, np.broadcast_to(offset[:1], offset.shape), atol=1e-4)
    offset = offset[0]

    row_starts, col_starts = window_starts(height, tile, overlap), window_starts(width, tile, overlap)
    means = np.array([[x[:, r : r + tile, c : c + tile].mean() for c in col_starts] for r in row_starts])
    assert means.min() - 1e-4 <= offset.min() and offset.max() <= means.max() + 1e-4
    # Largest difference between windows that overlap (side or corner neighbours).
    neighbour_step = max(
        np.abs(np.diff(means, axis=0)).max(),
        np.abs(np.diff(means, axis=1)).max(),
        np.abs(means[1:, 1:] - means[:-1, :-1]).max(),
        np.abs(means[1:, :-1] - means[:-1, 1:]).max(),
    )
    # Stitching without blending would jump by up to neighbour_step at the seams.
    largest_jump = max(np.abs(np.diff(offset, axis=0)).max(), np.abs(np.diff(offset, axis=1)).max())
    assert 0 < largest_jump < 0.25 * neighbour_step


# --- bounded memory ----------------------------------------------------------------------------


def _stream_tall_image(height: int, width: int, tile: int, overlap: int) -> tuple[int, int]:
    """Runs tiled_apply on a generated image; returns (most rows read but not yet written, peak bytes)."""
    read_end = 0
    written = {"opt_v1": 0, "opt_v2": 0}
    most_pending = 0

    def read(row: int, col: int, h: int, w: int) -> np.ndarray:
        nonlocal read_end, most_pending
        read_end = max(read_end, row + h)
        most_pending = max(most_pending, read_end - min(written.values()))
        rows = np.arange(row, row + h, dtype=np.float32)[:, None] / height
        cols = np.arange(col, col + w, dtype=np.float32)[None, :] / width
        return np.stack([rows + cols, rows * cols])

    def write(name: str, row0: int, block: np.ndarray) -> None:
        assert row0 == written[name]
        written[name] += block.shape[1]  # discard the block: only the library's memory counts

    tracemalloc.start()
    try:
        tiled_apply(read, height, width, _two_outputs, write, tile=tile, overlap=overlap, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == {"opt_v1": height, "opt_v2": height}
    return most_pending, peak


def test_memory_bounded_for_tall_images() -> None:
    tile, overlap, width = 128, 32, 256
    pending_tall, peak_tall = _stream_tall_image(4096, width, tile, overlap)
    pending_short, peak_short = _stream_tall_image(512, width, tile, overlap)

    # Rows are written while later rows are still being read: at most one window row
    # plus one stride is buffered at any time, however tall the image.
    assert pending_tall <= tile + (tile - overlap)
    assert pending_tall == pending_short

    # Peak allocation does not grow with height; one full-height output alone would be
    # 12 * 4096 * 256 * 4 bytes = 48 MiB.
    strip_bytes = 12 * tile * width * 4  # one output's strip
    assert peak_tall < 8 * strip_bytes
    assert peak_tall < 1.25 * peak_short
