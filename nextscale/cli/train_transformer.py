"""`nextscale train`: the transformer (VAR, or the raster baseline) on a trained tokenizer.

Its options come from torch-free configs (`VARTrainConfig` in nextscale/train/var_config.py, the model configs), so
--help and argument mistakes are answered before torch is imported; training imports it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from nextscale.cli.common import UsageError, add_command
from nextscale.cli.options import add_config_options, build_config, given
from nextscale.cli.train import add_loop_and_data, add_recipe, loop_and_data, move_previous_run_aside
from nextscale.config_io import field_types


def add_commands(commands) -> None:
    from nextscale.model.config import VAR_PRESETS, VARConfig, var_preset
    from nextscale.model.raster_config import RASTER_PRESETS, RasterConfig
    from nextscale.train.recipes import DEFAULT_VAR_RECIPE, VAR_RECIPES
    from nextscale.train.var_config import ARCHITECTURE_NAMES, VARTrainConfig

    recipe = VAR_RECIPES[DEFAULT_VAR_RECIPE]
    p = add_command(commands, "train", cmd_train)
    add_recipe(p, VAR_RECIPES, DEFAULT_VAR_RECIPE)
    add_loop_and_data(p, recipe)
    add_config_options(
        p.add_argument_group("transformer training"),
        VARTrainConfig,
        defaults=recipe.task,
        exclude=("data", "model"),
        choices={"preset": list(dict.fromkeys([*VAR_PRESETS, *RASTER_PRESETS])), "architecture": ARCHITECTURE_NAMES},
    )
    model_group = p.add_argument_group("transformer (overrides of the preset's fields; width and heads follow --depth)")
    shown = (recipe.task["preset"], asdict(var_preset(recipe.task["preset"], **recipe.model)))
    add_config_options(model_group, VARConfig, exclude=("num_classes",), show_defaults=False, preset=shown)
    raster_only = [name for name in field_types(RasterConfig) if name not in field_types(VARConfig)]
    add_config_options(
        model_group,
        RasterConfig,
        exclude=[name for name in field_types(RasterConfig) if name not in raster_only],
        show_defaults=False,
    )


def cmd_train(args) -> None:
    from nextscale.model.config import VARConfig
    from nextscale.model.raster_config import RasterConfig
    from nextscale.train.loop import run
    from nextscale.train.var_config import VARTrainConfig
    from nextscale.train.var_task import VARTask

    recipe = args.recipes[args.recipe]
    loop, data = loop_and_data(args, recipe)
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
        move_previous_run_aside(loop.output_dir)
    export = run(VARTask(config), loop)
    print(f"model written to {export}")
