"""Argument groups and model loading shared by the `nextscale` subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch


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
