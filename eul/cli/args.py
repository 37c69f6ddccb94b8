"""What the `eul` command line checks before it starts any work.

A mistake (a path that is not there, a folder that is not a model, a number out of range)
ends in one line on stderr that names the fix, with exit status 2; a store that does not
answer or work that fails ends the same way with exit status 1. Argument types, the parser
class and the path checks live here so that every command uses the same words.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

MODEL_FIX = "give a folder written by `eul train` (or a Hugging Face save_pretrained folder)"


class CliError(Exception):
    """Bad input the user can fix; printed as one line, exit status 2."""

    exit_code = EXIT_BAD_INPUT


class RunError(CliError):
    """The input was fine but the work could not be done (a store does not answer, a check
    failed); printed as one line, exit status 1."""

    exit_code = EXIT_FAILURE


# -- argument types: argparse turns their ValueError into "argument --x: ..." -----------------


def _number(kind: Callable[[str], float], text: str, what: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """A count that must be at least 1 (epochs, widths, sizes)."""
    value = int(_number(int, text, "a whole number"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A rate that must be above 0 (learning rates)."""
    value = _number(float, text, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text, "a number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def share(text: str) -> float:
    """A fraction between 0 and 1."""
    value = _number(float, text, "a number between 0 and 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


# -- the parser ---------------------------------------------------------------------------


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help where it has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = (
            action.option_strings
            and default not in (None, False, argparse.SUPPRESS)
            and "%(default)" not in text
            and "default" not in text
        )
        if shown:
            text = f"{text} (default: %(default)s)" if text else "default: %(default)s"
        return text or None


class EulParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line that points at the command's --help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            choices = re.findall(r"'([^']*)'", wrong.group(2))
            close = difflib.get_close_matches(wrong.group(1), choices, n=1)
            if close:
                message = f"{message[: wrong.start()]}unknown {wrong.group(1)!r}: did you mean "
                message += f"{close[0]!r}"
        self.exit(EXIT_BAD_INPUT, f"eul: error: {message}; see `{self.prog} --help`\n")


# -- paths --------------------------------------------------------------------------------


def existing_file(path: str | Path, option: str, fix: str = "check the path") -> Path:
    """`path` as a Path, if it is a file; else a CliError naming `option` and the fix."""
    path = Path(path)
    if path.is_dir():
        raise CliError(f"{option} {path} is a folder, not a file; {fix}")
    if not path.is_file():
        raise CliError(f"{option}: no file at {path}; {fix}")
    return path


def existing_dir(path: str | Path, option: str, fix: str = "check the path") -> Path:
    path = Path(path)
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "not there"
        raise CliError(f"{option} {path} is {what}; {fix}")
    return path


def model_dir(path: str | Path, option: str = "--model") -> Path:
    """A folder that holds a Hugging Face model: config.json with a model_type."""
    folder = existing_dir(path, option, MODEL_FIX)
    config = folder / "config.json"
    if not config.is_file():
        raise CliError(f"{option} {folder} is not a model folder (no config.json); {MODEL_FIX}")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError):
        raise CliError(
            f"{option} {folder}: config.json is not a JSON object; {MODEL_FIX}"
        ) from None
    if not model_type:
        raise CliError(f"{option} {folder}: config.json names no model_type; {MODEL_FIX}")
    return folder


def layer_dir(path: str | Path, option: str = "--layer") -> Path:
    """A folder that holds one unlearning layer (layer.safetensors)."""
    fix = "give a folder written by `eul unlearn`"
    folder = existing_dir(path, option, fix)
    if not (folder / "layer.safetensors").is_file():
        raise CliError(f"{option} {folder} holds no layer.safetensors; {fix}")
    return folder


def writable_path(path: str | Path, option: str, folder: bool = False) -> Path:
    """A place a command may write: not a file where a folder is wanted (or the reverse),
    and under a folder this user may create things in."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise CliError(f"{option} {path} is a file; give a folder")
    if not folder and path.is_dir():
        raise CliError(f"{option} {path} is a folder; give a file name")
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(f"{option} {path}: cannot write under {parent}; choose another path")
    return path
