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
