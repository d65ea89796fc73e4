"""Per-band statistics that map physical units to the standardized space the models work in.

Defaults are TerraMind-1.0's pretraining statistics (S1GRD in dB, S2L2A in DN) and
Prithvi-EO-2.0's HLS statistics; they are saved with every stage so a checkpoint always
carries the numbers it was trained with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from gac_pipeline.bands import HLS_BAND_INDICES

TERRAMIND_S1GRD_MEAN = (-12.599, -20.293)
TERRAMIND_S1GRD_STD = (5.195, 5.89)
TERRAMIND_S2L2A_MEAN = (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975,
                        2987.011, 3083.234, 3132.22, 3162.988, 2424.884, 1857.648)
TERRAMIND_S2L2A_STD = (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926,
                       1820.257, 1871.918, 1753.829, 1797.379, 1434.261, 1334.311)
PRITHVI_HLS_MEAN = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
PRITHVI_HLS_STD = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)


@dataclass
class Standardization:
    """Means and standard deviations per band, in physical units."""

    s1_mean: tuple = TERRAMIND_S1GRD_MEAN
    s1_std: tuple = TERRAMIND_S1GRD_STD
    s2_mean: tuple = TERRAMIND_S2L2A_MEAN
    s2_std: tuple = TERRAMIND_S2L2A_STD
    hls_mean: tuple = PRITHVI_HLS_MEAN
    hls_std: tuple = PRITHVI_HLS_STD

    @classmethod
    def from_dict(cls, data: dict) -> Standardization:
        return cls(**{k: tuple(v) for k, v in data.items()})

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    def s1(self, s1_db: torch.Tensor) -> torch.Tensor:
        return (s1_db - _column(self.s1_mean, s1_db)) / _column(self.s1_std, s1_db)

    def s2(self, dn: torch.Tensor) -> torch.Tensor:
        return (dn - _column(self.s2_mean, dn)) / _column(self.s2_std, dn)

    def s2_to_dn(self, standardized: torch.Tensor) -> torch.Tensor:
        return standardized * _column(self.s2_std, standardized) + _column(self.s2_mean, standardized)

    def s2_residual_to_dn(self, residual: torch.Tensor) -> torch.Tensor:
        """Scale a residual predicted in standardized units to DN (no mean shift)."""
        return residual * _column(self.s2_std, residual)

    def hls(self, dn: torch.Tensor) -> torch.Tensor:
        """The six Prithvi bands of a 12-band S2L2A DN tensor, standardized with Prithvi's stats."""
        hls = dn[:, list(HLS_BAND_INDICES)]
        return (hls - _column(self.hls_mean, hls)) / _column(self.hls_std, hls)


def _column(values: tuple, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
