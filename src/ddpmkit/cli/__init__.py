"""The `ddpm` command: argv -> RunConfig -> one library call. No math here.

One module per command family (train, sample, evaluate, figures, store, edit), each with `register(sub)` that adds its
subcommands and returns {name: handler}; common.py holds the option groups they share. A user's mistake (UserError,
or a bad flag) is printed as one line on stderr and exits with code 2.
"""

from __future__ import annotations

import os
import sys

from ..errors import UserError
from ..progress import close_bars
from . import edit, evaluate, figures, sample, store, train
from .common import Parser
from .train import resolve_train_config

FAMILIES = (train, sample, evaluate, figures, store, edit)
__all__ = ["build_parser", "main", "resolve_train_config"]


def _build() -> tuple[Parser, dict]:
    parser = Parser(prog="ddpm", description="Denoising Diffusion Probabilistic Models (Ho et al. 2020).")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"ddpmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands: dict = {}
    for family in FAMILIES:
        commands.update(family.register(sub))
    return parser, commands


def build_parser() -> Parser:
    return _build()[0]


def main(argv: list[str] | None = None) -> int:
    parser, commands = _build()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return commands[args.command](args)
    except UserError as err:
        close_bars()  # the error must be the last line, not a progress bar drawn again after it
        print(f"ddpm {args.command}: error: {_rank_prefix(str(err))}{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        close_bars()
        print(f"ddpm {args.command}: interrupted", file=sys.stderr)
        return 130


def _rank_prefix(message: str) -> str:
    """'rank R: ' under torchrun with more than one process, so a failing rank names itself; else ''."""
    rank = os.environ.get("RANK")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or rank is None or message.startswith(f"rank {rank}:"):
        return ""
    return f"rank {rank}: "
