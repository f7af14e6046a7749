"""The suite's two ways of not producing a number."""


class BenchError(RuntimeError):
    """A measured command failed: the suite stops (after cleaning up) rather than report it."""


class NotMeasured(Exception):
    """Raised by a measurement the suite cannot make yet; its message says why, and the report
    prints that message where the number would be."""
