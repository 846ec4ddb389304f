"""The `nextscale` command: parses arguments, builds objects, calls the library. Nothing else lives here.

Subcommands live in `generate.py` (sample, edit, sample-set) and `train.py` (train-tokenizer, train, evaluate,
quickstart); `common.py` holds the shared argument groups."""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from nextscale.cli.common import UsageError, _add_model_source, _add_sampling
from nextscale.cli.generate import cmd_edit, cmd_sample, cmd_sample_set
from nextscale.cli.train import _add_data, _add_loop, cmd_evaluate, cmd_quickstart, cmd_train, cmd_train_tokenizer

__all__ = ["UsageError", "build_parser", "main"]


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
