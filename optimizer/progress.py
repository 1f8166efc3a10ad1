"""Progress bars (rich, on stderr) for the slow parts: export, calibration, fine-tuning, evaluation.

Steps receive a `Progress` through their StepContext and open a task with a total; under `--quiet`
(scripts, CI logs) the same calls do nothing, so no step branches on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

Advance = Callable[..., None]  # advance(n=1, description=..., total=...)
T = TypeVar("T")


class Progress(Protocol):
    def task(self, description: str, total: int | None = None) -> contextlib.AbstractContextManager[Advance]: ...

    def status(self, description: str) -> contextlib.AbstractContextManager[Advance]: ...


class Quiet:
    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        yield lambda n=1, **fields: None

    def status(self, description: str):
        return self.task(description)


QUIET = Quiet()


class Bars:
    """One live display for a whole run; each task is a bar (or a spinner when its total is unknown)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._bars = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,  # the table printed at the end is the record; bars are only for waiting
        )

    def __enter__(self) -> Bars:
        self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.stop()

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        task_id = self._bars.add_task(description, total=total)

        def advance(n: int = 1, **fields) -> None:
            self._bars.update(task_id, advance=n, **fields)

        try:
            yield advance
        finally:
            self._bars.remove_task(task_id)

    def status(self, description: str):
        return self.task(description)


def counted(items: Iterable[T], advance: Advance, planned: int) -> Iterator[T]:
    """`items`, one step of the bar each. Items past the `planned` total (the op-wise fallback's repaired
    candidates, known only once the plan has run) raise the total as they come: the bar never reads 19/18."""
    for done, item in enumerate(items):
        if done >= planned:
            advance(0, total=done + 1)
        yield item
        advance(1)


def progress_for(quiet: bool) -> contextlib.AbstractContextManager[Progress]:
    """`with progress_for(quiet) as progress:` — the bars live exactly as long as the block."""
    return contextlib.nullcontext(QUIET) if quiet else Bars()
