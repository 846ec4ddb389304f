"""`nextscale ablation`: the paper's Table 3 (next-token baseline → VAR, one design choice per row) on one data set."""

from __future__ import annotations

from pathlib import Path

from nextscale.cli.common import UsageError, add_command, check_output_dir
from nextscale.cli.options import add_config_options, build_config
from nextscale.train.precision import PRECISION_CHOICES, PRECISION_NAMES

_DATA_DEFAULTS = {"name": "fashion-mnist", "image_size": 32}


def add_commands(commands) -> None:
    from nextscale.data.config import DATASETS, DataConfig
    from nextscale.experiments.ablation_config import AblationConfig

    p = add_command(commands, "ablation", cmd_ablation)
    add_config_options(
        p.add_argument_group("ablation"),
        AblationConfig,
        exclude=("data", "rows"),
        renames={"output_dir": "--out"},
        choices={"precision": PRECISION_NAMES, "large_precision": PRECISION_CHOICES},
    )
    p.add_argument(
        "--rows", dest="row_names", help="comma-separated rows to run (default: all seven; AR is always needed)"
    )
    add_config_options(
        p.add_argument_group("data"),
        DataConfig,
        defaults=_DATA_DEFAULTS,
        renames={"name": "--data", "root": "--data-root"},
        exclude=("seed",),
        helps={"name": f"{' | '.join(DATASETS)} | the path of an image folder"},
    )
    p.add_argument("--plan", action="store_true", help="print every training run with its cost and time; train nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_ablation(args) -> None:
    from nextscale.data.config import DataConfig
    from nextscale.experiments.ablation import plan, run_ablation
    from nextscale.experiments.ablation_config import AblationConfig

    data = build_config(DataConfig, args, _DATA_DEFAULTS, seed=0)
    rows = {"rows": tuple(r.strip() for r in args.row_names.split(","))} if args.row_names else {}
    config = build_config(AblationConfig, args, rows, data=data)
    tokenizers = [("--tokenizer", config.tokenizer)]
    if not args.plan:
        tokenizers.append(("--raster-tokenizer", config.raster_tokenizer))
    for flag, folder in tokenizers:
        if not (Path(folder) / "tokenizer").is_dir():
            raise UsageError(f"{flag} {folder}: no tokenizer/ in it (train one with nextscale train-tokenizer)")
    if args.plan:
        print_plan(plan(config))
        return
    check_output_dir(config.output_dir)
    data = run_ablation(config, progress=not args.no_progress)
    print(f"{len(data['records'])} row records, {len(data['curves'])} curve points, the costs of "
          f"{len(data['costs'])} rows in {Path(config.output_dir) / 'ablation.json'}; "
          "python docs/scripts/ablation_report.py --import <that file> writes the tables and figures")  # fmt: skip


def print_plan(runs: list[dict]) -> None:
    print(
        f"{'model':10} {'seed':>4} {'parameters':>10} {'images':>8} {'PFLOPs':>7} {'train min':>9} {'eval samples':>12}"
    )
    for r in runs:
        print(f"{r['model']:10} {r['seed']:4d} {r['parameters']:10,d} {r['images']:8d} {r['pflops']:7.3f} "
              f"{r['train_minutes']:9.1f} {r['evaluation_samples']:12,d}"
              + ("  (--large-model stands in: not trained)" if r["stand_in"] else ""))  # fmt: skip
    total = sum(r["train_minutes"] for r in runs)
    print(
        f"{len(runs)} training runs, {total / 60:.1f} h of training on this machine (measured one step each), "
        f"{sum(r['evaluation_samples'] for r in runs):,d} images sampled for the evaluation"
    )
