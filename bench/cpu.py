"""Where a benchmark run's CPU goes: the worker's event-loop thread, its other threads (the embedding model's,
mostly), the PostgreSQL and Redis servers, the worker's Chroma process, and the fake Claude (a cost of the
benchmark, not of Rapport). Read from /proc, so Linux only; elsewhere the figures are left out."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds", "per_answer"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
ROLES = ("event_loop", "worker_threads", "postgres", "redis", "chroma", "fake_claude")


def _seconds(stat: Path) -> float:
    """User + system time of one process or thread (fields 14 and 15 of its stat line)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _role(pid: str, me: str) -> str | None:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return None
    if name.startswith("postgres"):
        return "postgres"
    if name.startswith("redis-server"):
        return "redis"
    if parent == me:
        return "fake_claude" if b"tests.fakes.anthropic_api" in command else "chroma"
    return None


def cpu_seconds() -> dict[str, float] | None:
    """CPU seconds used so far by each role (processes that ended in between are lost: none do in a run)."""
    me = str(os.getpid())
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
