"""Import-time fix for the CPU torch + CUDA torchvision pairing these machines install.

The only torchvision 0.28.0 wheel available is a CUDA build; next to a CPU torch its C++
extension cannot load, so ``import torchvision`` fails with ``operator torchvision::nms does
not exist`` (its Python side registers fake kernels for ops whose schemas never appeared).
terratorch, peft (through transformers) and lpips all import torchvision, so before the first
import we try to load torchvision's own extension and, only if that fails, declare the two
schemas it needs. Nothing is changed when the real ops load.
"""

import glob
import importlib.util
import os

import torch

_LIBRARY = None  # the schema definitions live as long as this object


def ensure_torchvision_ops() -> None:
    """Make ``import torchvision`` work: real ops if they load, bare schemas otherwise."""
    global _LIBRARY
    if _LIBRARY is not None or _has_nms():
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: nothing imports it
    package_dir = next(iter(spec.submodule_search_locations))
    for extension in glob.glob(os.path.join(package_dir, "_C*.so")):
        try:
            torch.ops.load_library(extension)
        except OSError:
            break  # e.g. a CUDA build without CUDA libraries: fall back to schemas
        if _has_nms():
            return
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define(
        "qnms(Tensor dets, Tensor scores, float iou_threshold, int output_size) -> Tensor"
    )


def _has_nms() -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018  (attribute lookup raises when missing)
        return True
    except (AttributeError, RuntimeError):
        return False
