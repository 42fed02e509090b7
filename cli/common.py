"""What every command shares: settings, logging, and turning errors into one sentence."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from ingest.errors import LinklensError
from ingest.settings import Settings, load_settings

P = ParamSpec("P")
R = TypeVar("R")

# Results go to stdout, everything for people watching (progress, logs, errors) to stderr.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# C0 and C1 control characters but tab and newline: printed raw, a stranger's ESC could move the cursor,
# retitle the terminal or open a hyperlink (ESC ] 8); Rich passes ESC through, even inside a Text.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(value: object) -> str:
    """Text from a list, a page or a server, safe to print in a terminal: control characters as `\\x1b` escapes."""
    return _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def plain(value: object, style: str = "") -> Text:
    """Text from a list, a page or a server as Rich shows it literally: never markup (`[link=…]`, `[/]`), never
    an emoji code, no control characters. Every stranger string printed through Rich goes through here."""
    return Text(shown(value), style=style)


class RunState:
    """Flags of the root command, read by the error wrapper."""

    debug = False


# The model libraries write to stderr around our logging: their own tqdm bars (transformers'
# "Loading weights"), their own handlers, Python warnings. Read when they are imported, which
# is after this (the commands import them lazily); children (extraction, Ray) inherit them.
# A value the user set wins.
QUIET_LIBRARIES_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub's bars, and transformers' (it asks huggingface_hub)
    "TRANSFORMERS_VERBOSITY": "error",  # transformers logs through a stderr handler of its own
    "HF_HUB_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TQDM_DISABLE": "1",  # any other tqdm bar (tqdm reads TQDM_* as defaults)
}


# Whose warnings a normal run shows: linklens's own. Other libraries' show from -v on (errors always).
OWN_LOGGERS = ("ingest", "index", "serve", "cli")


class _OwnOrErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.partition(".")[0] in OWN_LOGGERS


def configure_logging(verbose: int) -> None:
    """One stderr handler at the chosen level; library chatter only with -v.

    The level is set on the handler too: some libraries lower their own logger's
    level (bm25s sets DEBUG on import), and a handler without a level would print
    their debug lines at default verbosity. Without -v, the libraries' progress bars
    and Python warnings are off too (`QUIET_LIBRARIES_ENV`; warnings are logged
    through `py.warnings` and shown from -v on), so a normal run prints linklens's
    own progress and summary only; other libraries' log warnings wait for -v too.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    # With -v each line says when (milliseconds since the process started), so a slow run's log is its timeline.
    stamp = "%(relativeCreated)8.0fms " if verbose else ""
    handler.setFormatter(logging.Formatter(stamp + "%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.captureWarnings(True)
    if verbose == 0:
        for name, value in QUIET_LIBRARIES_ENV.items():
            os.environ.setdefault(name, value)
        handler.addFilter(_OwnOrErrors())  # also keeps out `py.warnings`, where captured warnings go


def settings() -> Settings:
    return load_settings()


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a LinklensError into one red sentence and exit 1; Ctrl-C into a resume hint."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except LinklensError as exc:
            if RunState.debug:
                raise
            err.print(Text("error:", style="red"), plain(exc))  # the message may quote a list, a URL, a server
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted — nothing finished was lost; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper
