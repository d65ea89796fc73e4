"""Train stage 2 (Prithvi backbone + ConvNeXt head, month/biome FiLM) to refine opt_v1 into opt_v2.

Usage::

    python -m training.train_stage2 --init-from /tmp/stage1 --opt-v1 /tmp/cv/opt_v1 --out /tmp/stage2 \
        [--config training/configs/mini/stage2.yaml] [--lora-rank 8] [--load-in-8bit] [--unfreeze-last 2]

Stage 2's role is realism: restore the texture a per-pixel regression blurs away. Inputs are
stored stage-1 outputs (``--opt-v1``: out-of-fold for every training tile, written by
``train_mini``'s cross-validation or ``training.precompute_stage1``); the target is the real
tile. Loss: ``--l1-weight`` x L1 (+ ``--l2-weight`` x L2) in standardized units +
``--fft-weight`` x L1 between Fourier amplitude spectra (texture at the right scales, wherever it
sits) + ``--sharpness-weight`` x the band-wise gradient-energy match + ``--structure-weight`` x
(1 - Pearson r of luminance against the real tile: the sharper picture keeps the layout) + ``--adv-weight`` x a PatchGAN
critic's hinge term (the critic, ``losses.PatchDiscriminator``, takes one step per batch beside the
stage; it is not saved) + ``--ssim-weight`` x (1 - SSIM) + ``--sam-weight`` x spectral angle (+ ``--lpips-weight``
x LPIPS, only where its weights exist locally). The head's output starts at zero, so step 0 is
the identity. Month and biome are each replaced by "unknown" with probability
``--cond-dropout``, so the "unknown" rows are trained; the months and biomes seen are recorded
in the stage config, and others map to "unknown" at inference.

Trains on every clear non-test tile; ``--folds K --fold F`` is a cross-validation fold run
(``training.cv``). A reBEN folder (or ``--stream``) is streamed (``training.streaming``): each
pair and its stored opt_v1 (``precompute_stage1``'s one file per pair) are read per batch and
augmented together.

Backbone training (``--backbone``): ``lora`` (adapters on attention, the default for a
pretrained Prithvi), ``frozen`` (head only), ``full`` (every weight: the default for the
random-init backbone of the mini preset, where adapters on random weights would be pointless);
``--unfreeze-last N`` also trains the last N blocks. ``--load-in-8bit`` runs the frozen backbone
in int8 (bitsandbytes); the saved stage holds the full-precision base plus the trained weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import gac_pipeline  # noqa: F401  (torchvision fix before terratorch)
from gac_pipeline.configs import Stage2Config
from gac_pipeline.metrics import lpips_available
from gac_pipeline.presets import load_preset
from gac_pipeline.stages.stage2_prithvi import Stage2Prithvi
from training import common, cv, loop, losses, streaming

BACKBONE_CHOICES = ("auto", "lora", "frozen", "full")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop.add_loop_arguments(parser, max_steps=300, lr=1e-3, warmup=0.1)
    parser.add_argument("--init-from", required=True, help="pipeline folder/preset with the trained stage 1")
    parser.add_argument("--opt-v1", type=Path, required=True, help="folder with stored opt_v1 (train_mini's cross-validation, or "
                        "training.precompute_stage1)")
    parser.add_argument("--backbone", choices=BACKBONE_CHOICES, default="auto")
    parser.add_argument("--unfreeze-last", type=int, default=0, help="also train the last N backbone blocks")
    parser.add_argument("--lora-rank", type=int, default=None, help="override the config's LoRA rank")
    parser.add_argument("--lora-alpha", type=int, default=None)
    parser.add_argument("--lora-targets", default=None, help="regex over module names")
    parser.add_argument("--load-in-8bit", action="store_true", help="int8 frozen backbone (bitsandbytes)")
    parser.add_argument("--no-conditioning", action="store_true", help="train without month/biome")
    parser.add_argument("--cond-dropout", type=float, default=0.2,
                        help="probability of replacing month and biome (each) by unknown in a training sample")
    parser.add_argument("--fft-weight", type=float, default=0.0, help="weight of the Fourier-amplitude L1")
    parser.add_argument("--sharpness-weight", type=float, default=0.0,
                        help="weight of the gradient-energy match (|ln| of the sharpness ratio)")
    parser.add_argument("--structure-weight", type=float, default=0.0,
                        help="weight of 1 - Pearson r of luminance against the real tile (structure_r's twin)")
    parser.add_argument("--adv-weight", type=float, default=0.0,
                        help="weight of a PatchGAN critic's hinge term (the critic trains beside the stage)")
    parser.add_argument("--l1-weight", type=float, default=1.0)
    parser.add_argument("--l2-weight", type=float, default=0.0)
    parser.add_argument("--ssim-weight", type=float, default=0.1)
    parser.add_argument("--sam-weight", type=float, default=0.1)
    parser.add_argument("--lpips-weight", type=float, default=0.0)
    args = loop.parse_with_config(parser, argv, "stage2")
    if args.lpips_weight > 0:
        available, reason = lpips_available()
        if not available:
            parser.error(f"--lpips-weight: {reason}")
    return args


def build_stage2(args: argparse.Namespace, base_config: Stage2Config) -> Stage2Prithvi:
    """A fresh stage 2 (seeded) with the parameters ``--backbone``/``--unfreeze-last`` ask to train."""
    config = Stage2Config.from_dict(args.model_config) if args.model_config else base_config
    backbone = args.backbone if args.backbone != "auto" else ("lora" if config.pretrained else "full")
    overrides = {k: v for k, v in (("lora_rank", args.lora_rank), ("lora_alpha", args.lora_alpha),
                                   ("lora_targets", args.lora_targets)) if v is not None}
    if backbone != "lora":
        overrides["lora_rank"] = 0
    config = Stage2Config.from_dict({**config.to_dict(), **overrides, "trained": False, "load_in_8bit": False})
    if backbone == "lora" and config.lora_rank < 1:
        raise ValueError("--backbone lora needs --lora-rank >= 1")
    if args.load_in_8bit and (backbone == "full" or args.unfreeze_last):
        raise ValueError("--load-in-8bit freezes the backbone in int8: use --backbone lora or frozen, "
                         "without --unfreeze-last")
    torch.manual_seed(args.seed)
    stage = Stage2Prithvi.build(config)
    for name, parameter in stage.prithvi.named_parameters():
        parameter.requires_grad = backbone == "full" or "lora_" in name
    if args.unfreeze_last:
        for block in list(stage.prithvi.blocks)[-args.unfreeze_last:]:
            block.requires_grad_(True)
    return stage


def drop_conditioning(values: torch.Tensor, draws: torch.Tensor, probability: float) -> torch.Tensor:
    """Replace each value by 0 ("unknown") where its uniform draw is below ``probability``."""
    return torch.where(draws >= probability, values, torch.zeros_like(values))


def make_loss(args: argparse.Namespace, std):
    critic = losses.PatchDiscriminator() if args.adv_weight else None
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.lr, betas=(0.5, 0.9)) if critic else None

    def loss_fn(model, batch):
        month = biome = None
        if not args.no_conditioning:
            month = drop_conditioning(batch["month"], batch["uniform"][:, 0], args.cond_dropout)
            biome = drop_conditioning(batch["biome"], batch["uniform"][:, 1], args.cond_dropout)
        pred, target = model(batch["opt_v1"], s1_db=batch["s1"], month=month, biome=biome), batch["s2"]
        loss = args.l1_weight * losses.l1(pred, target, std)
        for weight, term in ((args.l2_weight, lambda: losses.l2(pred, target, std)),
                             (args.fft_weight, lambda: losses.fourier_amplitude_l1(pred, target, std)),
                             (args.sharpness_weight, lambda: losses.gradient_energy_match(pred, target)),
                             (args.structure_weight, lambda: losses.structure_loss(pred, target)),
                             (args.ssim_weight, lambda: losses.ssim_loss(pred, target)),
                             (args.sam_weight, lambda: losses.spectral_angle(pred, target)),
                             (args.lpips_weight, lambda: losses.lpips_loss(pred, target))):
            if weight:
                loss = loss + weight * term()
        if critic is not None:
            critic.to(pred.device)
            loss = loss + args.adv_weight * losses.adversarial_step(critic, critic_optimizer, std.s2(pred), std.s2(target))
        return loss

    return loss_fn


def full_precision_copy(stage: Stage2Prithvi, base_state: dict) -> Stage2Prithvi:
    """Rebuild the stage unquantized: the saved base weights plus every trained weight of ``stage``."""
    copy = Stage2Prithvi.build(stage.config)
    copy.load_state_dict(base_state)
    trained = {n: p.detach() for n, p in stage.named_parameters() if p.requires_grad}
    copy.load_state_dict(trained, strict=False)
    return copy


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    run = loop.setup_distributed(args.device)
    common.seed_all(args.seed)
    if streaming.wanted(args):  # e.g. reBEN: pairs and their stored opt_v1 read from disk per batch
        train, held_out = streaming.open_training_data(args, stored={"opt_v1": args.opt_v1}), None
        inputs = f"stage-1 outputs ({streaming.stored_producer(args.opt_v1, 'opt_v1')})"
    else:  # the bundled tiles: in memory, as GAC-mini was trained
        pool = common.attach(common.load_pool(args.data, clear_only=not args.all_tiles), args.opt_v1, "opt_v1")
        train, held_out = cv.split_pool(pool, args.folds, args.fold)
        inputs = "out-of-fold stage-1 outputs"

    stage = build_stage2(args, load_preset(str(args.init_from)).stage2.config)
    # What the embeddings are trained on; anything else maps to "unknown" (0) at inference. Row 0
    # itself is trained through dropout, or when the data has unknown values.
    unknown = [0] if args.cond_dropout > 0 else []
    stage.config.seen_months = [0] if args.no_conditioning else sorted({*unknown, *train.month.tolist()})
    stage.config.seen_biomes = [0] if args.no_conditioning else sorted({*unknown, *train.biome.tolist()})
    base_state = common.clone_state(stage) if args.load_in_8bit else None
    if args.load_in_8bit:
        stage.quantize_backbone()
    stage.to(run.device)
    if run.is_main:
        print(f"stage 2: {len(train)} training tiles" + (f", fold {args.fold} held out ({len(held_out)})" if held_out
                                                       else "") + f"; trains {stage.trainable_parameter_count() / 1e6:.2f}"
              f" M of {sum(p.numel() for p in stage.parameters()) / 1e6:.2f} M parameters")

    def predict(tiles):
        kwargs = {} if args.no_conditioning else {"month": tiles.month, "biome": tiles.biome}
        return common.predict_tiles(lambda opt_v1, s1, **kw: stage(opt_v1, s1_db=s1, **kw), tiles.extras["opt_v1"],
                                    tiles.s1, device=run.device, **kwargs)

    recorder = cv.recorder_for(held_out, predict, args)
    result = loop.fit(stage, loss_fn=make_loss(args, stage.config.standardization), tiles=train, evaluate=recorder,
                      args=args, run=run, desc="stage 2")
    summary = {"steps": result.steps, "train_tiles": len(train), "held_out_tiles": len(held_out or []),
               "wall_s": result.wall_s, "out": args.out}
    if run.is_main:
        if recorder is not None:
            recorder.save(args.work_dir, train.names, args)
        stage = stage.cpu()
        if base_state is not None:
            stage = full_precision_copy(stage, base_state)
        terms = " + ".join(name for name, weight in (("L1", args.l1_weight), ("L2", args.l2_weight),
                                                     ("Fourier amplitude", args.fft_weight),
                                                     ("gradient-energy match", args.sharpness_weight),
                                                     ("luminance correlation", args.structure_weight),
                                                     ("PatchGAN critic", args.adv_weight),
                                                     ("SSIM", args.ssim_weight),
                                                     ("spectral angle", args.sam_weight), ("LPIPS", args.lpips_weight))
                           if weight)
        fold = f", fold {args.fold} of {args.folds} held out" if held_out else ""
        text = (f"trained on {inputs} of {len(train)} real tiles (train + validation splits{fold}) "
                f"for {result.steps} steps{' (identity: no step beat it in cross-validation)' if not result.steps else ''}"
                f", {terms}")
        common.write_pipeline(args, {"2": stage}, "2", text)
        print(f"stage 2 {text}\nwrote {args.out} ({result.wall_s:.0f} s)")
    loop.teardown_distributed()
    return summary


if __name__ == "__main__":
    main()
