"""Package version (single source of truth for pyproject and the CLI)."""

__version__ = "0.1.0"
