"""The training loop every stage script shares: options, schedule, resume, DDP.

One loop, so the stages and the one-network control train under the same rules (the control
must get the same augmentation, loss family and step budget to be a fair comparison):

- AdamW over the parameters that require grad, linear warm-up then cosine decay, laid over
  ``--schedule-steps`` (default ``--max-steps``);
- gradient accumulation, bf16 autocast with ``--amp`` (off by default: CPUs gain little);
- optionally (``--ema``) a moving average of the weights is what gets evaluated and kept:
  with a few dozen tiles, single steps swing by dB;
- in a cross-validation fold run, the script's ``evaluate(step)`` records the held-out tiles'
  predictions at step 0 and every ``--eval-every`` steps (``training.cv``); the loop itself
  never picks a step: cross-validation does, and the final fit keeps its last weights;
- a resumable checkpoint (``weights_only`` loadable) and a CSV log in ``--work-dir``;
- ``torch.distributed`` when launched by ``torchrun`` (gloo on CPU, nccl on GPUs): the model
  is wrapped in DistributedDataParallel, each rank draws its own batches, rank 0 evaluates,
  logs and saves.

Batches of tiles held in memory are drawn from a generator re-seeded from (seed, rank, step) at
every step; streamed batches (``training.streaming``) come in a seeded order that a resumed run
enters at its step. Either way a resumed run sees exactly the batches an uninterrupted run would
have seen.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn

from gac_pipeline.data import DEFAULT_DATA_DIR
from training import common, streaming


def add_loop_arguments(parser: argparse.ArgumentParser, *, max_steps: int, lr: float, batch_size: int = 16,
                       crop: int = 64, eval_every: int = 50, warmup: float = 0.3) -> None:
    """The options every training script has, with that script's defaults."""
    parser.add_argument("--data", type=common.data_folder, default=DEFAULT_DATA_DIR,
                        help="dataset folder: pair folders with index.csv, or reBEN (metadata.parquet; streamed)")
    parser.add_argument("--stream", action="store_true",
                        help="read pairs from disk per batch instead of loading the splits into memory "
                             "(always on for a reBEN folder)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes when streaming")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (a pipeline folder for stages)")
    parser.add_argument("--work-dir", type=Path, default=None, help="checkpoint + log (default <out>_train)")
    parser.add_argument("--config", type=Path, default=None, help="YAML: model config section and option defaults")
    parser.add_argument("--max-steps", type=int, default=max_steps)
    parser.add_argument("--schedule-steps", type=int, default=None,
                        help="lay the learning-rate schedule over this many steps (default --max-steps): "
                             "a final fit that stops at the step cross-validation chose, on the schedule it was "
                             "chosen on")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="tiles per step and process")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches accumulated per optimizer step")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=float, default=warmup, help="share of the steps spent warming up")
    parser.add_argument("--crop", type=int, default=crop, help="training crop size (multiple of 16)")
    parser.add_argument("--eval-every", type=int, default=eval_every)
    parser.add_argument("--ema", type=float, default=0.0,
                        help="decay of an exponential moving average of the weights, which is what gets "
                             "evaluated and kept (0: off; e.g. 0.98 steadies noisy small-data training)")
    parser.add_argument("--paste-batch", type=float, default=0.0,
                        help="paired copy-paste: chance per sample that an ellipse of another sample's SAR and "
                             "optical is pasted in (tiles in memory only; 0: off)")
    parser.add_argument("--paste-water", type=float, default=0.0,
                        help="chance per sample that an ellipse of a calm open-water tile is pasted in "
                             "(common.calm_water; 0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from <work-dir>/checkpoint.pt")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="checkpoint and stop after this step, to --resume later (e.g. within a job time limit)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (worth it on recent GPUs)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--all-tiles", action="store_true", help="also use tiles not marked clear_land")
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds, grouped by scene cluster")
    parser.add_argument("--fold", type=int, default=None,
                        help="a fold run: train without this fold (0-based) and record predictions for it every "
                             "--eval-every steps (training.cv); without it, train on every training tile")


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None, section: str) -> argparse.Namespace:
    """Parse options; ``--config`` YAML may hold a ``section`` mapping (the model config) and
    option defaults by underscore name. Explicit flags win over the YAML.

    The model config ends up in ``args.model_config`` (None when the YAML has none).
    """
    args = parser.parse_args(argv)
    model_config = None
    if args.config is not None:
        settings = yaml.safe_load(args.config.read_text()) or {}
        model_config = settings.pop(section, None)
        unknown = sorted(set(settings) - set(vars(args)))
        if unknown:
            parser.error(f"{args.config}: unknown keys {unknown}")
        parser.set_defaults(**settings)
        args = parser.parse_args(argv)
    args.model_config = model_config
    if args.crop % 16:
        parser.error(f"--crop must be a multiple of 16 (TerraMind/Prithvi patches), got {args.crop}")
    if args.grad_accum < 1 or args.max_steps < 0:
        parser.error("--grad-accum must be at least 1 and --max-steps at least 0")
    if args.fold is not None and not 0 <= args.fold < args.folds:
        parser.error(f"--fold must be in 0..{args.folds - 1}")
    if not 0.0 <= args.ema < 1.0:
        parser.error(f"--ema must be in [0, 1), got {args.ema}")
    if args.schedule_steps is None:
        args.schedule_steps = args.max_steps
    if args.schedule_steps < args.max_steps:
        parser.error(f"--schedule-steps {args.schedule_steps} is shorter than --max-steps {args.max_steps}")
    if args.work_dir is None:
        args.work_dir = args.out.parent / f"{args.out.name}_train"
    return args


