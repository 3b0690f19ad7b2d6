"""Collect every independent mistake of a topology, report them together.

A file with three mistakes should cost one run, not three. Validation therefore records
problems instead of raising on the first, and raises once at the end with all of them.

How a check reports (the whole mechanism a new check needs):

    def check_something(topo: Topology, problems: Problems) -> None:
        if bad:
            problems.add("modules.images.foo", "what is wrong and how to fix it")   # record, go on
        with problems.guard():      # or: run code that raises TopologyError; record it, go on
            check_that_raises(...)

and call it from `validate.finalize` (or from `mimo-run check`) with the topology's `Problems`;
`problems.stop()` raises a `TopologyErrors` if anything was recorded, for checks whose input a
previous mistake would make meaningless (a dependent error). `TopologyErrors` is a `TopologyError`
(its fields are the first problem's), so code that catches one error keeps working; its `line()`
is one `error: ...` line per problem.
"""

import contextlib
from typing import Iterator, List

from mimo_runtime.errors import TopologyError, UserError


class TopologyErrors(TopologyError):
    """Several independent mistakes, in the order validation found them."""

    def __init__(self, errors: List[UserError]):
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(getattr(first, "source", ""), getattr(first, "field", ""), getattr(first, "message", str(first)))
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return self.args[0]

    def line(self) -> str:
        return "\n".join(e.line() for e in self.errors)


def flatten(error: UserError) -> List[UserError]:
    return list(error.errors) if isinstance(error, TopologyErrors) else [error]


class Problems:
    """The problems found so far in one topology source."""

    def __init__(self, source: str):
        self.source = source
        self.errors: List[UserError] = []

    def add(self, field: str, message: str) -> None:
        self.errors.append(TopologyError(self.source, field, message))

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run one independent check: a `TopologyError` it raises is recorded, not propagated."""
        try:
            yield
        except TopologyError as e:
            self.errors.extend(flatten(e))

    def stop(self) -> None:
        """Raise everything recorded so far (nothing happens when there is nothing). A mistake
        inherited by several modules (a `train.optimizer` key) is one line, not one per module."""
        unique = {str(e): e for e in self.errors}
        self.errors = list(unique.values())
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise TopologyErrors(self.errors)
