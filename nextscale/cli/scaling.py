"""`nextscale scaling`: a sweep of model sizes on one tokenizer and token budget, the power-law fits and figures."""

from __future__ import annotations

from pathlib import Path

from nextscale.cli.common import UsageError, add_command, check_output_dir
from nextscale.cli.options import add_config_options, build_config
from nextscale.train.precision import PRECISION_NAMES

_DATA_RENAMES = {"name": "--data", "root": "--data-root"}


def add_commands(commands) -> None:
    from nextscale.data.config import DATASETS, DataConfig
    from nextscale.experiments.scaling_config import SweepConfig

    p = add_command(commands, "scaling", cmd_scaling)
    add_config_options(
        p.add_argument_group("sweep"),
        SweepConfig,
        exclude=("data",),
        renames={"output_dir": "--out"},
        choices={"precision": PRECISION_NAMES},
    )
    add_config_options(
        p.add_argument_group("data"),
        DataConfig,
        defaults={"name": "fashion-mnist", "image_size": 32},
        renames=_DATA_RENAMES,
        exclude=("seed",),
        helps={"name": f"{' | '.join(DATASETS)} | the path of an image folder"},
    )
    p.add_argument("--plan", action="store_true", help="print N, tokens, FLOPs and the estimated time; train nothing")
    p.add_argument("--report-only", action="store_true", help="fit and plot the runs trained so far; train nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_scaling(args) -> None:
    from nextscale.data.config import DataConfig
    from nextscale.experiments.scaling import plan, report, train_runs
    from nextscale.experiments.scaling_config import SweepConfig
    from nextscale.pretrained import load_tokenizer

    data = build_config(DataConfig, args, {"name": "fashion-mnist", "image_size": 32}, seed=0)
    config = build_config(SweepConfig, args, data=data)
    if not (Path(config.tokenizer) / "tokenizer").is_dir():
        raise UsageError(f"--tokenizer {config.tokenizer}: no tokenizer/ in it (train one with train-tokenizer)")
    check_output_dir(config.output_dir)
    tokenizer = load_tokenizer(Path(config.tokenizer) / "tokenizer")
    if tokenizer.config.image_size != data.image_size:
        raise UsageError(f"--image-size {data.image_size}: the tokenizer takes {tokenizer.config.image_size} px images")
    num_classes = data.build("train").num_classes
    space = tokenizer.token_space
    if args.plan:
        print(f"{'run':>9} {'width':>5} {'heads':>5} {'N':>10} {'images':>8} {'tokens':>11} {'PFLOPs':>8} {'hours':>6}")
        plans = plan(config, space, num_classes, probe=True)
        for p in plans:
            print(f"d{p.depth}-seed{p.seed:<3} {p.width:5d} {p.heads:5d} {p.parameters:10,d} {p.images:8d} "
                  f"{p.tokens:11,d} {p.pflops:8.3f} {p.estimated_hours:6.2f}")  # fmt: skip
        print(
            f"{len(plans)} runs, {sum(p.estimated_hours for p in plans):.2f} h of training (one probe step per size; "
            f"evaluated at steps {', '.join(map(str, config.evaluation_steps))}, {config.eval_images} images each)"
        )
        return
    if not args.report_only:
        train_runs(config, progress=not args.no_progress)
    fits = report(config, space, num_classes)
    print(f"sweep in {config.output_dir}: runs.json, fits.json, loss_vs_parameters.png, loss_vs_compute.png")
    for metric, fit in fits["against_parameters"].items():
        print(f"{metric:9s} vs N: ({fit['beta']:.3g}·N)^{fit['alpha']:.4f}, r = {fit['pearson_r']:.4f}")
    for metric, fit in fits["against_compute"].items():
        print(f"{metric:9s} vs C: ({fit['beta']:.3g}·C)^{fit['alpha']:.4f}, r = {fit['pearson_r']:.4f}")
