"""What ``corral batch`` shows while it runs and at the end.

On a terminal (stderr a tty): one progress line redrawn in place -- a bar, the counts
(done, failed, running, total), the time so far and an estimate of the time left -- with
the failures and retries printed above it as they happen.  Otherwise (a pipe, a file, CI):
one plain line per job as it ends, ``job NAME: exit 0 in 0.12 s``.  ``--quiet``: the failed
jobs' lines only.  The summary (counts, then a table of the failed jobs) goes to stdout.
"""

from __future__ import annotations

import os
from typing import TextIO

REDRAW = 0.25  # seconds between redraws of the progress line
MAX_ROWS = 20  # failed jobs listed in the summary; summary.json has them all


def seconds(value: float) -> str:
    if value < 60:
        return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def outcome(result) -> str:
    """"exit 0", "timed out after 5.00 s (exit 137)" or "error: <message>"."""
    if result.error is not None:
        return f"error: {result.error}"
    if result.timed_out:
        limit = result.job.limits.time
        return f"timed out after {seconds(limit)} (exit {result.exit_status})"
    return f"exit {result.exit_status}"


def job_line(result) -> str:
    line = f"job {result.name}: {outcome(result)} in {seconds(result.duration)}"
    if result.attempts > 1:
        line += f" (attempt {result.attempts})"
    return line


class PlainView:
    """A line per finished job (and per retry)."""

    def __init__(self, stream: TextIO, failures_only: bool = False) -> None:
        self.stream = stream
        self.failures_only = failures_only

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, tally) -> None:
        pass

    async def ticker(self, tally) -> None:
        pass

    def finished(self, finished, tally) -> None:
        if finished.reason is not None or not self.failures_only:
            self._print(job_line(finished.result))

    def retrying(self, result, planned) -> None:
        if not self.failures_only:
            self._print(f"{job_line(result)}; trying again (attempt {result.attempts + 1} "
                        f"of {planned.tries})")

    def interrupted(self, tally) -> None:
        self._print(f"corral batch: {tally.interrupted}: stopping {len(tally.running)} "
                    "running jobs; no new job starts")

    def close(self, tally) -> None:
        pass


class BarView(PlainView):
    """The progress line, redrawn in place; failures and retries printed above it."""

    _tally = None  # until start()

    def _print(self, text: str) -> None:
        self.stream.write("\r\x1b[K" + text + "\n")
        if self._tally is not None:
            self._draw_line(self._tally)
        self.stream.flush()

    def start(self, tally) -> None:
        self._tally = tally
        self._draw_line(tally)

    async def ticker(self, tally) -> None:
        import trio

        while True:
            await trio.sleep(REDRAW)
            self._draw_line(tally)

    def finished(self, finished, tally) -> None:
        if finished.reason is not None:
            self._print(job_line(finished.result))
        else:
            self._draw_line(tally)

    def retrying(self, result, planned) -> None:
        self._print(f"{job_line(result)}; trying again (attempt {result.attempts + 1} "
                    f"of {planned.tries})")

    def close(self, tally) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()

    def _draw_line(self, tally) -> None:
        eta = tally.eta()
        text = (f" {tally.done}/{tally.total} done  {tally.failed} failed  "
                f"{len(tally.running)} running  {seconds(tally.elapsed())}  ETA "
                f"{'--' if eta is None else seconds(eta)}")
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns or 80
        except OSError:
            columns = 80
        width = max(0, min(30, columns - len(text) - 3))
        filled = width * tally.done // max(tally.total, 1)
        bar = f"[{'#' * filled}{'.' * (width - filled)}]" if width >= 5 else ""
        self.stream.write("\r\x1b[K" + (bar + text)[: columns - 1])
        self.stream.flush()


def make_view(stream: TextIO, quiet: bool) -> PlainView:
    if quiet:
        return PlainView(stream, failures_only=True)
    try:
        tty = stream.isatty()
    except ValueError:
        tty = False
    return BarView(stream) if tty else PlainView(stream)


def summary_text(summary: dict, results_dir: str | None) -> str:
    """The end of a batch: one line of counts, then the failed jobs."""
    c = summary["counts"]
    parts = [f"{c['succeeded']} succeeded", f"{c['failed']} failed"]
    kinds = [f"{c[k]} {label}" for k, label in (("exit_status", "exit status"),
                                                ("timed_out", "timed out"),
                                                ("error", "could not start")) if c[k]]
    if kinds:
        parts[-1] += f" ({', '.join(kinds)})"
    lines = [f"{c['total']} jobs in {seconds(summary['duration'])}: {', '.join(parts)}; "
             f"{c['retried']} retried"]
    if summary["interrupted"]:
        lines.append(f"interrupted ({summary['interrupted']}): {c['stopped']} stopped, "
                     f"{c['not_run']} not run")
    # Errors and timeouts first: rarer, and more telling than exit statuses.
    order = {"error": 0, "timed_out": 1, "exit_status": 2}
    failed = sorted((j for j in summary["jobs"] if j["status"] == "failed"),
                    key=lambda j: order[j["reason"]])
    if failed:
        rows = [("JOB", "ATTEMPTS", "TIME", "RESULT")]
        for job in failed[:MAX_ROWS]:
            rows.append((job["name"], str(job["attempts"]), seconds(job["duration"]),
                         _result_text(job)))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines.append("failed jobs:")
        lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[3]
                  for r in rows]
        if len(failed) > MAX_ROWS:
            more = f"  ... and {len(failed) - MAX_ROWS} more"
            lines.append(more + (f" (in {results_dir}/summary.json)" if results_dir else ""))
    if results_dir:
        lines.append(f"results: {results_dir}")
    return "\n".join(lines) + "\n"


def _result_text(job: dict) -> str:
    if job["reason"] == "error":
        return f"error: {job['error']}"
    if job["reason"] == "timed_out":
        return f"timed out (exit {job['exit_status']})"
    return f"exit {job['exit_status']}"
