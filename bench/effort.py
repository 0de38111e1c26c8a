"""How much a benchmark run measures, by name: `full` gives the figures worth keeping, `quick` a look in a few
minutes, `smoke` runs every benchmark once on a few inputs to check that it runs and reports (its numbers mean
nothing: the test suite's mode)."""
from __future__ import annotations

from typing import TypeVar

from demo import bundle_layout as layout

EFFORTS = ("smoke", "quick", "full")
T = TypeVar("T")


def pick(effort: str, smoke: T, quick: T, full: T) -> T:
    """The setting for `effort`, each written beside the others where a benchmark sizes its work."""
    return {"smoke": smoke, "quick": quick, "full": full}[effort]


def measured_variants(effort: str) -> tuple[str, ...]:
    """The encoder variants a serving or explanation benchmark measures: a smoke run checks the rows, so int8 alone."""
    return ("int8",) if effort == "smoke" else layout.VARIANTS
