"""The argument parser's own behaviour: one-line errors, the flag meant for a mistyped one, and
values that start with a dash.

argparse reports ``--dst-clod`` as an unrecognized argument only after the required
``--dst-cloud`` is found missing, and takes ``-1/2`` in ``--shard -1/2`` for a flag; both
errors would tell a newcomer nothing.  :class:`Parser` looks at the words first.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .errors import UsageError

__all__ = ["Parser"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one :class:`UsageError` line (see the module docstring)."""

    def error(self, message: str) -> NoReturn:
        # One clear line, no usage dump.
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """As argparse does, but a mistyped flag is named with the one meant, and a value that
        starts with ``-`` (``--shard -1/2``) is taken as the value it is."""
        argv = list(sys.argv[1:] if args is None else args)
        command = self._command(argv)
        argv = _attach_dashed_values(argv, command)
        for token in argv:
            flag = token.split("=", 1)[0]
            if token.startswith("--") and len(token) > 2 and not _known(flag, command):
                close = difflib.get_close_matches(flag, sorted(_flags(command)), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]}?)" if close else ""
                command.error(f"unrecognized argument {flag}{hint}")
        return super().parse_args(argv, namespace)

    def _command(self, argv: list[str]) -> argparse.ArgumentParser:
        """The (sub)parser the words of ``argv`` choose (``copy``, ``plan copy``, …)."""
        parser: argparse.ArgumentParser = self
        words = iter(token for token in argv if not token.startswith("-"))
        while True:
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            word = next(words, None) if subs else None
            if word is None or word not in subs[0].choices:
                return parser
            parser = subs[0].choices[word]


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")}


def _known(flag: str, parser: argparse.ArgumentParser) -> bool:
    # argparse takes an unambiguous prefix (--dry for --dry-run); it reports an ambiguous one itself.
    return any(known.startswith(flag) for known in _flags(parser))


def _attach_dashed_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--shard -1/2`` → ``--shard=-1/2``: argparse would take ``-1/2`` for a flag and say only
    that --shard expected one argument; the value's own check then says what is wrong with it."""
    takes_value = {
        flag for action in parser._actions if action.nargs is None and action.option_strings
        for flag in action.option_strings
    }  # fmt: skip
    out: list[str] = []
    for token in argv:
        if out and out[-1] in takes_value and token.startswith("-") and not _known(token.split("=")[0], parser):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out
