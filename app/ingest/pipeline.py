"""The pipeline: what runs inside the ingest transaction for each newly stored activity.

A stage writes what follows from the activity (the entity cache, the alert, the
notification outbox) on the delivery's own connection, so that it commits or rolls
back with the activity itself. The stages and their order are chosen in one place,
:func:`app.services.build_pipeline`; this module only says what a stage is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class StoredActivity:
    """The columns ingest derived from a payload."""

    id: int
    source: str
    received_at: float
    row: dict[str, Any]


ActivityHook = Callable[[Connection, dict[str, Any], StoredActivity], None]

# Given the stored columns of a batch's new activities before any of them is stored:
# a block inside which the stage runs for them (see Stage.prepare).
BatchHook = Callable[[Connection, Sequence[Mapping[str, Any]]], AbstractContextManager[None]]


class Stage(NamedTuple):
    """One named step of the pipeline (the name shows in benchmarks and tests).

    ``prepare``, when given, is what the stage can do once for a whole batch (take its
    rows' locks in one statement rather than one per activity); ``run`` must give the
    same result without it.
    """

    name: str
    run: ActivityHook
    prepare: BatchHook | None = None


class Pipeline:
    """Stages run in order, for new activities only (a redelivery runs none)."""

    def __init__(self, stages: Iterable[Stage] = ()) -> None:
        # A list, so that a test or a benchmark can add or remove a stage on a built app.
        self.stages: list[Stage] = list(stages)

    def run(self, conn: Connection, payload: dict[str, Any], stored: StoredActivity) -> None:
        """Run every stage on ``conn``; an exception rolls the delivery back."""
        for stage in self.stages:
            stage.run(conn, payload, stored)

    @contextmanager
    def prepared(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> Iterator[None]:
        """Every stage's ``prepare`` for the batch ``rows`` (activities that will be new)."""
        with ExitStack() as stack:
            for stage in self.stages:
                if stage.prepare is not None and rows:
                    stack.enter_context(stage.prepare(conn, rows))
            yield

    def names(self) -> list[str]:
        """The stage names, in order."""
        return [stage.name for stage in self.stages]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``.

        :raises KeyError: no stage has that name.
        """
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)
