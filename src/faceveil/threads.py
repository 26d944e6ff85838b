"""How many CPU threads torch gets: the cores this process may use, less what others keep busy.

torch's default is one thread per physical core, with OpenMP threads that spin while they
wait. On a machine shared with other busy processes, spinning threads fight them for the
same cores, and a run can take several times longer than with one thread. ``faceveil
anonymize`` and ``recover`` (``faceveil.cli.main``) therefore

1. asks OpenMP to sleep rather than spin while waiting (``OMP_WAIT_POLICY=PASSIVE``), which
   only works before torch is imported, and only where the user has not set it;
2. picks the thread count from the usable CPUs (affinity mask, cgroup quota) and the
   1-minute load average, unless ``--threads`` (or ``OMP_NUM_THREADS``) says otherwise.

The Python API leaves threads to the caller (``torch.set_num_threads``).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def prefer_passive_waiting() -> bool:
    """Ask OpenMP to sleep while waiting; True when it can still take effect (torch not yet imported)."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in cores (cgroup v2 ``cpu.max`` or v1 CFS), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = CGROUP) -> int:
    """CPUs this process may run on: its affinity mask, capped by its cgroup's quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def choose_threads(cpus: int, load: float, cap: int | None = None) -> int:
    """Threads for ``cpus`` usable CPUs when others keep ``load`` of them busy (1-minute load average).

    The cores left idle, rounded, at least one; never more than ``cap`` (torch's own default:
    one per physical core)."""
    idle = cpus - max(0.0, load)
    threads = max(1, min(cpus, int(math.floor(idle + 0.5))))
    return min(threads, cap) if cap else threads


def load_average() -> float:
    """The 1-minute load average, 0.0 where the system has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def configure(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads`` if given, else ``OMP_NUM_THREADS`` if set, else the choice
    from :func:`choose_threads`. Returns the count set."""
    import torch

    if threads is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads is None or threads < 1:
        threads = choose_threads(usable_cpus(), load_average(), cap=torch.get_num_threads())
    torch.set_num_threads(threads)
    return threads
