"""Typed errors. Every message says what was expected, what was found and what to do."""

from __future__ import annotations


class DpsFastError(Exception):
    """Base class of every error dps-fast raises on purpose."""


class UnknownModelError(DpsFastError, ValueError):
    """A model or architecture name that is not in the registry."""


class WeightsError(DpsFastError, ValueError):
    """A weights file that cannot be used: not a state dict, wrong keys or shapes, bad hash."""


class BundleError(DpsFastError):
    """A model bundle that is missing, corrupt, from another schema, or fails its hashes."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle for this model in the cache and no way to make one here."""


class OutputValidationError(DpsFastError):
    """Exported graphs disagree with PyTorch beyond tolerance; lists every failing output."""

    def __init__(self, model: str, failures: list[str]) -> None:
        self.model = model
        self.failures = failures
        lines = "\n".join(f"  - {f}" for f in failures)
        super().__init__(
            f"export of {model!r} failed validation against PyTorch "
            f"({len(failures)} output(s) over tolerance):\n{lines}"
        )


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A ``--weights`` / ``weights=`` file that does not exist."""


class ProviderError(DpsFastError, RuntimeError):
    """The requested ONNX Runtime execution provider is not available."""


class DistributedError(DpsFastError):
    """A distributed (Ray) run that cannot start or cannot finish: resources, a worker that
    keeps crashing, no progress, an output folder that cannot be resumed."""


class InputError(DpsFastError, ValueError):
    """An image or array the engine cannot take: shape, dtype, value range, size, NaN."""


class InputTypeError(InputError, TypeError):
    """An input of a type the engine does not read (e.g. uint16 arrays, generators of arrays)."""


class ImageDecodeError(InputError):
    """An image file (or bytes) that cannot be read or decoded: missing, truncated, not an
    image, over the pixel limit. The message names the file and what to do."""


class PairingError(DpsFastError, ValueError):
    """The inputs cannot be paired at all (missing folder, no images, bad manifest)."""
