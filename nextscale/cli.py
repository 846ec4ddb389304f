"""The `nextscale` command: parses arguments, builds objects, calls the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

logger = logging.getLogger("nextscale")


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


# ---- shared argument groups -----------------------------------------------------------------------------------------


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (either --model, or --vae with --var)")
    group.add_argument("--model", help="directory written by save_pretrained / nextscale train")
    group.add_argument("--vae", help="official tokenizer checkpoint (vae_ch160v4096z32.pth) or 'vqvae' to download")
    group.add_argument("--var", help="official transformer checkpoint (var_d16.pth …) or a name like var-d16")
    group.add_argument("--num-heads", type=int, help="heads of an official plain-attention checkpoint")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    group.add_argument("--bf16", action="store_true", help="run the transformer and decoder under bf16 autocast")


def _add_sampling(parser: argparse.ArgumentParser, cfg: float = 4.0) -> None:
    from nextscale.sampling import SAMPLING_PRESETS

    group = parser.add_argument_group("sampling")
    group.add_argument("--preset", choices=sorted(SAMPLING_PRESETS), help="named settings (fid: cfg 1.5, top-k 900 …)")
    group.add_argument("--cfg", type=float, default=None, help=f"guidance at the last scale (default {cfg})")
    group.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (default 900)")
    group.add_argument("--top-p", type=float, default=None, help="nucleus mass (default 0.95)")
    group.add_argument("--more-smooth", action="store_true", default=None, help="Gumbel-smoothed embeddings")
    group.add_argument("--seed", type=int, default=0)
    parser.set_defaults(default_cfg=cfg)


def sampling_kwargs(args) -> dict:
    from nextscale.sampling import SAMPLING_PRESETS, SamplingSettings

    base = (
        SAMPLING_PRESETS[args.preset] if args.preset else SamplingSettings(cfg=args.default_cfg, top_k=900, top_p=0.95)
    )
    settings = SamplingSettings(
        cfg=base.cfg if args.cfg is None else args.cfg,
        top_k=base.top_k if args.top_k is None else args.top_k,
        top_p=base.top_p if args.top_p is None else args.top_p,
        more_smooth=base.more_smooth if args.more_smooth is None else args.more_smooth,
    )
    return {"cfg": settings.cfg, "top_k": settings.top_k, "top_p": settings.top_p, "more_smooth": settings.more_smooth}


def load_models(args):
    """(tokenizer, model, class names or None) from --model or --vae/--var."""
    from nextscale.convert import load_official
    from nextscale.pretrained import from_pretrained, read_metadata

    if args.model:
        if not Path(args.model).is_dir():
            raise UsageError(f"model directory not found: {args.model}")
        tokenizer, model = from_pretrained(args.model, args.device)
        if tokenizer is None or model is None:
            raise UsageError(f"{args.model} needs both tokenizer/ and transformer/ to sample")
        return tokenizer, model, read_metadata(args.model).get("classes")
    if not (args.vae and args.var):
        raise UsageError("give --model DIR, or both --vae and --var")
    for path in (args.vae, args.var):
        if ("/" in path or path.endswith((".pth", ".pt"))) and not Path(path).is_file():
            raise UsageError(f"checkpoint not found: {path}")
    tokenizer, model = load_official(args.vae, args.var, num_heads=args.num_heads, device=args.device)
    return tokenizer, model, None


def _autocast(args):
    return torch.bfloat16 if args.bf16 else None


def load_pipeline(args):
    """A Pipeline from --model or --vae/--var, with the class names and --bf16."""
    from nextscale.pipeline import Pipeline

    tokenizer, model, classes = load_models(args)
    source = os.path.abspath(args.model) if args.model else f"official: {args.vae} + {args.var}"
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    return Pipeline(tokenizer, model, class_names=classes, dtype=dtype, source=str(source))


# ---- sample ---------------------------------------------------------------------------------------------------------


def cmd_sample(args) -> None:
    from nextscale.images import save_grid
    from nextscale.sampling import generate

    if args.per_class <= 0:
        raise UsageError(f"--per-class must be positive, got {args.per_class}")
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    tokenizer, model, _ = load_models(args)
    classes = args.classes if args.classes else list(range(min(model.num_classes, 10)))
    for c in classes:
        if not 0 <= c < model.num_classes:
            raise UsageError(f"class {c} is outside [0, {model.num_classes})")
    labels = [c for c in classes for _ in range(args.per_class)]
    kwargs = sampling_kwargs(args)
    chunks = []
    for begin in range(0, len(labels), args.batch_size):
        batch = labels[begin : begin + args.batch_size]
        chunks.append(
            generate(model, tokenizer, batch, seed=args.seed + begin, autocast_dtype=_autocast(args), **kwargs).images
        )
    images = torch.cat(chunks)
    upscale = max(1, 128 // images.shape[-1])
    path = save_grid(images, args.out, columns=args.per_class if len(classes) > 1 else 8, upscale=upscale)
    print(f"wrote {len(labels)} samples ({len(classes)} classes × {args.per_class}) to {path}")


# ---- edit -----------------------------------------------------------------------------------------------------------


def cmd_edit(args) -> None:
    from nextscale.editing import check_box, fit_image, keep_mask_for, mask_from_image, save_edit
    from nextscale.images import load_image

    if (args.box is None) == (args.mask is None):
        raise UsageError("give the region to edit with --box Y0 X0 Y1 X1 or with --mask mask.png (one of them)")
    if args.mode == "class-edit" and args.class_id is None:
        raise UsageError("--mode class-edit needs --class K (the class to edit the box towards)")
    if args.samples <= 0:
        raise UsageError(f"--samples must be positive, got {args.samples}")
    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise UsageError(f"--out {args.out}: name an image file (.png, .jpg, .webp)")
    if args.box is not None:
        check_box(*args.box)
    original = load_image(args.image)
    mask_picture = load_image(args.mask) if args.mask else None
    pipeline = load_pipeline(args)
    if args.class_id is not None and not 0 <= args.class_id < pipeline.num_classes:
        raise UsageError(f"class {args.class_id} is outside [0, {pipeline.num_classes})")
    image, resized = fit_image(original, pipeline.image_size)
    if resized:
        size = pipeline.image_size
        print(
            f"nextscale edit: note: {args.image} is {original.size[0]}×{original.size[1]}; "
            f"centre-cropped to a square and resized to {size}×{size}",
            file=sys.stderr,
        )
    regenerate = mask_from_image(mask_picture, pipeline.token_side, original.size) if mask_picture else None
    keep = keep_mask_for(args.mode, side=pipeline.token_side, box=args.box, mask_image=regenerate)
    results = pipeline.edit(
        image, keep, labels=args.class_id, samples=args.samples, seed=args.seed, **sampling_kwargs(args)
    )
    paths, strip = save_edit(args.out, pipeline.image_tensor(image)[0], keep, results)
    print(f"wrote {len(paths)} edited image(s): {', '.join(str(p) for p in paths)}")
    print(f"wrote the strip (input | regenerated region | results): {strip}")


# ---- sample-set -----------------------------------------------------------------------------------------------------


def cmd_sample_set(args) -> None:
    from nextscale.eval.sample_set import SampleSetConfig, expected_names, generate_sample_set, pack_npz, parse_classes
    from nextscale.sampling import SamplingSettings
    from nextscale.train.distributed import barrier, cleanup, setup_distributed

    config = SampleSetConfig(
        out_dir=args.out,
        per_class=args.per_class,
        classes=parse_classes(args.classes) if args.classes else None,
        batch_size=args.batch_size,
        seed=args.seed,
        settings=SamplingSettings(**sampling_kwargs(args)),
    )
    context = setup_distributed()
    try:
        if context.is_distributed:
            args.device = str(context.device)
        pipeline = load_pipeline(args)
        progress = not args.no_progress
        status = generate_sample_set(pipeline, config, context.rank, context.world_size, progress=progress)
        barrier()
        if context.is_main_process:
            npz = pack_npz(config.out_dir, expected_names(pipeline, config), pipeline.image_size, progress=progress)
            print(
                f"sample set: {status.total} images in {config.out_dir} (rank 0 found {status.existing}, wrote "
                f"{status.written}); settings in {Path(config.out_dir) / 'settings.json'}; packed into {npz}"
            )
    except BaseException:
        cleanup(synchronize=False)
        raise
    cleanup()


# ---- training -------------------------------------------------------------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    from nextscale.editing import EDIT_MODES
    from nextscale.model.config import VAR_PRESETS
    from nextscale.tokenizer.tokenizer import TOKENIZER_PRESETS

    parser = argparse.ArgumentParser(prog="nextscale", description="VAR: image generation by next-scale prediction")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("sample", help="class-conditional samples as a PNG grid")
    _add_model_source(p)
    _add_sampling(p)
    p.add_argument("--class", dest="classes", type=int, action="append", help="class id (repeat); default 0…9")
    p.add_argument("--per-class", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default="samples.png")
    p.set_defaults(func=cmd_sample)

    p = commands.add_parser("edit", help="zero-shot in-painting, out-painting and class-conditional editing")
    _add_model_source(p)
    _add_sampling(p, cfg=3.0)
    p.add_argument("--image", required=True, help="input picture (centre-cropped and resized to the model's size)")
    p.add_argument("--box", type=float, nargs=4, metavar=("Y0", "X0", "Y1", "X1"), help="region, fractions in [0, 1]")
    p.add_argument("--mask", help="mask picture instead of --box: white = regenerate; square or the input's size")
    p.add_argument(
        "--mode", choices=EDIT_MODES, default="inpaint", help="inpaint/class-edit: redo the box; outpaint: keep it"
    )
    p.add_argument("--class", dest="class_id", type=int, help="class for the regenerated region (class-edit needs one)")
    p.add_argument("--samples", type=int, default=1, help="results to draw (one file each)")
    p.add_argument("--out", default="edit.png", help="result file; the strip goes to <stem>_strip<suffix>")
    p.set_defaults(func=cmd_edit)

    p = commands.add_parser(
        "sample-set", help="per-class PNGs for FID/IS, resumable and torchrun-ready, plus <out>.npz"
    )
    _add_model_source(p)
    _add_sampling(p, cfg=1.5)
    p.set_defaults(preset="fid")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--classes", help="ids and ranges such as 0-999 or 1,5,7 (default: every class)")
    p.add_argument("--batch-size", type=int, default=64, help="part of the recipe: a resumed run must keep it")
    p.add_argument("--out", default="samples", help="folder of PNGs; rerun the same command to resume")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sample_set)

    p = commands.add_parser("train-tokenizer", help="train the multi-scale VQ tokenizer")
    _add_data(p, 32)
    _add_loop(p, "runs/tokenizer", 2000, 64, 1e-3, 0.0)
    p.add_argument("--preset", default="fmnist-32", choices=sorted(TOKENIZER_PRESETS))
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--patch-nums", help="scale sides like 1_2_3_4_6_8 (must end at image size / downsampling)")
    p.add_argument("--l1-weight", type=float, default=1.0)
    p.add_argument("--l2-weight", type=float, default=1.0)
    p.add_argument("--vq-weight", type=float, default=1.0)
    p.add_argument("--perceptual-weight", type=float, default=0.0)
    p.add_argument("--perceptual-weights", help="local VGG16/LPIPS state dict for the perceptual loss")
    p.add_argument("--gan-weight", type=float, default=0.0, help="> 0 enables the patch discriminator")
    p.add_argument("--gan-start-step", type=int, default=0)
    p.add_argument("--dead-code-every", type=int, default=100)
    p.set_defaults(func=cmd_train_tokenizer)

    p = commands.add_parser("train", help="train the VAR transformer on a trained tokenizer")
    _add_data(p, 32)
    _add_loop(p, "runs/var", 4000, 64, 1e-4, 0.05)
    p.add_argument("--tokenizer", default="runs/tokenizer/model", help="tokenizer directory (train-tokenizer output)")
    p.add_argument("--preset", default="fmnist-small", choices=sorted(VAR_PRESETS))
    p.add_argument("--depth", type=int, help="override the preset's depth (width and heads follow)")
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--progressive", type=float, default=0.0, help="grow the trained scales over this run fraction")
    p.add_argument("--no-token-cache", action="store_true", help="encode images every step instead of once")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("evaluate", help="tokenizer PSNR/usage and transformer loss/accuracy on a split")
    _add_data(p, 32)
    p.add_argument("--model", required=True, help="directory written by save_pretrained / nextscale train")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("quickstart", help="train a small tokenizer and VAR on a built-in set, write samples")
    p.add_argument("--data", help="default: fashion-mnist when installed, else the built-in procedural set")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--tokenizer-steps", type=int, default=400)
    p.add_argument("--var-steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    from nextscale.convert import CheckpointError

    try:
        args.func(args)
    except (UsageError, CheckpointError, FileNotFoundError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"nextscale {args.command}: error: {message}", file=sys.stderr)
        if argv is not None:
            raise SystemExit(2) from None
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