@dataclass
class Distributed:
    """Where this process sits in a (possibly single-process) run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> Distributed:
    """Join the process group ``torchrun`` describes in the environment, or run alone.

    ``torchrun --nproc_per_node N -m training.train_stage2 ...`` sets WORLD_SIZE, RANK and
    LOCAL_RANK; multi-node runs add ``--nnodes``/``--rdzv-endpoint`` and need nothing else here.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and world_size > 1:
        device = f"cuda:{local_rank}"
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Distributed(rank=rank, world_size=world_size, device=torch_device)


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up from lr/25 to lr, then cosine decay to lr/1e4 (the one-cycle shape)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.04 + 0.96 * step / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class FitResult:
    steps: int  # steps run (including resumed ones)
    scores: dict[str, float]  # evaluate()'s scores at the last evaluated step ({} without evaluate)
    start_scores: dict[str, float]  # at step 0
    wall_s: float


LossFn = Callable[[nn.Module, dict], torch.Tensor]


def fit(model: nn.Module, *, loss_fn: LossFn, tiles: common.TileSet | streaming.StreamingPairs,
        evaluate: Callable[[int], dict[str, float]] | None, args: argparse.Namespace, run: Distributed,
        desc: str, water: common.TileSet | None = None) -> FitResult:
    """Train ``model`` in place for ``--max-steps`` and leave the final weights loaded (their
    moving average with ``--ema``).

    Args:
        model: The module to train (on ``run.device``); only parameters with requires_grad train.
        loss_fn: ``loss_fn(forward_module, batch) -> scalar``; call ``forward_module`` (the DDP
            wrapper when distributed) for the forward pass so gradients are synchronised.
        tiles: Training tiles in memory, batches from :func:`common.sample_batch`; or pairs read from
            disk, batches from :func:`streaming.batches` (``--workers``, one share per rank). Batches
            are moved to the device.
        evaluate: ``evaluate(step)`` -> scores of ``model`` as it is now (the moving average with
            ``--ema``), called in eval mode without grad on rank 0 at step 0 and every
            ``--eval-every`` steps; None for a final fit, which nothing judges.
        args: Options from :func:`add_loop_arguments`.
        run: From :func:`setup_distributed`.
        desc: Progress-bar label.
        water: Donor tiles for ``--paste-water`` (:func:`common.water_donors`); needed when it is on.
    """
    if args.paste_water and not water:
        raise ValueError(f"{desc}: --paste-water {args.paste_water} needs calm open-water donor tiles; none given "
                         "(train_stage1 and train_control find them in --data)")
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"{desc}: nothing to train (no parameter requires grad)")
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=args.weight_decay)
    warmup_steps = int(args.warmup * args.schedule_steps)
    scheduler = warmup_cosine(optimizer, args.schedule_steps, warmup_steps)
    forward_module = model
    if run.world_size > 1:
        # Unused parameters exist (e.g. TerraMind's embeddings of modalities not fed in).
        forward_module = nn.parallel.DistributedDataParallel(
            model, device_ids=[run.device.index] if run.device.type == "cuda" else None,
            find_unused_parameters=True)

    checkpoint_path = args.work_dir / common.CHECKPOINT_FILE
    log_path = args.work_dir / common.LOG_FILE
    state = _Progress()
    if args.resume:
        state = _resume(checkpoint_path, model, optimizer, scheduler, args)
    elif args.ema:
        state.ema_state = common.trainable_state(model)
    if run.is_main:
        if not args.resume and log_path.exists():
            log_path.unlink()  # a fresh run must not append to an old run's log
        logger = common.CsvLogger(log_path, ["step", "train_loss", *LOGGED_SCORES, "lr", "elapsed_s"])
        if not args.resume:
            state.start_scores = state.scores = _evaluate(model, evaluate, 0)
            logger.log(step=0, lr=scheduler.get_last_lr()[0], elapsed_s=0.0,
                       **{k: state.scores.get(k) for k in LOGGED_SCORES})

    if isinstance(tiles, common.TileSet):
        generator = torch.Generator()

        def next_batch(step: int, micro: int) -> dict:
            generator.manual_seed(_batch_seed(args.seed, run.rank, step, micro))
            batch = common.sample_batch(tiles, args.batch_size, args.crop, generator)
            batch = common.paste_blobs(batch, args.paste_batch, generator)
            if args.paste_water:
                donor = common.sample_batch(water, args.batch_size, args.crop, generator)
                batch = common.paste_blobs(batch, args.paste_water, generator, donor)
            return batch
    elif args.paste_batch or args.paste_water:
        raise ValueError("--paste-batch and --paste-water need the tiles in memory, not streamed")
    else:
        stream = streaming.batches(tiles, batch_size=args.batch_size, workers=args.workers, rank=run.rank,
                                   world_size=run.world_size, seed=args.seed, start=state.step * args.grad_accum)

        def next_batch(step: int, micro: int) -> dict:
            return next(stream)

    start_time, losses = time.perf_counter(), []
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=args.amp)
    bar = common.progress(state.step, args.max_steps, desc, disable=not run.is_main)
    model.train()
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(args.grad_accum):
            batch = _to_device(next_batch(step, micro), run.device)
            with autocast:
                loss = loss_fn(forward_module, batch) / args.grad_accum
            loss.backward()
            total += loss.item()
        optimizer.step()
        scheduler.step()
        if state.ema_state is not None:
            _update_ema(state.ema_state, model, args.ema)
        losses.append(total)
        state.step = step
        pausing = step == args.stop_after
        if step % args.eval_every and step != args.max_steps and not pausing:
            continue
        if run.is_main:
            with _weights(model, state.ema_state):  # the average is what is judged and kept
                state.scores = _evaluate(model, evaluate, step)
            logger.log(step=step, train_loss=sum(losses) / len(losses), lr=scheduler.get_last_lr()[0],
                       elapsed_s=time.perf_counter() - start_time, **{k: state.scores.get(k) for k in LOGGED_SCORES})
            common.save_checkpoint(checkpoint_path, model=common.trainable_state(model), optimizer=optimizer.state_dict(),
                                   scheduler=scheduler.state_dict(), schedule_steps=args.schedule_steps, **state.to_dict())
            bar.set_postfix(loss=f"{sum(losses) / len(losses):.4f}")
        losses = []
        if pausing:
            break
    bar.close()
    if state.ema_state is not None:
        model.load_state_dict(state.ema_state, strict=False)  # identical on every rank: DDP keeps weights in step
    model.eval()
    return FitResult(steps=state.step, scores=state.scores, start_scores=state.start_scores,
                     wall_s=time.perf_counter() - start_time)


