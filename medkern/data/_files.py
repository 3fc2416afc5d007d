"""What every reader does with its file arguments: check they exist, import its optional library,
and turn a library's failure on a damaged file into one clear ValueError."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def optional_import(module: str, package: str, op: str) -> ModuleType:
    """Import ``module`` for ``op``, or say which package to install (the readers' libraries are optional)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{op} needs the {package} package, which is not installed ({error}): "
                          f"pip install {package}  (or pip install medkern[data])") from None


def existing_file(path, op: str, what: str = "path") -> str:
    """``path`` as a string, after checking it names a file."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{op}: {what} must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{op}: {what} {path!r} is not an existing file")
    return path


def unreadable(op: str, path: str, error: BaseException, expected: str) -> ValueError:
    """The error for a file the library could not parse; raise it ``from None`` so one message tells all."""
    return ValueError(f"{op}: could not read {path!r} as {expected}: {type(error).__name__}: {error}")
