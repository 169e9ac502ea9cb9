"""A one-line progress bar on a terminal; silent anywhere else (cron, pipes, logs)."""
import sys
import time


class Progress:
    """Call `advance(n)` as work is done; draws at most ~10 times a second on a TTY.

    Nothing is drawn until the work has run for `delay` seconds, so quick runs stay quiet.
    """

    def __init__(self, total, label="", stream=None, enabled=None, delay=0.5):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(int(total), 1)
        self.label = label
        self.done = 0
        self.start = time.monotonic()
        self.delay = delay
        self._last_draw = 0.0
        self._drawn = False

    def advance(self, n):
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start >= self.delay and now - self._last_draw >= 0.1:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now):
        frac = min(self.done / self.total, 1.0)
        width = 30
        filled = int(frac * width)
        rate = self.done / max(now - self.start, 1e-9) / 1e6
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}% "
                          f"{self.done / 2**20:,.0f}/{self.total / 2**20:,.0f} MiB {rate:,.0f} MB/s ")
        self.stream.flush()
        self._drawn = True

    def close(self):
        if self._drawn:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
