"""The `nextscale` command: parses arguments, builds objects, calls the library. Nothing else lives here.

Each module registers its subcommands (`add_commands`): `generate.py` (sample, edit, sample-set), `train.py`
(train-tokenizer, train, evaluate, convert, quickstart); `common.py` and `options.py` hold what they share. A user
mistake ends in one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import logging
import sys

from nextscale.cli import ablation, demo, evaluation, generate, scaling, train
from nextscale.cli.common import HelpFormatter, OneLineParser, UsageError

__all__ = ["UsageError", "build_parser", "main"]

COMMAND_MODULES = (generate, train, evaluation, scaling, ablation, demo)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="nextscale",
        description="VAR: image generation by next-scale prediction",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for module in COMMAND_MODULES:
        module.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0, or 2 for a user error) when called with `argv`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    from nextscale.train.loop import NonFiniteLossError, TrainingInterrupted
    from nextscale.weights import CheckpointError

    try:
        args.func(args)
    except TrainingInterrupted as stopped:  # Ctrl-C while training: where it stopped, how to go on
        return _fail(args.command, str(stopped), 130, argv is not None, prefix="")
    except NonFiniteLossError as err:  # the run diverged: what a rerun resumes from and what to change
        return _fail(args.command, str(err), 1, argv is not None)
    except (UsageError, CheckpointError, FileNotFoundError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        return _fail(args.command, str(message), 2, argv is not None)
    return 0


def _fail(command: str, message: str, status: int, raise_exit: bool, prefix: str = "error: ") -> int:
    """One line on stderr; the status is returned to the console script, raised as SystemExit for callers."""
    print(f"nextscale {command}: {prefix}{message}", file=sys.stderr)
    if raise_exit:
        raise SystemExit(status)
    return status
