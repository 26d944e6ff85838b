"""Progress of photos in faces: a bar with the face count, the model's work done and the time left.

The pipeline reports each UNet evaluation (with the number of faces it carried) through
the ``progress`` callable of the file and array APIs. A callable that also has a
``plan(faces, evaluations)`` method is told, before any model work, how many faces a
batch holds and about how many face-evaluations they need (anonymize: 4 per DDIM step
with the default plain steps; recover: 2 per step, none for a face whose original region
is stored), so a bar can show a total and the time left.

:class:`FaceCount` keeps that count and says which face is under way and the time left;
the CLI's :class:`FaceBar` (tqdm) and the web page (``faceveil.web.app.photo_progress``)
both show it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


def announce(progress: Any, faces: int, evaluations: int) -> None:
    """Tell ``progress`` what a batch is about to do, if it listens (``plan``)."""
    plan = getattr(progress, "plan", None)
    if callable(plan):
        plan(faces, evaluations)


def face_under_way(faces: int, evaluations: int, done: float) -> int:
    """Which face (1-based) the model is on, ``done`` of the ``evaluations`` planned for ``faces`` faces."""
    per_face = evaluations / max(1, faces)
    return max(1, min(faces, int(done // per_face) + 1)) if per_face else 1


def duration(seconds: float) -> str:
    """``"about 40 s"``, ``"about 3 min"``, ``"about 1 h 5 min"``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {int(seconds // 3600)} h {round(seconds % 3600 / 60)} min"


class FaceCount:
    """Faces and face-evaluations planned (``plan``) and done (``__call__``), as the pipeline reports them.

    ``on_change(self)``, if given, is called after every plan and evaluation: a display updates there."""

    def __init__(self, on_change: Callable[[FaceCount], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.faces = 0
        self.evaluations = 0
        self.done = 0
        self._clock = clock
        self._started: float | None = None  # at the first plan: detection and loading before it are not model work
        self._on_change = on_change

    def plan(self, faces: int, evaluations: int) -> None:
        if self._started is None and evaluations:
            self._started = self._clock()  # the model's work starts now
        self.faces += faces
        self.evaluations += evaluations
        self._changed()

    def __call__(self, n: int) -> None:
        self.done += n
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    def face(self) -> int:
        """The face under way, 1-based (0 before any plan)."""
        return face_under_way(self.faces, self.evaluations, self.done) if self.faces else 0

    def seconds_left(self) -> float | None:
        """From the pace of the evaluations since the first plan; ``None`` before the first one or without a plan."""
        if self._started is None or not self.evaluations or not self.done:
            return None
        pace = (self._clock() - self._started) / self.done
        return pace * max(0, self.evaluations - self.done)

    def text(self) -> str:
        """``"face 2 of 3, about 40 s left"`` (the time once the model's pace is known); ``""`` before a plan."""
        if not self.faces:
            return ""
        if not self.evaluations:
            return f"{self.faces} face(s)"
        left = self.seconds_left()
        return f"face {self.face()} of {self.faces}" + (f", {duration(left)} left" if left is not None else "")


class FaceBar:
    """A tqdm bar counting the model's face-evaluations against the planned total, with the faces as a postfix.

    tqdm shows the rate and, once a total is planned, the time left. ``faces`` and
    ``evaluations`` accumulate over the batches of a run."""

    def __init__(self, desc: str, enabled: bool) -> None:
        from tqdm import tqdm

        self.faces = 0
        self.evaluations = 0
        self._bar = tqdm(desc=desc, unit=" face-evals", leave=False, disable=not enabled, dynamic_ncols=True,
                         file=sys.stderr, total=None)

    def plan(self, faces: int, evaluations: int) -> None:
        self.faces += faces
        self.evaluations += evaluations
        self._bar.total = self.evaluations or None
        self._bar.set_postfix_str(self._faces_text(), refresh=True)

    def _faces_text(self) -> str:
        if not self.evaluations:
            return f"{self.faces} face(s)"
        return f"face {face_under_way(self.faces, self.evaluations, self._bar.n)}/{self.faces}"

    def __call__(self, n: int) -> None:
        self._bar.update(n)
        if self.faces:
            self._bar.set_postfix_str(self._faces_text(), refresh=False)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> FaceBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
