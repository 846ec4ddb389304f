"""`nextscale ablation`: the paper's Table 3 (next-token baseline → VAR, one design choice per row) on one data set."""

from __future__ import annotations

from pathlib import Path

from nextscale.cli.common import UsageError, add_command, check_output_dir
from nextscale.cli.options import add_config_options, build_config

_DATA_DEFAULTS = {"name": "fashion-mnist", "image_size": 32}


def add_commands(commands) -> None:
    from nextscale.ablation import AblationConfig
    from nextscale.data.build import DATASETS, DataConfig

    p = add_command(
        commands, "ablation", "train and evaluate the paper's Table 3 rows, from next-token AR to VAR", cmd_ablation
    )
    add_config_options(
        p.add_argument_group("ablation"),
        AblationConfig,
        exclude=("data", "rows"),
        renames={"output_dir": "--out"},
        choices={"precision": ("fp32", "bf16", "fp16")},
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
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_ablation(args) -> None:
    from nextscale.ablation import AblationConfig, run_ablation
    from nextscale.data.build import DataConfig

    data = build_config(DataConfig, args, _DATA_DEFAULTS, seed=args.seed or 0)
    rows = {"rows": tuple(r.strip() for r in args.row_names.split(","))} if args.row_names else {}
    config = build_config(AblationConfig, args, rows, data=data)
    for flag, folder in (("--tokenizer", config.tokenizer), ("--raster-tokenizer", config.raster_tokenizer)):
        if not (Path(folder) / "tokenizer").is_dir():
            raise UsageError(f"{flag} {folder}: no tokenizer/ in it (train one with nextscale train-tokenizer)")
    check_output_dir(config.output_dir)
    results = run_ablation(config, progress=not args.no_progress)
    print((Path(config.output_dir) / "table.md").read_text())
    print(f"{len(results)} rows; results.json, table.md and the figures in {config.output_dir}")
