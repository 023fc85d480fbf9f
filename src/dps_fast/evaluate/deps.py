"""The ``[eval]`` extra (scipy, matplotlib), imported only when used."""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from .._install import install_command
from ..errors import DpsFastError


class MissingExtraError(DpsFastError, ImportError):
    """scipy or matplotlib is missing: the message gives the install line."""


@functools.cache
def need(module: str) -> ModuleType:
    """Import ``module`` (a scipy or matplotlib module) or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"dps-fast evaluate needs {module.split('.')[0]} ({e}); "
            f"install it with: {install_command('eval')}"
        ) from None


def check() -> None:
    """Raise :class:`MissingExtraError` unless scipy is importable (plots check matplotlib)."""
    need("scipy.stats")
    need("scipy.optimize")
