"""CLI-facing errors: each carries the exit code the CLI ends with (click's ClickException idea)."""

from __future__ import annotations


class CliError(Exception):
    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SpecError(CliError):
    """The spec (model.yaml) or what it points at is wrong: one line naming the key and the problem."""

    exit_code = 2


class DoesNotFit(CliError):
    exit_code = 1


class NotApplicable(Exception):
    """A candidate's step cannot run on this model (e.g. structured pruning of a non-Sequential model):
    the candidate is recorded as skipped with this reason, not as failed, and the search goes on."""
