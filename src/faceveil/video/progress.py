"""Progress bars for videos: one bar of frames per phase, with frames per second and the time left."""

from __future__ import annotations

import sys


class FrameBars:
    """``update(phase, done, total)`` as :data:`faceveil.video.veil.VideoProgress`; a tqdm bar per phase.

    tqdm shows the rate (frames/s) and, once the total is known, the time left; after a
    resume the bar starts at the first frame still to do, so the rate counts this run only.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar = None
        self._phase = None

    def update(self, phase: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if phase != self._phase:
            self.close()
            self._phase = phase
            self._bar = tqdm(desc=phase, total=total or None, initial=done, unit=" frames", leave=False,
                             disable=not self.enabled, dynamic_ncols=True, file=sys.stderr)
        bar = self._bar
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> FrameBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
