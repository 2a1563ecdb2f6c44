"""Errors a user can fix: bad params, bad data, bad checkpoints. Stages report them in one line."""


class PipelineError(ValueError):
    """Base of the errors whose message names the key or file at fault and what was expected."""


class DataError(PipelineError):
    """Bad or missing data; the message names the file(s) and what was expected."""


class DownloadError(DataError):
    """A download failed, or a file does not match its expected size or checksum."""


class SpacyModelError(PipelineError):
    """A spaCy pipeline is not installed or cannot parse."""


class CheckpointError(PipelineError):
    """A weight file is missing, unreadable or does not fit the module."""


class ResizeError(PipelineError):
    """A model cannot be resized to the requested grid."""


class CountsError(PipelineError):
    """A per-image counts file is unreadable, malformed or disagrees with its run."""


class PreviewError(PipelineError):
    """A previews file is unreadable or malformed."""


class NonFiniteLossError(PipelineError):
    """Training produced a NaN or infinite loss (a learning rate too high, or broken data)."""


class ConfigError(PipelineError):
    """A params.yaml value is missing, of the wrong type or outside its allowed values."""
