"""Where an answer's added time goes, step by step, in the open loop at one rate (a diagnosis, not a benchmark of
record): each awaited step of a turn is timed from outside (its method wrapped for this run only), over a steady
stream of people answered once before.

    python -m bench.phases --rate 40 --seconds 20

Steps, in a turn's order: accept (the inbox write the platform's acknowledgement waits for), open_turn (taking
the person's turn), spent_note (the day's budget), assemble (context: the embedding, the memory search, the
conversation and the person model, side by side; embed is the model's part of it, queue included), ask (Claude's
call minus the fake's fixed latency: the SDK, HTTP and the fake server), answered (the answer kept in the inbox),
charge (usage counters), remember_turns (the conversation's short-term memory), delivered (the last step, the
turn handed back). Embed also counts the writer's calls, which are empty when the turn's embedding was kept.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.openloop import greet, measure_open_loop
from bench.stack import real_stack
from bench.stats import summary_ms
from bot.loop import run as run_loop
from core.assistant import Assistant
from core.gate import Gate
from storage.embeddings import BatchingEmbedder
from storage.inbox import RelationalInbox

STEPS: list[tuple[type, str, str]] = [
    (RelationalInbox, "accept", "accept"),
    (RelationalInbox, "open_turn", "open_turn"),
    (Gate, "spent_note", "spent_note"),
    (Assistant, "_assemble", "assemble"),
    (BatchingEmbedder, "embed", "embed"),
    (Assistant, "_ask", "ask"),
    (RelationalInbox, "answered", "answered"),
    (Assistant, "_charge_answer", "charge"),
    (Assistant, "_remember_turns", "remember_turns"),
    (RelationalInbox, "delivered", "delivered"),
]


@contextmanager
def _timed(times: dict[str, list[float]]) -> Iterator[None]:
    """Each step's method wrapped to time its calls into `times`; put back after."""

    def timing(method: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(method)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                times[label].append(time.perf_counter() - started)

        return timed

    originals = [(cls, name, getattr(cls, name)) for cls, name, _ in STEPS]
    try:
        for (cls, name, label), (_, _, method) in zip(STEPS, originals, strict=True):
            setattr(cls, name, timing(method, label))
        yield
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)


async def measure_phases(*, rate: float, seconds: float, people: int, claude_latency: float) -> dict[str, Any]:
    times: dict[str, list[float]] = defaultdict(list)
    async with real_stack(latency=claude_latency) as services:
        await greet(services, people=people, tag="phases", rate=max(rate, 100.0))
        with _timed(times):
            run = await measure_open_loop(
                services, rate=rate, seconds=seconds, claude_latency=claude_latency, people=people, tag="phases"
            )
    asked = [max(t - claude_latency, 0.0) for t in times.pop("ask", [])]
    return {
        "rate": rate,
        "answers": run["answers"],
        "added_ms": run["added_ms"],
        "loop_lag_ms": run["loop_lag_ms"],
        "cpu_ms_per_answer": run["cpu_ms_per_answer"],
        "steps_ms": {label: summary_ms(asked if label == "ask" else times[label]) for _, _, label in STEPS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="messages a second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--people", type=int, default=2_000)
    parser.add_argument("--claude-latency", type=float, default=1.0)
    args = parser.parse_args()
    result = run_loop(
        measure_phases(rate=args.rate, seconds=args.seconds, people=args.people, claude_latency=args.claude_latency)
    )
    print(json.dumps({k: v for k, v in result.items() if k != "steps_ms"}))
    for label, summary in result["steps_ms"].items():
        print(f"{label:15} {json.dumps(summary)}")


if __name__ == "__main__":
    main()
