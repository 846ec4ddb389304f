"""`nextscale train-tokenizer`, `train`, `evaluate`, `convert`, `quickstart`.

Training options are generated from the configs (`LoopConfig`, `DataConfig`, the task's config and, for the
transformer, `VARConfig`): every field has a flag, the help shows its default, and a value is taken from, in order,
the config's default, the recipe (`--recipe`), then the flag.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from nextscale.cli.common import DEVICE_HELP, UsageError, add_command, check_device, check_output_dir
from nextscale.cli.options import add_config_options, build_config, given, to_argv
from nextscale.config_io import field_types
from nextscale.train.precision import PRECISION_CHOICES

_LOOP_RENAMES = {"output_dir": "--out"}
_DATA_RENAMES = {"name": "--data", "root": "--data-root"}
_DATA_EXCLUDE = ("seed",)  # one --seed for the run (LoopConfig's)


# Interim: LoopConfig (nextscale/train/loop.py) and VARConfig (nextscale/model/config.py) have fields without a
# comment, which is their help; until those comments are written there, the help is given here.
_LOOP_HELPS = {
    "grad_accumulation": "micro-batches per optimizer step (batch_size is split among them)",
    "warmup_start_ratio": "lr at the start of the warmup, as a fraction of the peak lr",
    "final_lr_ratio": "lr at the end of the run, as a fraction of the peak lr",
    "weight_decay": "AdamW weight decay (not on embeddings, biases and gains)",
    "seed": "seed of everything random in the run (weights, data order, augmentation)",
    "log_every": "steps between metric lines (console, TensorBoard, metrics.jsonl)",
    "eval_batches": "validation batches per evaluation",
    "save_every": "steps between checkpoints",
    "keep_last": "checkpoints kept (older ones are deleted)",
    "progress": "progress bars (--no-progress hides them all)",
}
_VAR_HELPS = {
    "depth": "transformer blocks; width and heads follow from it unless given",
    "mlp_ratio": "hidden width of the feed-forward layers, as a multiple of the width",
    "norm_eps": "epsilon of the layer norms",
    "init_head_scale": "scale of the output head's initial weights",
    "init_adaln_scale": "scale of the AdaLN projections' initial weights",
}


def _add_loop_and_data(parser: argparse.ArgumentParser, recipe) -> None:
    from nextscale.data.build import DATASETS, DataConfig
    from nextscale.train.loop import LoopConfig
    from nextscale.train.schedule import NAMED_SCHEDULES

    add_config_options(
        parser.add_argument_group("optimisation and run"),
        LoopConfig,
        defaults=recipe.loop,
        renames=_LOOP_RENAMES,
        choices={"precision": PRECISION_CHOICES, "wrap": ("ddp", "fsdp", "none")},
        helps={
            **_LOOP_HELPS,
            "output_dir": "run directory (checkpoints, logs, model/); rerun the same command to resume",
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


def _loop_and_data(args, recipe):
    from nextscale.data.build import DataConfig
    from nextscale.train.loop import LoopConfig

    loop = build_config(LoopConfig, args, recipe.loop)
    data = build_config(DataConfig, args, recipe.data, seed=loop.seed)
    check_output_dir(loop.output_dir)
    return loop, data


def _add_recipe(parser: argparse.ArgumentParser, recipes: dict, default: str) -> None:
    parser.set_defaults(recipes=recipes)
    parser.add_argument(
        "--recipe",
        default=default,
        choices=list(recipes),
        help="named settings that the other flags override (the recipe table in README.md, section Train); the "
        "defaults shown are this default's",
    )


def add_commands(commands) -> None:
    from nextscale.model.config import VAR_PRESETS, VARConfig, var_preset
    from nextscale.model.raster import RASTER_PRESETS, RasterConfig
    from nextscale.tokenizer.tokenizer import TOKENIZER_PRESETS, TokenizerConfig, tokenizer_preset
    from nextscale.train.recipes import DEFAULT_TOKENIZER_RECIPE, DEFAULT_VAR_RECIPE, TOKENIZER_RECIPES, VAR_RECIPES
    from nextscale.train.tokenizer_task import TokenizerTrainConfig
    from nextscale.train.var_task import ARCHITECTURES, VARTrainConfig

    recipe = TOKENIZER_RECIPES[DEFAULT_TOKENIZER_RECIPE]
    p = add_command(commands, "train-tokenizer", cmd_train_tokenizer)
    _add_recipe(p, TOKENIZER_RECIPES, DEFAULT_TOKENIZER_RECIPE)
    _add_loop_and_data(p, recipe)
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

    recipe = VAR_RECIPES[DEFAULT_VAR_RECIPE]
    p = add_command(commands, "train", cmd_train)
    _add_recipe(p, VAR_RECIPES, DEFAULT_VAR_RECIPE)
    _add_loop_and_data(p, recipe)
    add_config_options(
        p.add_argument_group("transformer training"),
        VARTrainConfig,
        defaults=recipe.task,
        exclude=("data", "model"),
        choices={"preset": list(dict.fromkeys([*VAR_PRESETS, *RASTER_PRESETS])), "architecture": ARCHITECTURES},
    )
    model_group = p.add_argument_group("transformer (overrides of the preset's fields; width and heads follow --depth)")
    shown = (recipe.task["preset"], asdict(var_preset(recipe.task["preset"], **recipe.model)))
    add_config_options(
        model_group, VARConfig, exclude=("num_classes",), show_defaults=False, helps=_VAR_HELPS, preset=shown
    )
    raster_only = [name for name in field_types(RasterConfig) if name not in field_types(VARConfig)]
    add_config_options(
        model_group,
        RasterConfig,
        exclude=[name for name in field_types(RasterConfig) if name not in raster_only],
        show_defaults=False,
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
    loop, data = _loop_and_data(args, recipe)
    architecture = given(args, TokenizerConfig)
    config = build_config(TokenizerTrainConfig, args, recipe.task, data=data, tokenizer=architecture)
    if args.restart:
        _restart(loop.output_dir)
    export = run(TokenizerTask(config), loop)
    print(f"tokenizer written to {export}")


def cmd_train(args) -> None:
    from nextscale.model.config import VARConfig
    from nextscale.model.raster import RasterConfig
    from nextscale.train.loop import run
    from nextscale.train.var_task import VARTask, VARTrainConfig

    recipe = args.recipes[args.recipe]
    loop, data = _loop_and_data(args, recipe)
    architecture = args.architecture or recipe.task.get("architecture", "var")
    model_config = RasterConfig if architecture == "raster" else VARConfig
    flags = {**given(args, VARConfig, exclude=("num_classes",)), **given(args, RasterConfig, exclude=("num_classes",))}
    foreign = sorted(set(flags) - set(field_types(model_config)))
    if foreign:
        raise UsageError(f"--{foreign[0].replace('_', '-')} is not a setting of the {architecture} architecture")
    model = {**recipe.model, **flags}
    config = build_config(VARTrainConfig, args, recipe.task, data=data, model=model)
    if not Path(config.tokenizer).is_dir():
        raise UsageError(
            f"--tokenizer {config.tokenizer}: directory not found (train one with nextscale train-tokenizer, or "
            "convert the released one with nextscale convert)"
        )
    if args.restart:
        _restart(loop.output_dir)
    export = run(VARTask(config), loop)
    print(f"model written to {export}")


def _restart(output_dir: str) -> None:
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

    from nextscale.data.build import DataConfig
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
