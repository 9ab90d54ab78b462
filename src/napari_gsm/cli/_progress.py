"""Progress of a long command, on stderr: a bar on a terminal, a line now and then elsewhere.

stdout stays free for the results (and ``--json``'s one document), so progress is shown
with ``--json`` too. In a log or a pipe a bar would be a stream of carriage returns, so
there a line like ::

    napari-gsm train: cascade level 2/5 130/250 (52 %), 00:41 elapsed

is printed at most every :data:`DEFAULT_INTERVAL` seconds (the environment variable
``NAPARI_GSM_PROGRESS_SECONDS`` changes that), plus the line that ends the job once a
line has been printed, so a log shows when a long job finished. Short jobs print nothing.
"""

from __future__ import annotations

import os
import sys
import time

from ._output import PROG

#: Seconds between two progress lines when stderr is not a terminal.
DEFAULT_INTERVAL = 10.0
INTERVAL_ENV = "NAPARI_GSM_PROGRESS_SECONDS"


def _interval():
    text = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value >= 0 else DEFAULT_INTERVAL


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """``progress(done, total, what)`` for one command; ``what`` names the stage.

    One display for the whole command, whatever the stages (training reports
    ``'detectors'``, then e.g. ``'cascade level 2/5'``, counting from 0 again when the
    total changes): on a terminal a single bar labelled with the stage, never cleared
    before :meth:`close`, so the screen does not go blank between stages.

    Parameters
    ----------
    command : str
        The subcommand, named in the lines.
    stream : file, optional
        Default ``sys.stderr`` at the time of the call.
    interval : float, optional
        Seconds between lines off a terminal; default :data:`DEFAULT_INTERVAL` or
        ``$NAPARI_GSM_PROGRESS_SECONDS``.
    clock : callable, optional
        Seconds, monotonic (a parameter for tests).
    """

    def __init__(self, command, *, stream=None, interval=None, clock=time.monotonic):
        self.command = command
        self.stream = sys.stderr if stream is None else stream
        self.interval = _interval() if interval is None else float(interval)
        self.clock = clock
        self.tty = _isatty(self.stream)
        self.bar = None
        self.t0 = self.last_line = clock()
        self.printed = False

    def __call__(self, done, total, what):
        if self.tty:
            self._draw(done, total, str(what))
        else:
            self._line(done, total, str(what))

    def _draw(self, done, total, what):
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=what, unit="img", file=self.stream, leave=False,
                            dynamic_ncols=True)
        bar = self.bar
        relabel = what != bar.desc
        if relabel:
            bar.set_description_str(what, refresh=False)
        if total != bar.total:
            bar.reset(total=total)  # a new count (e.g. detectors, then cascade levels)
        shown = bar.update(done - bar.n)
        # a new stage or the count's end is drawn now, not after update's mininterval
        if (relabel or done >= total) and not shown:
            bar.refresh()

    def _line(self, done, total, what):
        now = self.clock()
        finished = done >= total and self.printed
        if now - self.last_line < self.interval and not finished:
            return
        pct = 100.0 * done / total if total else 100.0
        elapsed = time.strftime("%H:%M:%S", time.gmtime(now - self.t0)).removeprefix("00:")
        print(f"{PROG} {self.command}: {what} {done}/{total} ({pct:.0f} %), {elapsed} elapsed",
              file=self.stream, flush=True)
        self.last_line, self.printed = now, not finished

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
