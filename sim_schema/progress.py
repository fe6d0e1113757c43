"""A tiny progress bar on stderr, drawn only when stderr is a terminal.

No dependency and no effect on pipes, logs or CI output: when the stream is not a TTY,
every call is a no-op, so commands can use it unconditionally.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

_WIDTH = 24
_REDRAW_EVERY = 0.1  # seconds: redrawing on every row would cost more than the export


class Progress:
    """Counts units (rows, by default) towards an optional total.

    >>> with Progress("agent_states", total=1000) as bar:
    ...     bar.advance(500)
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "rows",
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self._stream) if enabled is None else enabled
        self._started = time.monotonic()
        self._last_draw = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled and time.monotonic() - self._last_draw >= _REDRAW_EVERY:
            self._draw()

    def set(self, done: int) -> None:
        """Set the absolute count (when the caller knows it better than a sum of steps)."""
        self.advance(done - self.done)

    def render(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            frac = min(self.done / self.total, 1.0)
            filled = int(frac * _WIDTH)
            bar = "#" * filled + "." * (_WIDTH - filled)
            count = f"{self.done:,}/{self.total:,} {self.unit} {frac:4.0%} [{bar}]"
        else:
            count = f"{self.done:,} {self.unit}"
        return f"{self.label}: {count} {rate:,.0f} {self.unit}/s"

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        self._stream.write("\r\x1b[K" + self.render())
        self._stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or fake streams
        return False