LOGGED_SCORES = ["psnr", "ssim", "sar_edge", "sar_edge_gap"]


@dataclass
class _Progress:
    step: int = 0
    scores: dict = field(default_factory=dict)
    start_scores: dict = field(default_factory=dict)
    ema_state: dict | None = None

    def to_dict(self) -> dict:
        return {"step": self.step, "scores": self.scores, "start_scores": self.start_scores, "ema": self.ema_state}


@torch.no_grad()
def _update_ema(average: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    for name, parameter in model.named_parameters():
        if name in average:
            average[name].lerp_(parameter.detach(), 1.0 - decay)


@contextmanager
def _weights(model: nn.Module, state: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """Temporarily load ``state`` (e.g. the moving average) into ``model``; None changes nothing."""
    if state is None:
        yield
        return
    current = common.trainable_state(model)
    model.load_state_dict(state, strict=False)
    try:
        yield
    finally:
        model.load_state_dict(current, strict=False)


def _batch_seed(seed: int, rank: int, step: int, micro: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + step * 101 + micro) % 2**63


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def _evaluate(model: nn.Module, evaluate: Callable[[int], dict[str, float]] | None, step: int) -> dict[str, float]:
    if evaluate is None:
        return {}
    model.eval()
    try:
        return evaluate(step)
    finally:
        model.train()


def _resume(path: Path, model: nn.Module, optimizer, scheduler, args) -> _Progress:
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    saved = common.load_checkpoint(path)
    model.load_state_dict(saved["model"], strict=False)
    optimizer.load_state_dict(saved["optimizer"])
    saved_schedule = int(saved.get("schedule_steps", saved.get("max_steps")))
    if saved_schedule == args.schedule_steps:
        scheduler.load_state_dict(saved["scheduler"])
    else:  # a longer or shorter run: follow the new schedule from where the old one stopped
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for _ in range(min(int(saved["step"]), args.schedule_steps)):
                scheduler.step()
        print(f"--resume: schedule of {saved_schedule} -> {args.schedule_steps} steps, re-laid")
    state = _Progress(step=int(saved["step"]), scores=saved.get("scores") or {},
                      start_scores=saved.get("start_scores") or {}, ema_state=saved.get("ema"))
    print(f"resumed from {path} at step {state.step}")
    return state
