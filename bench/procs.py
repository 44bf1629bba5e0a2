"""The processes of a benchmark run, read from /proc (Linux only; elsewhere the figures are left out): where its
CPU goes (the worker's event-loop thread, its other threads, the embedding model's mostly, the PostgreSQL and Redis
servers, the worker's Chroma process, and the fake Claude, a cost of the benchmark, not of Rapport) and the peak
memory of the worker's helper processes."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds", "helper_peak_rss_mib", "per_answer"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
ROLES = ("event_loop", "worker_threads", "postgres", "redis", "chroma", "fake_claude")


def _seconds(stat: Path) -> float:
    """User + system time of one process or thread (fields 14 and 15 of its stat line)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _helper(pid: str, me: str) -> str | None:
    """ "chroma" or "fake_claude" for this process's children: Chroma runs in a multiprocessing child (with
    multiprocessing's resource tracker beside it), the fake Claude in a child of its own."""
    try:
        parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return None
    if parent != me:
        return None
    if b"tests.fakes.anthropic_api" in command:
        return "fake_claude"
    return "chroma" if b"multiprocessing" in command else None


def _role(pid: str, me: str) -> str | None:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    if name.startswith("postgres"):
        return "postgres"
    if name.startswith("redis-server"):
        return "redis"
    return _helper(pid, me)


def helper_peak_rss_mib() -> float:
    """Peak RSS of this process's Chroma process (and multiprocessing's resource tracker)."""
    total = 0.0
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if _helper(pid, me) != "chroma":
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        total += int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
    return total


def cpu_seconds(root: int | None = None) -> dict[str, float] | None:
    """CPU seconds used so far by each role (processes that ended in between are lost: none do in a run); `root`
    is the worker's process when it is not this one (bench/slack_openloop.py)."""
    me = str(root or os.getpid())
    tasks = Path(f"/proc/{me}/task")
    if not tasks.is_dir():
        return None
    used = dict.fromkeys(ROLES, 0.0)
    for tid in os.listdir(tasks):
        used["event_loop" if tid == me else "worker_threads"] += _seconds(tasks / tid / "stat")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if pid != me and (role := _role(pid, me)) is not None:
            used[role] += _seconds(Path(f"/proc/{pid}/stat"))
    return used


def per_answer(
    before: dict[str, float] | None, after: dict[str, float] | None, answers: int, cores: int
) -> dict[str, float] | None:
    """Milliseconds of CPU per answer by role, their total without the fake Claude, and the answers per second
    this machine's cores could give at that cost if every one of them were busy all the time."""
    if before is None or after is None or answers <= 0:
        return None
    ms = {role: round((after[role] - before[role]) * 1000 / answers, 2) for role in ROLES}
    rapport = sum(value for role, value in ms.items() if role != "fake_claude")
    ms["total"] = round(rapport, 2)
    ms["ceiling_answers_per_second"] = round(cores * 1000 / rapport, 1) if rapport > 0 else 0.0
    return ms
