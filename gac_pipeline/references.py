"""Baselines and the one-network control, stored with a preset so the ablation can compare against them.

A pipeline folder may hold ``references/``:

- ``references.json``: the training-split per-band mean (``mean_baseline``), a per-pixel
  least-squares map from [VV, VH, VV-VH, 1] dB to the 12 bands (``linear_baseline``), the
  median luminance gradient energy of the training S2 tiles (``training_gradient_energy``,
  what ``sharpness`` compares a prediction with when there is no reference tile; absent in
  files written before it existed), the unsharp-mask setting of the ``v1+unsharp`` baseline
  (``unsharp``: box size and gain chosen on out-of-fold opt_v1, see :func:`unsharp_mask`; absent
  in older files), where they came from, and the SHA-256 of every control file;
- ``control/`` (optional): the :class:`UNetControl` (``unet_control``) as config + safetensors.

Keeping them with the preset means every evaluation of that preset compares against the
numbers fitted on the same training split, never against values typed in by hand.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import uniform_filter

from gac_pipeline import hub
from gac_pipeline.bands import S2L2A_BANDS
from gac_pipeline.control import UNetControl
from gac_pipeline.metrics import gradient_energy
from gac_pipeline.presets import preset_location
from gac_pipeline.stages.base import CONFIG_FILE, FULL_WEIGHTS, CheckpointError
from gac_pipeline.tiling import crop_pads, pad_to_multiple

REFERENCES_DIR = "references"
REFERENCES_FILE = "references.json"
CONTROL_DIR = "control"
CONTROL_FILES = (f"{CONTROL_DIR}/{CONFIG_FILE}", f"{CONTROL_DIR}/{FULL_WEIGHTS}")
VARIANTS = ("mean_baseline", "linear_baseline", "unet_control")
LINEAR_FEATURES = ("VV", "VH", "VV-VH", "1")
PAD_MULTIPLE = 16  # what the pipeline pads to
# The v1+unsharp baseline: opt_v1 sharpened by a fixed filter, no training. It is the yardstick for
# stage 2 (realism), which must beat a filter at the same PSNR to show that it learned something.
UNSHARP_VARIANT = "v1+unsharp"
UNSHARP_SIZES = (3, 5, 9, 17, 33)  # box filter sides, pixels
UNSHARP_GAINS = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def _features(s1_db: np.ndarray) -> np.ndarray:
    """(B, 2, H, W) dB -> (B, H, W, 4) features of the linear baseline, in ``LINEAR_FEATURES`` order."""
    vv, vh = s1_db[:, 0], s1_db[:, 1]
    return np.stack([vv, vh, vv - vh, np.ones_like(vv)], axis=-1)


def _as_numpy(array, name: str, channels: int) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 4 or array.shape[1] != channels:
        raise ValueError(f"{name}: expected shape (N, {channels}, H, W), got {array.shape}")
    return array


@dataclass
class References:
    """What a pipeline is compared against, fitted on its training split."""

    mean_dn: np.ndarray  # (12,) per-band training-split mean, DN
    linear: np.ndarray  # (4, 12) least squares from [VV, VH, VV-VH, 1] (dB) to DN
    source: str  # e.g. "data/bigearthnet train split, 18 clear_land tiles"
    train_tiles: int
    control: UNetControl | None = None
    # Median over the training S2 tiles of metrics.gradient_energy; None when unknown (older files).
    training_gradient_energy: float | None = None
    # {"size": box side, "gain": gain} of the v1+unsharp baseline; None when unknown (older files).
    unsharp: dict | None = None

    @classmethod
    def fit(cls, s1_db, s2_dn, *, source: str) -> References:
        """Fit the mean and linear baselines on (N, 2, H, W) dB and (N, 12, H, W) DN.

        Non-finite pixels are left out. VV-VH is collinear with VV and VH, so the system is
        rank deficient by design; ``lstsq`` returns the minimum-norm solution, whose
        predictions are the same as any other least-squares solution's.

        Also stores ``training_gradient_energy``: the median of
        :func:`gac_pipeline.metrics.gradient_energy` over the S2 tiles, leaving out tiles
        where it is not finite (a NaN pixel); None when no tile gives a finite value.
        """
        s1 = _as_numpy(s1_db, "s1_db", 2)
        s2 = _as_numpy(s2_dn, "s2_dn", len(S2L2A_BANDS))
        if s1.shape[0] != s2.shape[0] or s1.shape[2:] != s2.shape[2:]:
            raise ValueError(f"s1_db {s1.shape} and s2_dn {s2.shape} do not describe the same tiles")
        features = _features(s1).reshape(-1, len(LINEAR_FEATURES))
        targets = np.moveaxis(s2, 1, -1).reshape(-1, len(S2L2A_BANDS))
        valid = np.isfinite(features).all(axis=1) & np.isfinite(targets).all(axis=1)
        if not valid.any():
            raise ValueError("no pixel has finite SAR and optical values to fit on")
        linear, *_ = np.linalg.lstsq(features[valid], targets[valid], rcond=None)
        return cls(mean_dn=targets[valid].mean(axis=0), linear=linear, source=source, train_tiles=int(s1.shape[0]),
                   training_gradient_energy=median_gradient_energy(s2))

    def available(self) -> dict[str, str | None]:
        """Variant -> None when it can run, else the reason it cannot."""
        control = None if self.control is not None else "no UNet control stored with this preset's references"
        return {"mean_baseline": None, "linear_baseline": None, "unet_control": control}

    def predict(self, variant: str, s1_db) -> np.ndarray:
        """Predict (12, H, W) or (B, 12, H, W) float32 DN from (2, H, W) or (B, 2, H, W) dB."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown reference variant {variant!r}; choose from {', '.join(VARIANTS)}")
        reason = self.available()[variant]
        if reason is not None:
            raise ValueError(f"{variant}: {reason}")
        single = np.ndim(s1_db) == 3
        s1 = _as_numpy(s1_db[None] if single else s1_db, "s1_db", 2)
        if variant == "mean_baseline":
            batch, _, height, width = s1.shape
            out = np.broadcast_to(self.mean_dn[None, :, None, None], (batch, len(S2L2A_BANDS), height, width))
        elif variant == "linear_baseline":
            out = np.moveaxis(_features(s1) @ self.linear, -1, 1)
        else:
            multiple = max(PAD_MULTIPLE, 2 ** (self.control.config.levels - 1))  # both are powers of 2
            padded, pads = pad_to_multiple(torch.from_numpy(s1).float(), multiple)
            with torch.no_grad():
                out = crop_pads(self.control(padded), pads).numpy()
        out = np.ascontiguousarray(out, dtype=np.float32)
        return out[0] if single else out

    def save(self, pipeline_dir: str | Path) -> list[Path]:
        """Write ``pipeline_dir/references/`` (replacing an older control); returns the files written."""
        root = Path(pipeline_dir) / REFERENCES_DIR
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root / CONTROL_DIR, ignore_errors=True)  # never leave an unlisted, stale control
        written = self.control.save(root / CONTROL_DIR) if self.control is not None else []
        record = {
            "mean_dn": np.asarray(self.mean_dn, dtype=float).tolist(),
            "linear": np.asarray(self.linear, dtype=float).tolist(),
            "linear_features": list(LINEAR_FEATURES),
            "bands": list(S2L2A_BANDS),
            "source": self.source,
            "train_tiles": int(self.train_tiles),
            "training_gradient_energy": _optional_float(self.training_gradient_energy),
            "unsharp": self.unsharp,
            "files": {path.relative_to(root).as_posix(): hub.sha256(path) for path in written},
        }
        (root / REFERENCES_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")
        return [root / REFERENCES_FILE, *written]

    @classmethod
    def load(cls, pipeline_dir: str | Path) -> References | None:
        """Read ``pipeline_dir/references/``; None when the folder is absent.

        Pickles are refused and every control file must match its hash in ``references.json``.
        """
        root = Path(pipeline_dir) / REFERENCES_DIR
        if not root.is_dir():
            return None
        path = root / REFERENCES_FILE
        if not path.is_file():
            raise CheckpointError(f"{root}: missing {REFERENCES_FILE}")
        try:
            record = json.loads(path.read_text())
            mean_dn = np.asarray(record["mean_dn"], dtype=np.float64)
            linear = np.asarray(record["linear"], dtype=np.float64)
            source, train_tiles, files = str(record["source"]), int(record["train_tiles"]), dict(record["files"])
            # Absent from files written before it existed: None, and sharpness says so.
            training_gradient_energy = _optional_float(record.get("training_gradient_energy"))
            unsharp = record.get("unsharp")
            if unsharp is not None:
                unsharp = {"size": int(unsharp["size"]), "gain": float(unsharp["gain"])}
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
        shapes = {"mean_dn": (mean_dn.shape, (len(S2L2A_BANDS),)),
                  "linear": (linear.shape, (len(LINEAR_FEATURES), len(S2L2A_BANDS)))}
        for key, (shape, expected) in shapes.items():
            if shape != expected:
                raise CheckpointError(f"{path}: {key} has shape {shape}, expected {expected}")
        try:
            hub.verify_folder(root, files)
        except hub.CheckpointSafetyError as error:
            # verify_folder names pipeline_config.json; here the hashes come from references.json.
            raise hub.CheckpointSafetyError(f"{root} (hashes in {REFERENCES_FILE}): {error}") from None
        control = None
        if (root / CONTROL_DIR).exists():
            unlisted = [name for name in CONTROL_FILES if name not in files]
            if unlisted:
                raise hub.CheckpointSafetyError(f"{root}: {', '.join(unlisted)} not listed in {REFERENCES_FILE}")
            control = UNetControl.load(hub.inside(root, CONTROL_DIR))
        return cls(mean_dn=mean_dn, linear=linear, source=source, train_tiles=train_tiles, control=control,
                   training_gradient_energy=training_gradient_energy, unsharp=unsharp)


def unsharp_mask(dn, size: int, gain: float) -> np.ndarray:
    """``blur + gain x (image - blur)`` per band, blur = the ``size`` x ``size`` box mean (edges reflected).

    Args:
        dn: (..., H, W) image(s), e.g. (12, H, W) DN.

    Returns:
        float32, the shape of ``dn``. Gain 1 returns the image; above 1 it raises the contrast of
        detail finer than the box, which is what a blurred regression output lacks.
    """
    image = np.asarray(dn, dtype=np.float32)
    blur = uniform_filter(image, size=size, axes=(-2, -1), mode="reflect")
    return blur + np.float32(gain) * (image - blur)


def median_gradient_energy(s2_dn) -> float | None:
    """Median of ``gradient_energy`` over (N, 12, H, W) DN tiles; tiles with a non-finite value are left out."""
    s2 = _as_numpy(s2_dn, "s2_dn", len(S2L2A_BANDS))
    with warnings.catch_warnings():  # a NaN pixel or a tile too small for an interior gives nan
        warnings.simplefilter("ignore", RuntimeWarning)
        energies = np.array([gradient_energy(tile) for tile in s2], dtype=np.float64)
    finite = energies[np.isfinite(energies)]
    return float(np.median(finite)) if finite.size else None


def _optional_float(value) -> float | None:
    """None stays None; anything else must be a finite number (bool is not one)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"training_gradient_energy must be a number or null, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"training_gradient_energy must be finite, got {value}")
    return value


def load_for_preset(preset: str) -> References | None:
    """The references stored with a preset name, folder or ``repo@revision`` (None if it has none)."""
    location, revision = preset_location(preset)
    return References.load(hub.resolve_checkpoint(location, revision))


def training_gradient_energy_for_preset(preset: str) -> tuple[float | None, str | None]:
    """The training tiles' median gradient energy stored with a preset, for ``sharpness_vs_training``.

    Returns:
        ``(value, None)``, or ``(None, reason)`` when the preset has no references, its
        ``references.json`` predates the field, or the references cannot be loaded. Never raises
        for a broken references folder: the translation does not need it, only this score.
    """
    try:
        references = load_for_preset(preset)
    except (RuntimeError, ValueError, OSError) as error:  # CheckpointError/-SafetyError are RuntimeErrors
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
        return None, f"this preset's references could not be loaded: {first_line}"
    if references is None:
        return None, "no training median stored with this preset: it has no references"
    if references.training_gradient_energy is None:
        return None, f"no training median stored with this preset: its {REFERENCES_FILE} predates it"
    return references.training_gradient_energy, None
