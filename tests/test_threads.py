"""faceveil.threads: the thread count from usable CPUs and load, passive OpenMP waiting, --threads."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from faceveil.cli import main
from faceveil.threads import cgroup_cpu_limit, choose_threads, configure, usable_cpus


@pytest.mark.parametrize(
    "cpus, load, cap, expected",
    [(2, 0.0, None, 2), (2, 0.3, None, 2), (2, 1.0, None, 1), (2, 2.0, None, 1), (2, 7.5, None, 1),
     (16, 4.2, None, 12), (16, 0.0, 8, 8), (1, 0.0, None, 1), (8, 3.6, None, 4)],
)
def test_threads_are_the_idle_cores_at_least_one(cpus, load, cap, expected):
    assert choose_threads(cpus, load, cap) == expected


def test_cgroup_quota_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2) == 1.5
    assert usable_cpus(v2) == min(len(os.sched_getaffinity(0)), 2)
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert cgroup_cpu_limit(v1) == 0.5 and usable_cpus(v1) == 1
    assert cgroup_cpu_limit(tmp_path / "none") is None
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)


def test_configure_takes_the_explicit_count_then_omp_num_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert configure() == 2 and torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        chosen = configure()
        assert 1 <= chosen <= usable_cpus() and torch.get_num_threads() == chosen
    finally:
        torch.set_num_threads(before)


def test_the_command_sets_passive_waiting_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import sys, os; from faceveil.cli import main; rc = main(sys.argv[1:]); "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    run = lambda *argv: subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,  # noqa: E731
                                       env=env, timeout=300)
    out = run("recover", "/nonexistent.veiled.png", "--key", "/nonexistent.key")
    assert out.stdout.split()[-2:] == ["PASSIVE", "True"], out.stderr[-2000:]
    out = run("models")  # other commands (training) keep OpenMP's default
    assert out.returncode == 0 and out.stdout.split()[-2:] == ["None", "True"], out.stderr[-2000:]
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's choice stays
    out = run("anonymize", "/nonexistent.png", "--key", "/nonexistent.key")
    assert out.stdout.split()[-2:] == ["ACTIVE", "True"]


def test_threads_option_runs_and_restores_and_refuses_zero(pixel_model_dir, tmp_path, capsys):
    key = tmp_path / "k.key"
    assert main(["keygen", str(key)]) == 0
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(flat)
    before = torch.get_num_threads()
    args = ["anonymize", str(flat), "--key", str(key), "--model", str(pixel_model_dir), "--allow-no-face"]
    assert main([*args, "--threads", "1"]) == 0
    assert torch.get_num_threads() == before  # in-process callers get their setting back
    assert main([*args, "--threads", "0", "--overwrite"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
