"""Errors a user can fix: bad params, bad data, bad checkpoints. Stages report them in one line."""


class PipelineError(ValueError):
    """Base of the errors whose message names the key or file at fault and what was expected."""
