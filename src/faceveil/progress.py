"""Progress of photos in faces: a bar with the face count, the model's work done and the time left.

The pipeline reports each UNet evaluation (with the number of faces it carried) through
the ``progress`` callable of the file and array APIs. A callable that also has a
``plan(faces, evaluations)`` method is told, before any model work, how many faces a
batch holds and about how many face-evaluations they need (anonymize: 4 per DDIM step
with the default plain steps; recover: 2 per step, none for a face whose original region
is stored), so a bar can show a total and the time left.
"""

from __future__ import annotations

import sys
from typing import Any


def announce(progress: Any, faces: int, evaluations: int) -> None:
    """Tell ``progress`` what a batch is about to do, if it listens (``plan``)."""
    plan = getattr(progress, "plan", None)
    if callable(plan):
        plan(faces, evaluations)


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
        per_face = self.evaluations / max(1, self.faces)
        started = min(self.faces, int(self._bar.n // per_face) + 1)
        return f"face {started}/{self.faces}"

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
