"""Errors that a user can cause, each reported by the CLI as one message and exit code 1."""


class DistganError(Exception):
    """Base class of every error whose message is meant for the user, not a traceback."""


class ConfigError(DistganError):
    """An invalid option, config file or config key."""


class DataError(DistganError):
    """A missing, empty or unreadable data set."""


class CheckpointError(DistganError):
    """A missing, incomplete or incompatible checkpoint or run directory."""


class ExportError(DistganError):
    """An ONNX export that failed or did not match PyTorch within the tolerance."""


class InputError(DistganError):
    """An input to an exported model that does not match its metadata."""


class TrainingError(DistganError):
    """A run that cannot continue, such as one whose losses stay non-finite."""


class EvaluationError(DistganError):
    """An evaluation that cannot run: an unknown data set, a missing feature extractor or its weights."""
