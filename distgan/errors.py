"""Errors that a user can cause, each reported by the CLI as one message and exit code 1."""


class DistganError(Exception):
    """Base class of every error whose message is meant for the user, not a traceback.

    `rank_specific` is False for errors that every process of a run raises
    alike, so only the main process prints them; True for errors that only
    some processes see, which every process that raises one prints.
    """

    rank_specific = False


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


class CollectiveError(TrainingError):
    """A collective operation that failed or timed out because another process, node or the network was lost."""

    rank_specific = True
class EvaluationError(DistganError):
    """An evaluation that cannot run: an unknown data set, a missing feature extractor or its weights."""
