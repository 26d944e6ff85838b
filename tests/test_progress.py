"""Progress in faces: the pipeline plans each batch's faces and evaluations; the CLI's bar shows them."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from faceveil.cli import main
from faceveil.engine import EngineSettings
from faceveil.keys import Key
from faceveil.pipeline import Settings
from faceveil.progress import FaceBar

from conftest import lfw_face

STEPS = 3


class Recorder:
    """A progress callable that listens to plans, as a bar does."""

    def __init__(self):
        self.plans, self.done = [], 0

    def plan(self, faces, evaluations):
        self.plans.append((faces, evaluations))

    def __call__(self, n):
        self.done += n


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_plan_is_the_work_done_to_anonymize_and_to_recover(pixel_model, tmp_path):
    from faceveil.api import anonymize_files, recover_files

    group = np.concatenate([lfw_face(n) for n in ("Abel_Pacheco", "Angela_Bassett", "Ann_Veneman")], axis=1)
    Image.fromarray(group).save(tmp_path / "group.png")
    Image.fromarray(lfw_face("Angela_Bassett")).save(tmp_path / "one.png")
    pairs = [(tmp_path / "group.png", None), (tmp_path / "one.png", None)]
    key = Key.generate()
    settings = Settings(EngineSettings(steps=STEPS, mixing="signs"))
    rec = Recorder()
    results = anonymize_files(pairs, key, model=pixel_model, settings=settings, progress=rec)
    faces = sum(len(r.faces) for r in results)
    assert faces >= 4 and rec.plans == [(faces, faces * 4 * STEPS)]
    assert rec.done == faces * 4 * STEPS  # plain steps: invert, sample, then the replay's invert and sample

    rec = Recorder()
    back = recover_files([(r.outputs[0], None) for r in results], key, model=pixel_model, progress=rec)
    for (source, _), result in zip(pairs, back):
        assert np.array_equal(np.asarray(Image.open(result.outputs[0])), np.asarray(Image.open(source)))
    (planned_faces, planned_evals), = rec.plans
    assert planned_faces == faces and planned_evals == rec.done  # faces stored as their region need no model
    assert rec.done % (2 * STEPS) == 0


def test_face_bar_shows_the_face_count_and_a_total(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with FaceBar("anonymize group.png", True) as bar:
        bar.plan(3, 3 * 40)
        for _ in range(50):
            bar(1)
        assert bar.faces == 3 and bar.evaluations == 120
        assert "face 2/3" in terminal.getvalue() or bar._faces_text() == "face 2/3"
    shown = terminal.getvalue()
    assert "/120" in shown and "face" in shown


def test_the_command_shows_faces_and_time_left_on_a_terminal(pixel_model_dir, tmp_path, monkeypatch):
    key = tmp_path / "k.key"
    assert main(["keygen", str(key)]) == 0
    photo = tmp_path / "group.png"
    Image.fromarray(np.concatenate([lfw_face("Abel_Pacheco"), lfw_face("Angela_Bassett")], axis=1)).save(photo)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = [str(photo), "--key", str(key), "--model", str(pixel_model_dir), "--steps", str(STEPS)]
    assert main(["anonymize", *args]) == 0
    shown = terminal.getvalue()
    assert "face 1/2" in shown and "face 2/2" in shown
    assert f"/{2 * 4 * STEPS}" in shown and "<" in shown  # a total, and tqdm's time left
    assert (tmp_path / "group.veiled.png").is_file()


@pytest.mark.parametrize("quiet", [True])
def test_no_bar_when_quiet(pixel_model_dir, tmp_path, monkeypatch, quiet):
    key = tmp_path / "k.key"
    assert main(["keygen", str(key)]) == 0
    photo = tmp_path / "one.png"
    Image.fromarray(lfw_face("Angela_Bassett")).save(photo)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["anonymize", str(photo), "--key", str(key), "--model", str(pixel_model_dir), "--steps", "2", "--quiet"]) == 0
    assert "face" not in terminal.getvalue()


def test_face_count_says_the_face_under_way_and_the_time_left():
    from faceveil.progress import FaceCount, duration

    now = [100.0]
    shown = []
    count = FaceCount(lambda c: shown.append(c.text()), clock=lambda: now[0])
    assert count.text() == "" and count.seconds_left() is None
    count.plan(3, 120)  # 40 evaluations per face
    assert shown[-1] == "face 1 of 3"  # no pace yet, no time
    now[0] += 20.0
    count(40)  # 0.5 s per evaluation: 80 left, 40 s
    assert count.face() == 2 and count.seconds_left() == pytest.approx(40.0)
    assert shown[-1] == "face 2 of 3, about 40 s left"
    now[0] += 40.0
    count(80)
    assert count.face() == 3 and shown[-1] == "face 3 of 3, about 1 s left"
    assert duration(5400) == "about 1 h 30 min" and duration(150) == "about 2 min"
