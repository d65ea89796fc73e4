"""Experiment (issue 16): can a learned scale make the per-pixel uncertainty point at the errors?

Not shipped: measured, it does not clearly beat the spread over the test-time variants (below).

The head (:class:`ScaleHead`) maps (SAR, one stage's output) to the per-pixel scale of that
output's error on the mean of B02, B03, B04, B08 (DN; ``gac_pipeline.uncertainty.band_mean``),
trained with a Laplace negative log-likelihood (heteroscedastic regression) on *out-of-fold*
residuals: for every pool tile, the chain's outputs at the shipped steps come from the fold
models of ``train_mini`` that never trained on the tile's scene cluster (``training.cv``), so the
residuals are an honest sample of test-time errors. One head serves the three outputs (a
one-hot stage input). Its std is sqrt(2) b; combined with the spread as sqrt(spread^2 + std^2).

Usage (seeded, single-threaded: the same inputs give the same numbers)::

    # cross-validate GRID over the same 3 folds (~20 min on one core) -> OUT/cv.json, then fit
    # SETTINGS on all pool tiles -> OUT/uncertainty/ (config.json + model.safetensors)
    python -m training.train_uncertainty --work-dir runs/mini2 --out runs/mini2/uncertainty --cv
    # the same fit, then spread / learned / combined side by side on the clear test tiles -> OUT/test.json
    python -m training.train_uncertainty --work-dir runs/mini2 --out runs/mini2/uncertainty --test mini

``--cv`` fits on two folds' out-of-fold outputs and scores the third, for each setting in
``GRID`` at each of ``RECORD_STEPS``, with the issue's score: per tile, the Spearman rank
correlation between the predicted std map and |error| (``gac_pipeline.uncertainty.error_spearman``),
averaged over the 32 pool tiles. ``SETTINGS`` is the best mean over the three outputs.
``--test`` reads the test split (the only thing here that does), after everything is fixed;
its intervals are the ablation's cluster bootstrap (``eval.ablation.cluster_bootstrap``).

Every run also scores unfitted maps as yardsticks (``YARDSTICKS``: the output's brightness and local
contrast, what stages 2 and 3 changed, and, as an oracle that needs the real tile, the real tile's
deviation from its median): out of fold on the pool tiles (printed, and in the record) and, with
``--test``, on the test tiles.

``--test`` also measures an ensemble where ``--work-dir`` has the fold runs: the std over the
preset's chain and the fold chains (``fold_chains``: each stage's fold k, at the end of its run,
since fold runs keep only their last weights), alone and combined with the spread.

Measured on the previous GAC-mini (runs/mini2, chosen steps 400 / 150 / 150) for ``--cv``: every
setting of GRID within -0.05..+0.05 per output; the chosen one (width 8, two 3x3 layers, with
SAR, 1000 steps) opt_v1 0.017, opt_v2 0.065, opt_v3 0.007; 4000 steps 0.001 / 0.104 / 0.012 while
fitting its own training tiles to 0.07 / 0.24 / 0.23 (it memorises, it does not generalise);
unfitted maps for scale: the output's brightness 0.010 / 0.106 / 0.015.

Measured on the shipped GAC-mini (``--work-dir runs/lite3 --test mini``, 15 clear test tiles in 7
clusters), opt_v3: spread 0.091 [0.046, 0.225], learned 0.110, combined 0.116, ensemble 0.086
[0.058, 0.165], ensemble + spread 0.114; paired against the spread: combined +0.026 [-0.231,
0.109], ensemble -0.005 [-0.101, 0.043], ensemble + spread +0.023 [-0.045, 0.057] (the GAC-mini
before it: ensemble -0.046 [-0.145, -0.010]). Calibration (fraction of pixels with |error| <= std;
a Laplace expects 0.76): spread 0.02-0.12, learned and combined 0.85-0.87, ensemble 0.13-0.26.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.configs import _JsonConfig
from gac_pipeline.standardization import Standardization
from gac_pipeline.uncertainty import band_mean, error_spearman
from training import common, cv

# A head's folder (``ScaleHead.save``): config.json + model.safetensors.
SCALE_HEAD_DIR = "uncertainty"
SCALE_HEAD_CONFIG = "config.json"
SCALE_HEAD_WEIGHTS = "model.safetensors"
# The outputs a head knows, in the order of its one-hot stage channels.
OUTPUT_NAMES = ("opt_v1", "opt_v2", "opt_v3")

STAGE_OF = {"opt_v1": "stage1", "opt_v2": "stage2", "opt_v3": "stage3"}
RECORD_FILE = "uncertainty.json"
CV_FILE = "cv.json"
TEST_FILE = "test.json"


# ----------------------------------------------------------------------------- the head


def combine(spread: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """sqrt(spread^2 + scale^2) in float64, returned as float32: two independent error sources."""
    spread, scale = np.asarray(spread, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    return np.sqrt(spread**2 + scale**2).astype(np.float32)


@dataclass
class ScaleHeadConfig(_JsonConfig):
    """A small convolutional head: (SAR, one output) -> per-pixel log scale of its error.

    The error is that of ``band_mean`` (mean of B02, B03, B04, B08, DN) against the real tile;
    the head predicts log b of a Laplace distribution (std sqrt(2) b) or log sigma of a Gaussian
    (``distribution``), trained by negative log-likelihood on out-of-fold residuals
    (:func:`fit`).

    Inputs: the output's 12 bands standardized with ``standardization.s2``, the SAR (VV, VH dB)
    with ``standardization.s1`` when ``with_sar``, and a one-hot channel per ``OUTPUT_NAMES``
    (one head for every stage). One 3x3 convolution of ``width`` channels per ``dilations``
    entry (GELU after each; reflect padding), then a 1x1 convolution to one channel.
    """

    width: int = 16
    dilations: list = field(default_factory=lambda: [1, 2, 4])
    with_sar: bool = True
    distribution: str = "laplace"  # "laplace" (outputs log b) or "gaussian" (log sigma)
    standardization: Standardization = field(default_factory=Standardization)
    trained: bool = False
    source: str = ""  # what it was trained on

    def __post_init__(self):
        if self.distribution not in ("laplace", "gaussian"):
            raise ValueError(f"distribution must be laplace or gaussian, got {self.distribution!r}")
        self.dilations = [int(d) for d in self.dilations]

    @property
    def halo(self) -> int:
        """Pixels on each side that reach a pixel's output (the receptive field's radius)."""
        return sum(self.dilations)


class ScaleHead(nn.Module):
    """The learned scale (``ScaleHeadConfig``): ``std`` gives a (H, W) std map in DN for one output."""

    def __init__(self, config: ScaleHeadConfig | None = None):
        super().__init__()
        self.config = config or ScaleHeadConfig()
        channels = 12 + len(OUTPUT_NAMES) + (2 if self.config.with_sar else 0)
        layers: list[nn.Module] = []
        for dilation in self.config.dilations:
            layers += [nn.Conv2d(channels, self.config.width, 3, padding=dilation, dilation=dilation,
                                 padding_mode="reflect"), nn.GELU()]
            channels = self.config.width
        layers.append(nn.Conv2d(channels, 1, 1))
        self.net = nn.Sequential(*layers)

    @property
    def out(self) -> nn.Conv2d:
        return self.net[-1]

    def forward(self, s1_db: torch.Tensor, dn: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) log scale (log b or log sigma, in DN) from (B, 2, H, W) dB, (B, 12, H, W) DN and
        (B,) indices into ``OUTPUT_NAMES``."""
        standardization = self.config.standardization
        onehot = nn.functional.one_hot(output.long(), len(OUTPUT_NAMES)).to(dn.dtype)
        features = [standardization.s2(dn), onehot[:, :, None, None].expand(-1, -1, *dn.shape[-2:])]
        if self.config.with_sar:
            features.append(standardization.s1(s1_db))
        return self.net(torch.cat(features, dim=1))

    def std_from_log_scale(self, log_scale: torch.Tensor) -> torch.Tensor:
        """The distribution's standard deviation (DN): sqrt(2) b for Laplace, sigma for Gaussian."""
        factor = math.sqrt(2.0) if self.config.distribution == "laplace" else 1.0
        return torch.exp(log_scale) * factor

    def nll(self, log_scale: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood (constants dropped) of ``residual`` (DN) under the predicted scale."""
        if self.config.distribution == "laplace":
            return (log_scale + residual.abs() * torch.exp(-log_scale)).mean()
        return (log_scale + 0.5 * residual**2 * torch.exp(-2 * log_scale)).mean()

    @torch.no_grad()
    def std(self, s1_db: np.ndarray, dn: np.ndarray, output: str, *, rows: int = 256) -> np.ndarray:
        """(H, W) float32 std (DN) of ``band_mean``'s error for output ``output`` ("opt_v1"..) of (12, H, W) DN.

        Runs in strips of ``rows`` rows with ``config.halo`` rows of context on each side, so
        memory stays bounded and the result equals one pass over the whole scene.
        """
        if output not in OUTPUT_NAMES:
            raise ValueError(f"unknown output {output!r}; choose from {', '.join(OUTPUT_NAMES)}")
        parameter = next(self.parameters())
        height = dn.shape[-2]
        halo, strips = self.config.halo, []
        index = torch.tensor([OUTPUT_NAMES.index(output)], device=parameter.device)
        for top in range(0, height, rows):
            start, stop = max(0, top - halo), min(height, top + rows + halo)
            s1 = torch.as_tensor(np.ascontiguousarray(s1_db[:, start:stop]), dtype=parameter.dtype,
                                 device=parameter.device)[None]
            image = torch.as_tensor(np.ascontiguousarray(dn[:, start:stop]), dtype=parameter.dtype,
                                    device=parameter.device)[None]
            std = self.std_from_log_scale(self(s1, image, index))[0, 0]
            strips.append(std[top - start: top - start + min(rows, height - top)].float().cpu().numpy())
        return np.concatenate(strips, axis=0).astype(np.float32)

    def save(self, directory: str | Path) -> list[Path]:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``; returns the files written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / SCALE_HEAD_CONFIG)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  directory / SCALE_HEAD_WEIGHTS)
        return [directory / SCALE_HEAD_CONFIG, directory / SCALE_HEAD_WEIGHTS]

    @classmethod
    def load(cls, directory: str | Path) -> ScaleHead:
        """Build from ``config.json`` and load ``model.safetensors`` with strict key and shape checks."""
        from gac_pipeline.stages.base import CheckpointError

        directory = Path(directory)
        for name in (SCALE_HEAD_CONFIG, SCALE_HEAD_WEIGHTS):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory}: missing {name}")
        head = cls(ScaleHeadConfig.load(directory / SCALE_HEAD_CONFIG))
        weights = load_file(directory / SCALE_HEAD_WEIGHTS)
        expected = head.state_dict()
        if set(weights) != set(expected) or any(weights[k].shape != v.shape for k, v in expected.items()):
            raise CheckpointError(f"{directory / SCALE_HEAD_WEIGHTS}: weights do not match {SCALE_HEAD_CONFIG}")
        head.load_state_dict(weights)
        return head.eval()


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Settings:
    """What the head is and how it trains (``steps`` Adam steps of ``batch`` crops of ``crop`` px)."""

    width: int = 16
    dilations: tuple = (1, 2, 4)
    with_sar: bool = True
    distribution: str = "laplace"
    steps: int = 1000
    batch: int = 16
    crop: int = 48
    lr: float = 3e-3

    def head_config(self, standardization: Standardization, source: str = "") -> ScaleHeadConfig:
        return ScaleHeadConfig(width=self.width, dilations=list(self.dilations), with_sar=self.with_sar,
                               distribution=self.distribution, standardization=standardization, source=source)


# Chosen by --cv on runs/mini2 (see --out's cv.json): the best mean Spearman over the three outputs.
SETTINGS = Settings(width=8, dilations=(1, 1), with_sar=True, steps=1000)
# --cv's grid: each setting trains to its max steps and is scored at every step in RECORD_STEPS.
RECORD_STEPS = (250, 500, 1000)
GRID = tuple(Settings(width=w, dilations=d, with_sar=sar, steps=max(RECORD_STEPS))
             for w in (8, 24) for d in ((1, 1), (1, 2, 4, 8)) for sar in (True, False))
SMOKE_STEPS = 2


@dataclass
class Residuals:
    """Out-of-fold training material: per tile, its SAR, each output (clipped at 0 like the pipeline's) and
    the real tile."""

    s1: torch.Tensor  # (N, 2, H, W) dB
    s2: torch.Tensor  # (N, 12, H, W) DN
    outputs: dict[str, torch.Tensor]  # name -> (N, 12, H, W) DN
    names: list[str]

    def residual(self, name: str) -> torch.Tensor:
        """(N, 1, H, W) band_mean(output) - band_mean(real), DN."""
        return _band_mean(self.outputs[name]) - _band_mean(self.s2)

    def subset(self, index: list[int]) -> Residuals:
        return Residuals(self.s1[index], self.s2[index], {k: v[index] for k, v in self.outputs.items()},
                         [self.names[i] for i in index])


def _band_mean(dn: torch.Tensor) -> torch.Tensor:
    from gac_pipeline.bands import METRIC_BAND_INDICES

    return dn[:, list(METRIC_BAND_INDICES)].mean(dim=1, keepdim=True)


def chosen_steps(training_record: Path) -> dict[str, int]:
    """{"stage1": step, ...} from a preset's ``training.json`` (what its stages were trained for)."""
    steps = json.loads(Path(training_record).read_text())["chosen_steps"]
    return {STAGE_OF[name]: int(steps[STAGE_OF[name]]) for name in OUTPUT_NAMES}


def out_of_fold(work_dir: Path, pool: common.TileSet, steps: dict[str, int]) -> dict[str, dict[str, torch.Tensor]]:
    """{output name: {tile name: (12, H, W)}} from ``<work_dir>/<stage>/fold*_train`` at ``steps[stage]``."""
    outputs = {}
    for name in OUTPUT_NAMES:
        stage, predictions = STAGE_OF[name], {}
        for directory in sorted((Path(work_dir) / stage).glob("fold*_train")):
            record = json.loads((directory / cv.FOLD_FILE).read_text())
            stored = load_file(directory / cv.HELDOUT_FILE)
            for tile in record["held_out"]:
                key = f"{steps[stage]}/{tile}"
                if key not in stored:
                    raise ValueError(f"{directory}: no held-out prediction at step {steps[stage]} for {tile}")
                predictions[tile] = stored[key]
        if sorted(predictions) != sorted(pool.names):
            raise ValueError(f"{work_dir}/{stage}: the folds' held-out tiles are not the pool's tiles")
        outputs[name] = predictions
    return outputs


def residuals(pool: common.TileSet, outputs: dict[str, dict[str, torch.Tensor]]) -> Residuals:
    """The pool with each output stacked in pool order and clipped at 0 (as the pipeline returns them)."""
    return Residuals(pool.s1, pool.s2, {name: torch.stack([outputs[name][tile] for tile in pool.names]).clamp(min=0)
                                        for name in OUTPUT_NAMES}, list(pool.names))


def fit(data: Residuals, settings: Settings, standardization: Standardization, *, seed: int = 0,
        record_steps: tuple[int, ...] = (), source: str = "", log_every: int = 0) -> tuple[ScaleHead, dict]:
    """Train a head on every tile and output of ``data``; returns it and {step: state dict} at ``record_steps``.

    Each step draws ``settings.batch`` (output, tile) pairs with replacement, each with a random
    crop, rot90 and flip (``common.augment``), and takes an Adam step on the NLL. The last layer
    starts at zero weights and the constant scale's maximum likelihood (log mean |r|, or log rms).
    """
    generator = common.seed_all(seed)
    head = ScaleHead(settings.head_config(standardization, source))
    targets = {name: data.residual(name) for name in OUTPUT_NAMES}
    everything = torch.cat(list(targets.values()))
    constant = everything.abs().mean() if settings.distribution == "laplace" else everything.pow(2).mean().sqrt()
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.fill_(float(torch.log(constant)))
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.lr)
    crop = min(settings.crop, *data.s1.shape[-2:])
    recorded = {}
    head.train()
    for step in range(1, settings.steps + 1):
        picks = torch.randint(0, len(OUTPUT_NAMES) * len(data.names), (settings.batch,), generator=generator)
        samples = []
        for pick in picks.tolist():
            output, tile = divmod(pick, len(data.names))
            name = OUTPUT_NAMES[output]
            s1, dn, r = common.augment([data.s1[tile], data.outputs[name][tile], targets[name][tile]], crop, generator)
            samples.append((s1, dn, r, output))
        s1, dn, r = (torch.stack([s[i] for s in samples]).contiguous() for i in range(3))
        index = torch.tensor([s[3] for s in samples])
        loss = head.nll(head(s1, dn, index), r)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if log_every and step % log_every == 0:
            print(f"  step {step}: nll {loss.item():.4f}", flush=True)
        if step in record_steps:
            recorded[step] = common.clone_state(head)
    head.config.trained = True
    return head.eval(), recorded


@torch.no_grad()
def predicted_std(head: ScaleHead, data: Residuals, name: str) -> np.ndarray:
    """(N, H, W) the head's std for output ``name`` of every tile of ``data``."""
    return np.stack([head.std(data.s1[i].numpy(), data.outputs[name][i].numpy(), name) for i in range(len(data.names))])


def spearman_per_tile(std: np.ndarray, outputs: torch.Tensor, s2: torch.Tensor) -> np.ndarray:
    return np.array([error_spearman(std[i], outputs[i].numpy(), s2[i].numpy()) for i in range(len(std))])


def coverage(std: np.ndarray, outputs, s2) -> float:
    """Fraction of pixels whose |error| is at most the predicted std (a Laplace expects 1 - e^-sqrt2 = 0.757)."""
    inside, total = 0, 0
    for i in range(len(std)):
        error = np.abs(band_mean(np.asarray(outputs[i])) - band_mean(np.asarray(s2[i])))
        inside += int((error <= std[i]).sum())
        total += error.size
    return inside / total


def cross_validate(data: Residuals, standardization: Standardization, grid: tuple[Settings, ...],
                   record_steps: tuple[int, ...], *, seed: int = 0, folds: int = 3) -> list[dict]:
    """Per setting and recorded step: the out-of-fold Spearman per output (mean over all pool tiles)
    and the Laplace coverage, each fold fitted on the other folds' tiles."""
    fold_index = cv.grouped_folds(data.names, folds)
    rows = []
    for number, settings in enumerate(grid):
        started = time.perf_counter()
        scores = {step: {name: np.full(len(data.names), np.nan) for name in OUTPUT_NAMES} for step in record_steps}
        stds = {step: {name: np.zeros((len(data.names), *data.s1.shape[-2:])) for name in OUTPUT_NAMES}
                for step in record_steps}
        for held in fold_index:
            train = data.subset([i for i in range(len(data.names)) if i not in held])
            test = data.subset(held)
            head, states = fit(train, settings, standardization, seed=seed, record_steps=record_steps)
            for step, state in states.items():
                head.load_state_dict(state)
                for name in OUTPUT_NAMES:
                    std = predicted_std(head, test, name)
                    stds[step][name][held] = std
                    scores[step][name][held] = spearman_per_tile(std, test.outputs[name], test.s2)
        for step in record_steps:
            row = {**asdict(settings), "steps": step,
                   **{f"{name}_spearman": float(np.nanmean(scores[step][name])) for name in OUTPUT_NAMES},
                   **{f"{name}_coverage": coverage(stds[step][name], data.outputs[name], data.s2)
                      for name in OUTPUT_NAMES}}
            row["mean_spearman"] = float(np.mean([row[f"{name}_spearman"] for name in OUTPUT_NAMES]))
            rows.append(row)
            print(_format_row(row), flush=True)
        print(f"  setting {number + 1}/{len(grid)} in {time.perf_counter() - started:.0f} s", flush=True)
    return rows


# Unfitted maps scored like the sources, as yardsticks (none is shipped), from a tile's outputs
# {name: (12, H, W) DN}, its real tile and the output whose error is ranked. "stage change" is what
# stages 2 and 3 changed together; "real deviation" needs the real tile, so no model can have it: it
# shows how far the error is the scene's own departure from its median.
YARDSTICKS = {
    "brightness": lambda outputs, real, name: band_mean(outputs[name]),
    "local contrast": lambda outputs, real, name: _local_contrast(outputs[name]),
    "stage change |opt_v3 - opt_v1|": lambda outputs, real, name: np.abs(band_mean(outputs["opt_v3"])
                                                                       - band_mean(outputs["opt_v1"])),
    "real deviation |real - median| (oracle)": lambda outputs, real, name: np.abs(band_mean(real)
                                                                                  - np.median(band_mean(real))),
}


def reference_rows(data: Residuals) -> list[dict]:
    """The yardsticks' mean Spearman per output over ``data``'s tiles (out of fold)."""
    rows = []
    for label, make in YARDSTICKS.items():
        row = {"source": label}
        for name in OUTPUT_NAMES:
            maps = np.stack([make({k: v[i].numpy() for k, v in data.outputs.items()}, data.s2[i].numpy(), name)
                             for i in range(len(data.names))])
            row[f"{name}_spearman"] = float(np.nanmean(spearman_per_tile(maps, data.outputs[name], data.s2)))
        rows.append(row)
    return rows


def _local_contrast(dn: np.ndarray) -> np.ndarray:
    import scipy.ndimage

    value = band_mean(dn)
    return np.sqrt(np.maximum(scipy.ndimage.uniform_filter(value**2, 5) - scipy.ndimage.uniform_filter(value, 5)**2, 0))


def _format_row(row: dict) -> str:
    spearman = " ".join(f"{name} {row[f'{name}_spearman']:.3f}" for name in OUTPUT_NAMES)
    cover = " ".join(f"{row[f'{name}_coverage']:.2f}" for name in OUTPUT_NAMES)
    return (f"  width {row['width']:2d} dilations {tuple(row['dilations'])!s:9} sar {row['with_sar']!s:5} "
            f"steps {row['steps']:4d}: spearman {spearman} (mean {row['mean_spearman']:.3f}); coverage {cover}")


def choose(rows: list[dict]) -> dict:
    """The row with the best mean Spearman over the outputs (ties: fewer steps, then narrower)."""
    return max(rows, key=lambda row: (round(row["mean_spearman"], 4), -row["steps"], -row["width"]))


# ----------------------------------------------------------------------------- records


def describe_source(data: Residuals, steps: dict[str, int], folds: int) -> str:
    return (f"Laplace NLL on out-of-fold outputs ({folds}-fold cross-validation grouped by scene) of {len(data.names)} "
            f"clear_land pool tiles at steps " + ", ".join(f"{k} {v}" for k, v in steps.items()))


# ----------------------------------------------------------------------------- the test report


def fold_chains(work_dir: Path) -> list:
    """The chain of each cross-validation fold: stage N from ``<work_dir>/stageN/fold<k>`` (the weights at the
    end of the fold run, not at the chosen step: fold runs keep only their last weights)."""
    from gac_pipeline.presets import load_preset

    chains = []
    for fold_dir in sorted((Path(work_dir) / "stage3").glob("fold[0-9]*"), key=lambda d: d.name):
        if fold_dir.name.endswith("_train"):
            continue
        chain = load_preset(str(fold_dir))
        chain.stage1 = load_preset(str(Path(work_dir) / "stage1" / fold_dir.name)).stage1
        chain.stage2 = load_preset(str(Path(work_dir) / "stage2" / fold_dir.name)).stage2
        chains.append(chain)
    return chains


def test_report(head: ScaleHead, preset: str, data_dir: Path, *, folds: list | None = None, uncertainty: int = 8,
                seed: int = 0, bootstrap: int = 2000) -> dict:
    """Spread, learned scale and combined, side by side on the clear test tiles: Spearman per output
    (mean and the ablation's cluster-bootstrap interval) and coverage (|error| <= std). With ``folds``
    (``fold_chains``) also the ensemble: the std over the preset's and the fold chains' outputs of
    ``band_mean``, alone and combined with the spread."""
    from eval.ablation import cluster_bootstrap, run_pipeline, scored_pairs
    from gac_pipeline.data import PairDataset, scene_clusters
    from gac_pipeline.presets import load_preset

    pairs = scored_pairs(data_dir)
    clusters = scene_clusters([info.name for info in pairs])  # over every evaluated tile, as the ablation does
    keep = [i for i, info in enumerate(pairs) if info.clear_land]
    pipeline = load_preset(preset)
    dataset = PairDataset([pairs[i] for i in keep])
    sources = ("spread", "learned", "combined") + (("ensemble", "ensemble + spread") if folds else ())
    per_tile = {source: {name: [] for name in OUTPUT_NAMES} for source in sources}
    yardstick_per_tile = {label: {name: [] for name in OUTPUT_NAMES} for label in YARDSTICKS}
    maps = {source: {name: [] for name in OUTPUT_NAMES} for source in sources}
    predictions, targets = {name: [] for name in OUTPUT_NAMES}, []
    for index in range(len(dataset)):
        item = dataset[index]
        out = run_pipeline(pipeline, item, seed=seed, uncertainty=uncertainty)
        members = [run_pipeline(chain, item, seed=seed) for chain in folds or ()]
        s1, target = item["s1"].numpy(), item["s2"].numpy()
        targets.append(target)
        outputs_now = {name: getattr(out, name) for name in OUTPUT_NAMES}
        for name in OUTPUT_NAMES:
            prediction = getattr(out, name)
            for label, make in YARDSTICKS.items():
                yardstick_per_tile[label][name].append(error_spearman(make(outputs_now, target, name), prediction,
                                                                      target))
            predictions[name].append(prediction)
            learned = head.std(s1, prediction, name)
            stds = {"spread": out.std[name], "learned": learned, "combined": combine(out.std[name], learned)}
            if members:
                outputs = [prediction, *(getattr(member, name) for member in members)]
                stds["ensemble"] = np.stack([band_mean(o) for o in outputs]).std(axis=0).astype(np.float32)
                stds["ensemble + spread"] = combine(out.std[name], stds["ensemble"])
            for source, std in stds.items():
                maps[source][name].append(std)
                per_tile[source][name].append(error_spearman(std, prediction, target))
    tile_clusters = [clusters[i] for i in keep]
    report = {"tiles": [pairs[i].name for i in keep], "clusters": tile_clusters, "uncertainty_variants": uncertainty,
              "sources": {}}
    for source in sources:
        report["sources"][source] = {}
        for name in OUTPUT_NAMES:
            estimate = cluster_bootstrap(per_tile[source][name], tile_clusters, seed=seed, resamples=bootstrap)
            report["sources"][source][name] = {
                "spearman": estimate.mean, "lo": estimate.lo, "hi": estimate.hi,
                "per_tile": [float(v) for v in per_tile[source][name]],
                "coverage": coverage(np.stack(maps[source][name]), predictions[name], targets),
                "median_std_dn": float(np.median(np.stack(maps[source][name]))),
                "median_abs_error_dn": float(np.median(np.stack([np.abs(band_mean(p) - band_mean(t)) for p, t in
                                                                 zip(predictions[name], targets, strict=True)]))),
            }
    report["paired"] = paired_gains(report, seed=seed, bootstrap=bootstrap)
    report["yardsticks"] = {}
    for label, values in yardstick_per_tile.items():
        report["yardsticks"][label] = {}
        for name in OUTPUT_NAMES:
            estimate = cluster_bootstrap(values[name], tile_clusters, seed=seed, resamples=bootstrap)
            gain = cluster_bootstrap(np.array(values[name]) - np.array(per_tile["spread"][name]), tile_clusters,
                                     seed=seed, resamples=bootstrap)
            report["yardsticks"][label][name] = {"spearman": estimate.mean, "lo": estimate.lo, "hi": estimate.hi,
                                                 "minus_spread": {"mean": gain.mean, "lo": gain.lo, "hi": gain.hi}}
    return report


def paired_gains(report: dict, *, seed: int = 0, bootstrap: int = 2000) -> dict:
    """Per output, each other source - spread per tile, averaged with the ablation's cluster
    bootstrap: {output: {"learned - spread": {mean, lo, hi}, ...}}."""
    from eval.ablation import cluster_bootstrap

    gains = {}
    for name in OUTPUT_NAMES:
        spread = np.array(report["sources"]["spread"][name]["per_tile"])
        gains[name] = {}
        for source in (s for s in report["sources"] if s != "spread"):
            difference = np.array(report["sources"][source][name]["per_tile"]) - spread
            estimate = cluster_bootstrap(difference, report["clusters"], seed=seed, resamples=bootstrap)
            gains[name][f"{source} - spread"] = {"mean": estimate.mean, "lo": estimate.lo, "hi": estimate.hi}
    return gains


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=common.data_folder, default=Path("data/bigearthnet"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/mini"),
                        help="train_mini's work folder: <stage>/fold*_train/heldout.safetensors")
    parser.add_argument("--steps-from", type=Path, default=Path("presets/mini/training.json"),
                        help="a preset's training.json: the steps its stages shipped (chosen_steps); the stage "
                             "configs beside it give the standardization")
    parser.add_argument("--out", type=Path, required=True, help="where the head and the records go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cv", action="store_true", help="cross-validate GRID (slow) and write cv.json")
    parser.add_argument("--test", metavar="PRESET", help="report the sources on the clear test tiles with this "
                                                         "preset's chain (its own head is not used) and, where "
                                                         "--work-dir has them, its fold chains as an ensemble")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_STEPS} steps (tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = chosen_steps(args.steps_from)
    pool = common.load_pool(args.data)
    data = residuals(pool, out_of_fold(args.work_dir, pool, steps))
    standardization = _standardization(args.steps_from.parent)
    record: dict = {"work_dir": str(args.work_dir), "steps": steps, "seed": args.seed,
                    "references": reference_rows(data)}
    for row in record["references"]:
        print(f"out of fold, {row['source']}: " + "  ".join(f"{name} {row[f'{name}_spearman']:.3f}"
                                                            for name in OUTPUT_NAMES), flush=True)
    if args.cv:
        grid = tuple(Settings(**{**asdict(s), "steps": SMOKE_STEPS}) for s in GRID[:1]) if args.smoke else GRID
        record_steps = (SMOKE_STEPS,) if args.smoke else RECORD_STEPS
        rows = cross_validate(data, standardization, grid, record_steps, seed=args.seed)
        best = choose(rows)
        print("chosen:", _format_row(best))
        result = {"rows": rows, "chosen": best, "references": record["references"], "steps": steps}
        (args.out / CV_FILE).write_text(json.dumps(result, indent=2) + "\n")
        record["cv"] = {"chosen": best}
    settings = Settings(**{**asdict(SETTINGS), "steps": SMOKE_STEPS}) if args.smoke else SETTINGS
    started = time.perf_counter()
    head, _ = fit(data, settings, standardization, seed=args.seed,
                  source=describe_source(data, steps, len(list((args.work_dir / "stage1").glob("fold*_train")))))
    print(f"trained the head ({sum(p.numel() for p in head.parameters())} parameters) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    head.save(args.out / SCALE_HEAD_DIR)
    record.update(settings=asdict(settings), parameters=sum(p.numel() for p in head.parameters()))
    if args.test:
        report = test_report(head, args.test, args.data, folds=fold_chains(args.work_dir), seed=args.seed)
        (args.out / TEST_FILE).write_text(json.dumps(report, indent=2) + "\n")
        for source, entry in report["sources"].items():
            print(f"test {source:9s}: " + "  ".join(
                f"{name} {v['spearman']:.3f} [{_fmt(v['lo'])}, {_fmt(v['hi'])}] cov {v['coverage']:.2f}"
                for name, v in entry.items()))
        for name, entry in report["paired"].items():
            print(f"test {name} paired: " + "  ".join(f"{label} {v['mean']:+.3f} [{_fmt(v['lo'])}, {_fmt(v['hi'])}]"
                                                      for label, v in entry.items()))
        for label, entry in report["yardsticks"].items():
            print(f"test yardstick {label}: " + "  ".join(
                f"{name} {v['spearman']:.3f} [{_fmt(v['lo'])}, {_fmt(v['hi'])}] - spread {v['minus_spread']['mean']:+.3f} "
                f"[{_fmt(v['minus_spread']['lo'])}, {_fmt(v['minus_spread']['hi'])}]" for name, v in entry.items()))
    (args.out / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def _fmt(value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _standardization(preset_dir: Path) -> Standardization:
    """The preset's stage-1 standardization (every stage of the mini preset shares it)."""
    config = json.loads((Path(preset_dir) / "stage1" / "config.json").read_text())
    return Standardization.from_dict(config["standardization"])


if __name__ == "__main__":
    main()
