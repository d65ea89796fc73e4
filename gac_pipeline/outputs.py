"""Result dataclasses returned by the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STAGE_NAMES = {"1": "TerraMind S1->S2", "2": "Prithvi refiner", "3": "TerraMind grounding"}


@dataclass
class PipelineOutput:
    """The three optical versions of one scene, all (12, H, W) float32 S2L2A DN.

    A skipped stage passes its input through: ``ran["2"] is False`` means ``opt_v2 is opt_v1``'s
    copy, and ``notes`` says so.

    With ``pipeline.translate(..., uncertainty=N)`` (see ``gac_pipeline.uncertainty``), per output name:
    ``mean`` the (12, H, W) float32 mean over the N test-time variants and ``std`` the (H, W)
    float32 standard deviation over them of the mean of B02, B03, B04 and B08, in DN;
    ``uncertainty`` says what the variants were ("8 dihedral transforms"). Empty without it.
    """

    opt_v1: np.ndarray
    opt_v2: np.ndarray
    opt_v3: np.ndarray
    ran: dict[str, bool]
    timings_s: dict[str, float]
    notes: list[str] = field(default_factory=list)
    mean: dict[str, np.ndarray] = field(default_factory=dict)
    std: dict[str, np.ndarray] = field(default_factory=dict)
    uncertainty: str | None = None

    def versions(self) -> dict[str, np.ndarray]:
        return {"opt_v1": self.opt_v1, "opt_v2": self.opt_v2, "opt_v3": self.opt_v3}
