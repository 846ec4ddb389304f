"""What the `nextscale` subcommands share: the table of commands, a parser that reports errors in one line, the
model-source and sampling option groups, and checks of devices and output paths made before any work starts.

Nothing here imports torch at module level: `nextscale --help` and argument mistakes are answered before it loads."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from nextscale.cli.options import add_config_options, build_config
from nextscale.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

# every subcommand: (the cli module that adds it, its one-line help). `nextscale --help` is answered from this table
# alone; only the module of the command being run is imported.
COMMANDS: dict[str, tuple[str, str]] = {
    "sample": ("generate", "class-conditional samples as a PNG grid"),
    "edit": ("generate", "zero-shot in-painting, out-painting and class-conditional editing"),
    "sample-set": ("generate", "per-class PNGs for FID/IS, resumable and torchrun-ready, plus <out>.npz"),
    "train-tokenizer": ("train", "train the multi-scale VQ tokenizer"),
    "train": ("train_transformer", "train the VAR transformer on a trained tokenizer"),
    "evaluate": ("train", "tokenizer PSNR/usage and transformer loss/accuracy on a split"),
    "convert": ("train", "an official tokenizer checkpoint → a model directory for `train --tokenizer`"),
    "perceptual-weights": (
        "train",
        "write the tokenizer's perceptual-loss weights (VGG16 + LPIPS linear layers) for --perceptual-weights",
    ),
    "quickstart": ("train", "train a small tokenizer and VAR on a built-in set, write samples"),
    "eval-samples": (
        "evaluation",
        "FID, Inception Score, KID, precision/recall and class accuracy of a sample set against a reference",
    ),
    "train-classifier": (
        "evaluation",
        "train the Fashion-MNIST classifier used by eval-samples --features fmnist (minutes on a CPU)",
    ),
    "scaling": ("scaling", "train a sweep of model sizes and fit the paper's power laws (resumable)"),
    "ablation": ("ablation", "train and evaluate the paper's Table 3 rows, from next-token AR to VAR"),
    "demo": (
        "demo",
        "a local web page: sample classes and watch them form scale by scale, paint a region and edit it",
    ),
}
DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when available, else cpu)"


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is one line (the error, not the whole usage) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults that argparse knows; generated options put theirs in the help text themselves."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is argparse.SUPPRESS or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_command(commands, name: str, func) -> argparse.ArgumentParser:
    """The parser of subcommand `name`, with its help from `COMMANDS`, running `func(args)`."""
    help = COMMANDS[name][1]
    parser = commands.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    parser.set_defaults(func=func)
    return parser


# ---- devices and output paths ---------------------------------------------------------------------------------------


def default_device() -> str:
    import torch  # deferred: parsing arguments must not wait for torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str | None) -> str:
    """A device string that exists on this machine (None: the default one); a one-line UsageError otherwise."""
    import torch  # deferred: parsing arguments must not wait for torch

    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name}: not a device (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
    return name


def _check_writable_folder(folder: Path, path: Path, flag: str) -> None:
    """Create and remove a probe file in `folder`: permission bits say nothing for root, nor for /proc or a
    read-only mount, so the only reliable check is to write."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nextscale-probe-"):
            pass
    except OSError as err:
        where = "" if folder == path else f"{folder} "
        raise UsageError(f"{flag} {path}: {where}is not writable ({err.strerror or type(err).__name__})") from None


