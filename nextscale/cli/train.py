"""`nextscale train-tokenizer`, `train`, `evaluate`, `quickstart`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nextscale.cli.common import UsageError


def _add_data(parser: argparse.ArgumentParser, image_size: int) -> None:
    from nextscale.data.build import DATASETS

    group = parser.add_argument_group("data")
    group.add_argument("--data", default="fashion-mnist", help=f"{' | '.join(DATASETS)} | path of an image folder")
    group.add_argument("--data-root", help="where the data lives when --data names a built-in set")
    group.add_argument("--image-size", type=int, default=image_size)
    group.add_argument("--hflip", action="store_true", help="random horizontal flips")
    group.add_argument("--allow-single-class", action="store_true", help="accept an image folder with one class")


def _add_loop(parser: argparse.ArgumentParser, out: str, steps: int, batch: int, lr: float, wd: float) -> None:
    group = parser.add_argument_group("optimisation")
    group.add_argument("--out", default=out, help="run directory (checkpoints, logs, model/); rerun to resume")
    group.add_argument("--steps", type=int, default=steps)
    group.add_argument("--batch-size", type=int, default=batch, help="global batch (all processes)")
    group.add_argument("--grad-accumulation", type=int, default=1)
    group.add_argument("--base-lr", type=float, default=lr, help="lr per 256 images (lr = base × batch / 256)")
    group.add_argument("--warmup-steps", type=int)
    group.add_argument("--lr-schedule", default="lin0")
    group.add_argument("--final-lr-ratio", type=float, default=0.01)
    group.add_argument("--weight-decay", type=float, default=wd)
    group.add_argument("--final-weight-decay", type=float)
    group.add_argument("--grad-clip", type=float, default=2.0)
    group.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16")
    group.add_argument("--ema-decay", type=float, default=0.0)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--log-every", type=int, default=25)
    group.add_argument("--eval-every", type=int, default=500)
    group.add_argument("--eval-batches", type=int, default=10)
    group.add_argument("--save-every", type=int, default=250)
    group.add_argument("--keep-last", type=int, default=2)
    group.add_argument("--wrap", choices=["ddp", "fsdp", "none"], default="ddp")
    group.add_argument("--no-progress", action="store_true")


def loop_config(args):
    from nextscale.train.loop import LoopConfig

    return LoopConfig(
        output_dir=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accumulation=args.grad_accumulation,
        base_lr=args.base_lr,
        warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule,
        final_lr_ratio=args.final_lr_ratio,
        weight_decay=args.weight_decay,
        final_weight_decay=args.final_weight_decay,
        grad_clip=args.grad_clip,
        precision=args.precision,
        ema_decay=args.ema_decay,
        seed=args.seed,
        log_every=args.log_every,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        save_every=args.save_every,
        keep_last=args.keep_last,
        wrap=args.wrap,
        progress=not args.no_progress,
    )


def data_config(args):
    from nextscale.data.build import DataConfig

    return DataConfig(
        name=args.data,
        image_size=args.image_size,
        root=args.data_root,
        seed=args.seed,
        hflip=args.hflip,
        allow_single_class=args.allow_single_class,
    )


def cmd_train_tokenizer(args) -> None:
    from nextscale.train.loop import run
    from nextscale.train.tokenizer_task import TokenizerTask, TokenizerTrainConfig

    config = TokenizerTrainConfig(
        preset=args.preset,
        vocab_size=args.vocab_size,
        patch_nums=args.patch_nums,
        l1_weight=args.l1_weight,
        l2_weight=args.l2_weight,
        vq_weight=args.vq_weight,
        perceptual_weight=args.perceptual_weight,
        perceptual_weights=args.perceptual_weights,
        gan_weight=args.gan_weight,
        gan_start_step=args.gan_start_step,
        dead_code_every=args.dead_code_every,
        data=data_config(args),
    )
    export = run(TokenizerTask(config), loop_config(args))
    print(f"tokenizer written to {export}")


def cmd_train(args) -> None:
    from nextscale.train.loop import run
    from nextscale.train.var_task import VARTask, VARTrainConfig

    if not Path(args.tokenizer).is_dir():
        raise UsageError(f"tokenizer directory not found: {args.tokenizer} (train one with nextscale train-tokenizer)")
    config = VARTrainConfig(
        tokenizer=args.tokenizer,
        preset=args.preset,
        depth=args.depth,
        label_dropout=args.label_dropout,
        label_smoothing=args.label_smoothing,
        cache_tokens=not args.no_token_cache,
        progressive=args.progressive,
        data=data_config(args),
    )
    export = run(VARTask(config), loop_config(args))
    print(f"model written to {export}")


def cmd_quickstart(args) -> None:
    from nextscale.cli import main  # the three steps are ordinary subcommands
    from nextscale.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT

    data = args.data or ("fashion-mnist" if Path(DEFAULT_FASHION_MNIST_ROOT).is_dir() else "procedural")
    out = Path(args.out)
    print(f"quickstart: training a tokenizer and a small VAR on {data} (32 px) in {out}")
    common = ["--data", data, "--image-size", "32", "--seed", str(args.seed), "--eval-batches", "2", "--batch-size",
              "32", "--eval-every", "0", "--log-every", "50"]  # fmt: skip
    main(
        ["train-tokenizer", "--out", str(out / "tokenizer"), "--steps", str(args.tokenizer_steps), "--base-lr", "4e-3",
         "--weight-decay", "0", *common]
    )  # fmt: skip
    main(
        ["train", "--tokenizer", str(out / "tokenizer" / "model"), "--out", str(out / "var"), "--preset", "fmnist-tiny",
         "--steps", str(args.var_steps), "--base-lr", "8e-3", "--no-token-cache", *common]
    )  # fmt: skip
    grid = out / "samples.png"
    main(["sample", "--model", str(out / "var" / "model"), "--per-class", "8", "--cfg", "2", "--out", str(grid)])
    print(f"done: class-conditional samples (one row per class) are in {grid}")


def cmd_evaluate(args) -> None:
    import json

    from nextscale.eval.metrics import evaluate_tokenizer, evaluate_transformer
    from nextscale.pretrained import from_pretrained

    if not Path(args.model).is_dir():
        raise UsageError(f"model directory not found: {args.model}")
    tokenizer, model = from_pretrained(args.model, args.device)
    if tokenizer is None:
        raise UsageError(f"{args.model} holds no tokenizer")
    dataset = data_config(args).build(args.split)
    results = {"tokenizer": evaluate_tokenizer(tokenizer, dataset, limit=args.limit, progress=True)}
    if model is not None:
        dtype = torch.bfloat16 if args.bf16 else None
        results["transformer"] = evaluate_transformer(
            model, tokenizer, dataset, limit=args.limit, autocast_dtype=dtype, progress=True
        )
    text = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


# ---- parser ---------------------------------------------------------------------------------------------------------
