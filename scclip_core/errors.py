"""User-facing errors: each message says what went wrong and how to fix it."""


class ScclipError(Exception):
    """Base class for every error the engine raises on purpose."""


class UnknownModelError(ScclipError, ValueError):
    """The model name is neither a known alias nor an open_clip architecture."""


class WeightsUnavailableError(ScclipError, RuntimeError):
    """Weights could not be found, downloaded or loaded."""


class InputError(ScclipError, ValueError):
    """Bad user input: class text, image, or option values."""
