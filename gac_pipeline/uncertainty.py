"""Per-pixel uncertainty from test-time variants of the whole chain.

Each variant transforms the SAR, runs the chain, and transforms the outputs back:

- regress-mode stages are deterministic, so the variants are the 8 dihedral transforms of the
  SAR (rot90 by k = 0..3, then the same four after a left-right flip), identity first;
- when a stage that runs samples (generate mode), the variants are N seeds instead (seed,
  seed + 1, ...), on the untransformed SAR.

The first variant is always the plain run, so the pipeline's regular outputs are unchanged.
Per stage the spread is the standard deviation over the variants (population, ddof = 0) of
the per-pixel mean of B02, B03, B04 and B08 (``METRIC_BANDS``), in DN; the mean over the
variants of all 12 bands comes with it.

Not shipped, measured side by side by ``training.train_uncertainty --test`` (README, Uncertainty):
a learned scale head (a Laplace-NLL conv head on out-of-fold residuals, combined as
sqrt(spread^2 + scale^2)) and an ensemble of the cross-validation fold chains. On the clear test
tiles, opt_v3's Spearman with |error| is 0.091 for the spread, 0.116 combined with the learned
scale (paired gain +0.026 [-0.231, 0.109]) and 0.086 for the ensemble (-0.005 [-0.101, 0.043]):
no source resolves a gain. The learned scale is calibrated where the spread is not (|error| <= std
on ~0.85 of the pixels, against 0.02-0.12): the spread, 7-34 DN against a median |error| of
170-240 DN, is no error bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats

from gac_pipeline.bands import METRIC_BAND_INDICES

# uncertainty.tif (CLI --uncertainty): one band per stage, as described here.
FILE_BANDS = ("opt_v1_std", "opt_v2_std", "opt_v3_std")
FILE_DESCRIPTION = ("per-pixel standard deviation over the test-time variants of the mean of B02, B03, B04 and "
                    "B08, in DN")
# (k, flip): rot90 by k quarter turns after an optional left-right flip; the identity first.
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


@dataclass(frozen=True)
class Variant:
    """One test-time variant: a dihedral transform of the last two axes and a seed."""

    k: int = 0
    flip: bool = False
    seed: int = 0

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.rot90(x[..., ::-1] if self.flip else x, self.k, axes=(-2, -1))

    def undo(self, y: np.ndarray) -> np.ndarray:
        y = np.rot90(y, -self.k, axes=(-2, -1))
        return np.ascontiguousarray(y[..., ::-1] if self.flip else y)


def variants(n: int, seed: int, *, generative: bool) -> list[Variant]:
    """The first ``n`` variants: dihedral transforms (at most 8), or ``n`` seeds when a stage samples."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"uncertainty must be a whole number of variants >= 1, got {n!r}")
    if generative:
        return [Variant(seed=seed + i) for i in range(n)]
    if n > len(DIHEDRAL):
        raise ValueError(f"uncertainty: regress-mode stages have {len(DIHEDRAL)} dihedral variants, got {n}")
    return [Variant(k, flip, seed) for k, flip in DIHEDRAL[:n]]


def describe(n: int, *, generative: bool) -> str:
    """What the variants are, for notes and provenance tags: "8 dihedral transforms" or "4 seeds"."""
    return f"{n} {'seeds' if generative else 'dihedral transforms'}"


def band_mean(dn: np.ndarray) -> np.ndarray:
    """(H, W) float64 mean of B02, B03, B04 and B08 of a (12, H, W) DN array: what the spread is taken of."""
    return np.asarray(dn, dtype=np.float64)[list(METRIC_BAND_INDICES)].mean(axis=0)


class Spread:
    """Running mean (12 bands) and standard deviation (of ``band_mean``) per output, over variants.

    Welford's update in float64: identical variants give a standard deviation of exactly 0.
    """

    def __init__(self):
        self.n = 0
        self._sum: dict[str, np.ndarray] = {}
        self._mean: dict[str, np.ndarray] = {}
        self._m2: dict[str, np.ndarray] = {}

    def add(self, versions: dict[str, np.ndarray]) -> None:
        self.n += 1
        for name, dn in versions.items():
            value = band_mean(dn)
            if self.n == 1:
                self._sum[name] = np.array(dn, dtype=np.float32)
                self._mean[name], self._m2[name] = value, np.zeros_like(value)
                continue
            self._sum[name] += dn
            delta = value - self._mean[name]
            self._mean[name] += delta / self.n
            self._m2[name] += delta * (value - self._mean[name])

    def mean(self) -> dict[str, np.ndarray]:
        """{name: (12, H, W) float32 mean over the variants}."""
        return {name: total / np.float32(self.n) for name, total in self._sum.items()}

    def std(self) -> dict[str, np.ndarray]:
        """{name: (H, W) float32 standard deviation over the variants of the 4-band mean, DN}."""
        return {name: np.sqrt(m2 / self.n).astype(np.float32) for name, m2 in self._m2.items()}


def error_spearman(std: np.ndarray, prediction: np.ndarray, reference: np.ndarray) -> float:
    """Spearman rank correlation over pixels between ``std`` (H, W) and |band_mean(prediction) - band_mean(reference)|.

    Does the map point at the errors? 1: the pixels it ranks most uncertain are the worst. Pixels
    where either is not finite are left out; NaN when either is constant (no ranking).
    """
    error = np.abs(band_mean(prediction) - band_mean(reference))
    std = np.asarray(std, dtype=np.float64)
    finite = np.isfinite(std) & np.isfinite(error)
    if finite.sum() < 2 or np.ptp(std[finite]) == 0 or np.ptp(error[finite]) == 0:
        return float("nan")
    return float(scipy.stats.spearmanr(std[finite], error[finite]).statistic)
