"""The `nextscale` command: parses arguments, builds objects, calls the library. Nothing else lives here.

Each module registers its subcommands (`add_commands`): `generate.py` (sample, edit, sample-set), `train.py`
(train-tokenizer, evaluate, convert, perceptual-weights, quickstart), `train_transformer.py` (train), `evaluation.py`,
`scaling.py`, `ablation.py`, `demo.py`;
`common.py` (with the table of commands) and `options.py` hold what they share. Only the module of the command being
run is imported, and none imports torch before its arguments are parsed, so `--help` and argument mistakes are
answered at once: that is why the commands' `cmd_*` functions import the library inside (its modules load torch),
the one place where imports inside functions are the rule.

A user mistake (`nextscale.UsageError`, which a damaged file's `CheckpointError` is too) ends in one line on stderr
and exit status 2, never a traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from nextscale.cli.common import COMMANDS, HelpFormatter, OneLineParser
from nextscale.errors import UsageError

__all__ = ["UsageError", "build_parser", "is_usage_error", "main"]


def build_parser(argv: Sequence[str] | None = None) -> OneLineParser:
    """The command's parser. With `argv`, only the subcommand it names is built in full (the others are listed by
    name and help); without, every subcommand is."""
    parser = OneLineParser(
        prog="nextscale",
        description="VAR: image generation by next-scale prediction",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    wanted = list(COMMANDS) if argv is None else [word for word in argv[:1] if word in COMMANDS]
    for module_name in dict.fromkeys(COMMANDS[name][0] for name in wanted):
        importlib.import_module(f"nextscale.cli.{module_name}").add_commands(commands)
    for name, (_, help) in COMMANDS.items():
        if name not in commands.choices:  # listed for --help; never parsed, as argv does not name it
            commands.add_parser(name, help=help)
    return parser


def is_usage_error(err: BaseException) -> bool:
    """True for a user's mistake, to be reported in one line: a UsageError (CheckpointError included) or a file that
    is not there. Anything else, a plain ValueError included, is a bug and keeps its traceback."""
    return isinstance(err, (UsageError, FileNotFoundError))


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0, or 2 for a user error) when called with `argv`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(words).parse_args(words)
    try:
        args.func(args)
    except BaseException as err:  # TrainingInterrupted is a KeyboardInterrupt
        loop = sys.modules.get("nextscale.train.loop")  # only a loaded loop can have raised its errors
        if loop is not None and isinstance(err, loop.TrainingInterrupted):  # Ctrl-C: where it stopped, how to go on
            return _fail(args.command, str(err), 130, argv is not None, prefix="")
        if loop is not None and isinstance(err, loop.NonFiniteLossError):  # diverged: what a rerun resumes from
            return _fail(args.command, str(err), 1, argv is not None)
        if is_usage_error(err):
            return _fail(args.command, str(err), 2, argv is not None)
        raise
    return 0


def _fail(command: str, message: str, status: int, raise_exit: bool, prefix: str = "error: ") -> int:
    """One line on stderr; the status is returned to the console script, raised as SystemExit for callers."""
    print(f"nextscale {command}: {prefix}{message}", file=sys.stderr)
    if raise_exit:
        raise SystemExit(status)
    return status