def _check_parents(path: Path, flag: str) -> None:
    """Every existing ancestor of `path` must be a writable folder (the rest will be created)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
            _check_writable_folder(parent, path, flag)
            return


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """An output image file that can be written: a known image suffix, no folder in its place, writable parents."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"{flag} {path}: name an image file ({', '.join(IMAGE_SUFFIXES)})")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: a folder is in the way (name a file)")
    if path.exists():
        try:
            with open(path, "ab"):  # opened for appending and closed: the file is left as it was
                pass
        except OSError as err:
            raise UsageError(f"{flag} {path}: the file is not writable ({err.strerror})") from None
    _check_parents(path, flag)
    return path


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """An output folder that can be created or written into."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {path}: a file is in the way (name a folder)")
        _check_writable_folder(path, path, flag)
        return path
    _check_parents(path, flag)
    return path


def check_positive(value: int | None, flag: str) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{flag} must be positive, got {value}")


def note(command: str, message: str) -> None:
    print(f"nextscale {command}: note: {message}", file=sys.stderr)


# ---- option groups --------------------------------------------------------------------------------------------------


def add_model_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (either --model, or --vae with --var)")
    group.add_argument("--model", help="a model directory (nextscale train output), or 'fmnist' (shipped)")
    group.add_argument("--vae", help="official tokenizer checkpoint (vae_ch160v4096z32.pth) or 'vqvae' to download")
    group.add_argument("--var", help="official transformer checkpoint (var_d16.pth …) or a name like var-d16")
    group.add_argument("--num-heads", type=int, help="heads of an official plain-attention checkpoint")
    group.add_argument(
        "--refiner",
        help="a second model directory on the same tokenizer that draws the scales from --handover-scale on "
        "(collaborative decoding: the --model drafts the small scales), or 'fmnist-tiny' (shipped: fmnist's refiner)",
    )
    group.add_argument("--device", help=DEVICE_HELP)
    group.add_argument("--bf16", action="store_true", help="run the transformer and decoder under bf16 autocast")
    group.add_argument(
        "--fast",
        action="store_true",
        help="prepare the models for fast inference (NHWC convolutions; with --bf16, bf16 weights instead of autocast) "
        "and apply the measured fast recipe a --model records (its sampling changes; int8 on a CPU in fp32)",
    )


def add_sampling(parser: argparse.ArgumentParser, default_preset: str, seed: bool = True) -> None:
    """--preset and one option per SamplingSettings field; the preset fills what the flags leave out."""
    from nextscale.sampling_settings import SAMPLING_PRESETS, SamplingSettings

    group = parser.add_argument_group("sampling")
    presets = "; ".join(
        f"{name}: cfg {s.cfg:g}, top-k {s.top_k}, top-p {s.top_p:g}{', smooth' if s.more_smooth else ''}"
        for name, s in SAMPLING_PRESETS.items()
    )
    group.add_argument(
        "--preset",
        choices=list(SAMPLING_PRESETS),
        help=f"named settings that the flags below override ({presets}); default: the settings a --model directory "
        f"records as its own (nextscale.json), else {default_preset}",
    )
    parser.set_defaults(fallback_preset=default_preset)
    add_config_options(group, SamplingSettings, defaults=asdict(SAMPLING_PRESETS[default_preset]))
    if seed:
        group.add_argument("--seed", type=int, default=0, help="seed of the sampler's random generator")


def sampling_settings(args: argparse.Namespace):
    """The SamplingSettings of the command line: --preset, else the settings --model records, else the command's
    default preset; then the flags given."""
    from nextscale.sampling_settings import SamplingSettings

    base = SamplingSettings.preset(args.preset) if args.preset else None
    if base is None and getattr(args, "model", None):
        from nextscale.pretrained import recorded_sampling  # reads the model's metadata (a torch-importing module)

        base = recorded_sampling(args.model)
    defaults = asdict(base or SamplingSettings.preset(args.fallback_preset))
    recipe = fast_recipe(args)
    if recipe is not None:
        defaults.update(recipe.get("sampling", {}))  # under the flags given: they still win
    return build_config(SamplingSettings, args, defaults)


def fast_recipe(args: argparse.Namespace) -> dict | None:
    """With --fast, the measured fast recipe the --model records (nextscale.json "fast"), else None."""
    if not (getattr(args, "fast", False) and getattr(args, "model", None)):
        return None
    from nextscale.pretrained import recorded_fast

    return recorded_fast(args.model)


def check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise UsageError(f"--seed must be in [0, 2^63), got {seed}")


# ---- loading models -------------------------------------------------------------------------------------------------


def load_models(args):
    """(tokenizer, model, class names or None) from --model or --vae/--var."""
    from nextscale.convert import load_official
    from nextscale.pretrained import from_pretrained, read_metadata, resolve_model

    args.device = check_device(args.device)
    if args.model:
        if not resolve_model(args.model).is_dir():
            raise UsageError(f"--model {args.model}: model directory not found (or a shipped model: fmnist)")
        tokenizer, model = from_pretrained(args.model, args.device)
        if tokenizer is None or model is None:
            raise UsageError(f"--model {args.model}: needs both tokenizer/ and transformer/")
        return tokenizer, model, read_metadata(args.model).get("classes")
    if not (args.vae and args.var):
        raise UsageError("give --model DIR, or both --vae and --var")
    for flag, path in (("--vae", args.vae), ("--var", args.var)):
        if ("/" in path or path.endswith((".pth", ".pt"))) and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: checkpoint not found")
    tokenizer, model = load_official(args.vae, args.var, num_heads=args.num_heads, device=args.device)
    return tokenizer, model, None


def load_pipeline(args):
    """A Pipeline from --model or --vae/--var, with the class names, --bf16 and the command's sampling settings."""
    import torch

    from nextscale.pipeline import Pipeline

    tokenizer, model, classes = load_models(args)
    if args.model:
        source = args.model if not Path(args.model).exists() else os.path.abspath(args.model)  # a shipped name
    else:
        source = f"official: {args.vae} + {args.var}"
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    settings = sampling_settings(args) if hasattr(args, "preset") else "demo"
    refiner = None
    if getattr(args, "refiner", None):
        from nextscale.pretrained import load_refiner

        refiner = load_refiner(args.refiner, args.device)
    return Pipeline(
        tokenizer,
        model,
        settings,
        class_names=classes,
        dtype=dtype,
        source=str(source),
        fast=args.fast,
        refiner=refiner,
        quantize=getattr(args, "quantize", None) or _recipe_quantize(args),
    )


def _recipe_quantize(args) -> str | None:
    """The fast recipe's quantisation where it applies: on a CPU, in fp32."""
    recipe = fast_recipe(args)
    if recipe is None or args.bf16 or not str(args.device).startswith("cpu"):
        return None
    return recipe.get("quantize")
