"""`nextscale train-tokenizer`, `evaluate`, `convert`, `perceptual-weights`, `quickstart`, and the options that
`train` (train_transformer.py) shares with `train-tokenizer`.

Training options are generated from the configs (`LoopConfig`, `DataConfig`, the task's config and the architecture's
config): every field has a flag, the help shows its default, and a value is taken from, in order, the config's
default, the recipe (`--recipe`), then the flag.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from nextscale.cli.common import DEVICE_HELP, UsageError, add_command, check_device, check_output_dir
from nextscale.cli.options import add_config_options, build_config, given, to_argv
from nextscale.train.precision import PRECISION_CHOICES

_LOOP_RENAMES = {"output_dir": "--out"}
_DATA_RENAMES = {"name": "--data", "root": "--data-root"}
_DATA_EXCLUDE = ("seed",)  # one --seed for the run (LoopConfig's)


def add_loop_and_data(parser: argparse.ArgumentParser, recipe) -> None:
    from nextscale.data.config import DATASETS, DataConfig
    from nextscale.train.config import LoopConfig
    from nextscale.train.schedule import NAMED_SCHEDULES

    add_config_options(
        parser.add_argument_group("optimisation and run"),
        LoopConfig,
        defaults=recipe.loop,
        renames=_LOOP_RENAMES,
        choices={"precision": PRECISION_CHOICES, "wrap": ("ddp", "fsdp", "none")},
        helps={
            "lr_schedule": f"{', '.join(NAMED_SCHEDULES)}, or lin<T> with 0<T<1 (two slopes meeting at T)",
        },
    )
    add_config_options(
        parser.add_argument_group("data"),
        DataConfig,
        defaults=recipe.data,
        renames=_DATA_RENAMES,
        exclude=_DATA_EXCLUDE,
        helps={"name": f"{' | '.join(DATASETS)} | the path of an image folder"},
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start over in --out: move the existing checkpoints aside (to <out>/replaced-<time>) instead of resuming",
    )


def loop_and_data(args, recipe):
    from nextscale.data.config import DataConfig
    from nextscale.train.config import LoopConfig

    loop = build_config(LoopConfig, args, recipe.loop)
    data = build_config(DataConfig, args, recipe.data, seed=loop.seed)
    check_output_dir(loop.output_dir)
    return loop, data


def add_recipe(parser: argparse.ArgumentParser, recipes: dict, default: str) -> None:
    parser.set_defaults(recipes=recipes)
    parser.add_argument(
        "--recipe",
        default=default,
        choices=list(recipes),
        help="named settings that the other flags override (the recipe table in README.md, section Train); the "
        "defaults shown are this default's",
    )


def add_commands(commands) -> None:
    from nextscale.tokenizer.config import TOKENIZER_PRESETS, TokenizerConfig, tokenizer_preset
    from nextscale.train.recipes import DEFAULT_TOKENIZER_RECIPE, TOKENIZER_RECIPES
    from nextscale.train.tokenizer_config import TokenizerTrainConfig

    recipe = TOKENIZER_RECIPES[DEFAULT_TOKENIZER_RECIPE]
    p = add_command(commands, "train-tokenizer", cmd_train_tokenizer)
    add_recipe(p, TOKENIZER_RECIPES, DEFAULT_TOKENIZER_RECIPE)
    add_loop_and_data(p, recipe)
    add_config_options(
        p.add_argument_group("tokenizer training"),
        TokenizerTrainConfig,
        defaults=recipe.task,
        exclude=("data", "tokenizer"),
        choices={"preset": TOKENIZER_PRESETS},
    )
    add_config_options(
        p.add_argument_group("tokenizer architecture (overrides of the preset's fields)"),
        TokenizerConfig,
        show_defaults=False,
        preset=(recipe.task["preset"], asdict(tokenizer_preset(recipe.task["preset"]))),
    )

    p = add_command(commands, "evaluate", cmd_evaluate)
    p.add_argument("--model", required=True, help="model directory (save_pretrained / nextscale train output)")
    p.add_argument("--data", default="fashion-mnist", help="procedural | fashion-mnist | the path of an image folder")
    p.add_argument("--data-root", help="where the data lives when --data names a built-in set")
    p.add_argument("--image-size", type=int, help="image side (default: the tokenizer's)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="which split to evaluate")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--seed", type=int, default=0, help="seed of the procedural set")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--bf16", action="store_true", help="run the transformer under bf16 autocast")
    p.add_argument("--out", help="also write the JSON here")

    p = add_command(commands, "convert", cmd_convert)
    p.add_argument("--vae", required=True, help="vae_ch160v4096z32.pth (or 'vqvae' to download the released one)")
    p.add_argument("--patch-nums", default="256", help="scale schedule: 256, 512, or sides like 1_2_3_4_5_6_8_10_13_16")
    p.add_argument("--out", required=True, help="model directory to write")

    p = add_command(commands, "perceptual-weights", cmd_perceptual_weights)
    p.add_argument("--out", required=True, help="weights file to write, e.g. weights/lpips_vgg.pth")
    p.add_argument("--vgg", help="torchvision VGG16 ImageNet state dict (vgg16-397923af.pth); default: download it")
    p.add_argument("--lpips", help="LPIPS linear layers (lpips/weights/v0.1/vgg.pth); default: the installed package's")

    p = add_command(commands, "quickstart", cmd_quickstart)
    p.add_argument("--data", help="default: fashion-mnist when installed, else the built-in procedural set")
    p.add_argument("--out", default="runs/quickstart", help="run directory; rerun to resume")
    p.add_argument("--tokenizer-steps", type=int, default=400, help="optimizer steps of the tokenizer")
    p.add_argument("--var-steps", type=int, default=600, help="optimizer steps of the transformer")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random")


def cmd_train_tokenizer(args) -> None:
    from nextscale.tokenizer.tokenizer import TokenizerConfig
    from nextscale.train.loop import run
    from nextscale.train.tokenizer_task import TokenizerTask, TokenizerTrainConfig

    recipe = args.recipes[args.recipe]
    loop, data = loop_and_data(args, recipe)
    architecture = given(args, TokenizerConfig)
    config = build_config(TokenizerTrainConfig, args, recipe.task, data=data, tokenizer=architecture)
    if args.restart:
        move_previous_run_aside(loop.output_dir)
    export = run(TokenizerTask(config), loop)
    print(f"tokenizer written to {export}")


def move_previous_run_aside(output_dir: str) -> None:
    from nextscale.train.loop import restart_run

    aside = restart_run(output_dir)
    if aside is not None:
        print(f"nextscale: --restart: the previous run in {output_dir} was moved to {aside}")


def cmd_convert(args) -> None:
    from nextscale.convert import load_official_tokenizer
    from nextscale.pretrained import save_pretrained

    check_output_dir(args.out)
    tokenizer = load_official_tokenizer(args.vae, args.patch_nums)
    out = save_pretrained(args.out, tokenizer=tokenizer, metadata={"converted_from": str(args.vae)})
    print(f"tokenizer ({tokenizer.token_space}, {tokenizer.config.image_size} px) written to {out}")


def cmd_perceptual_weights(args) -> None:
    from nextscale.tokenizer.perceptual_weights import write_perceptual_weights

    path = write_perceptual_weights(args.out, vgg_weights=args.vgg, lpips_weights=args.lpips)
    print(f"perceptual-loss weights written to {path} (use: train-tokenizer --perceptual-weights {path})")


def cmd_quickstart(args) -> None:
    from nextscale.cli import main  # the three steps are ordinary subcommands
    from nextscale.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT

    data = args.data or ("fashion-mnist" if Path(DEFAULT_FASHION_MNIST_ROOT).is_dir() else "procedural")
    out = Path(args.out)
    check_output_dir(out)
    print(f"quickstart: training a tokenizer and a small VAR on {data} (32 px) in {out}")
    common = {"data": data, "image_size": 32, "seed": args.seed, "eval_batches": 2, "batch_size": 32, "eval_every": 0,
              "log_every": 50}  # fmt: skip
    tokenizer = {"output_dir": str(out / "tokenizer"), "steps": args.tokenizer_steps, "base_lr": 4e-3,
                 "weight_decay": 0.0, **common}  # fmt: skip
    _run_step(main, ["train-tokenizer", *to_argv(tokenizer, _LOOP_RENAMES)])
    transformer = {"tokenizer": str(out / "tokenizer"), "output_dir": str(out / "var"), "preset": "fmnist-tiny",
                   "steps": args.var_steps, "base_lr": 8e-3, "cache_tokens": False, **common}  # fmt: skip
    _run_step(main, ["train", *to_argv(transformer, _LOOP_RENAMES)])
    grid = out / "samples.png"
    _run_step(
        main, ["sample", "--model", str(out / "var" / "model"), "--per-class", "8", "--cfg", "2", "--out", str(grid)]
    )
    print(f"done: class-conditional samples (one row per class) are in {grid}")


def _run_step(main, argv: list[str]) -> None:
    status = main(argv)
    if status:
        raise SystemExit(status)


def cmd_evaluate(args) -> None:
    import json

    import torch

    from nextscale.data.config import DataConfig
    from nextscale.eval.metrics import evaluate_tokenizer, evaluate_transformer
    from nextscale.pretrained import from_pretrained

    args.device = check_device(args.device)
    if not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model}: model directory not found")
    tokenizer, model = from_pretrained(args.model, args.device)
    if tokenizer is None:
        raise UsageError(f"--model {args.model}: holds no tokenizer")
    size = args.image_size or tokenizer.config.image_size
    data = DataConfig(name=args.data, image_size=size, root=args.data_root, seed=args.seed)
    dataset = data.build(args.split)
    results = {"tokenizer": evaluate_tokenizer(tokenizer, dataset, limit=args.limit, progress=True)}
    if model is not None:
        if dataset.num_classes > model.num_classes:
            raise UsageError(
                f"--data {args.data} has {dataset.num_classes} classes but the model knows {model.num_classes}"
            )
        dtype = torch.bfloat16 if args.bf16 else None
        results["transformer"] = evaluate_transformer(
            model, tokenizer, dataset, limit=args.limit, autocast_dtype=dtype, progress=True
        )
    text = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
