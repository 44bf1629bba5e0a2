"""Prometheus metrics: the core's Telemetry port, on a registry owned by the process (no global)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core.ports import Completion

__all__ = ["CONTENT_TYPE_LATEST", "LAG_PROBE_EVERY", "Metrics", "watch_loop"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LAG_PROBE_EVERY = 0.1


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "rapport_messages",
            "Messages handled, by platform and outcome",
            ["platform", "outcome"],
            registry=r,
        )
        self.answer_seconds = Histogram(
            "rapport_answer_seconds", "Message received to reply ready", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.context_seconds = Histogram(
            "rapport_context_seconds", "Context assembly time", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.claude_seconds = Histogram(
            "rapport_claude_seconds", "Claude call time", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.store_seconds = Histogram(
            "rapport_store_seconds", "Storing and learning behind one reply", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.claude_tokens = Counter(
            "rapport_claude_tokens",
            "Claude tokens: input (neither cached nor read from the cache), output, cache_write, cache_read",
            ["direction"],
            registry=r,
        )
        self.learning_calls = Counter(
            "rapport_learning_calls", "Learning calls by outcome (learned, failed, invalid)", ["outcome"], registry=r
        )
        self.learning_tokens = Counter(
            "rapport_learning_tokens", "Learning calls' tokens: input, output", ["direction"], registry=r
        )
        self.cost = Counter(
            "rapport_claude_cost_usd",
            "Estimated cost of Claude calls in US dollars (the policy's price table), by model, place (the servers "
            "the policy names, else dm or other) and kind (answer, learning)",
            ["model", "place", "kind"],
            registry=r,
        )
        self.refusals = Counter(
            "rapport_refusals", "Messages the operators' policy did not answer, by reason", ["reason"], registry=r
        )
        self.feedback = Counter("rapport_feedback", "Feedback reactions by polarity", ["polarity"], registry=r)
        self.errors = Counter("rapport_errors", "Errors by kind", ["kind"], registry=r)
        self.loop_lag = Histogram(
            "rapport_event_loop_lag_seconds",
            f"How late the event loop woke a {LAG_PROBE_EVERY:g} s sleep: what every message waits on top of its own "
            "work while something holds the loop",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.pending_work = Gauge("rapport_pending_background_work", "Jobs (storing, feedback) held here", registry=r)
        self.spooled = Gauge(
            "rapport_inbox_spooled", "Events kept in the local spool (the database is down)", registry=r
        )
        self.turns = Gauge("rapport_turns_serving", "People whose turn this process works through", registry=r)
        self.down = Gauge("rapport_dependency_down", "1 while a dependency is unavailable", ["part"], registry=r)

    def message_handled(self, platform: str, outcome: str, seconds: float) -> None:
        self.messages.labels(platform=platform, outcome=outcome).inc()
        self.answer_seconds.observe(seconds)

    def context_built(self, seconds: float) -> None:
        self.context_seconds.observe(seconds)

    def claude_called(self, seconds: float, completion: Completion) -> None:
        self.claude_seconds.observe(seconds)
        self.claude_tokens.labels(direction="input").inc(completion.input_tokens)
        self.claude_tokens.labels(direction="output").inc(completion.output_tokens)
        self.claude_tokens.labels(direction="cache_write").inc(completion.cache_write_tokens)
        self.claude_tokens.labels(direction="cache_read").inc(completion.cache_read_tokens)

    def feedback_recorded(self, polarity: str) -> None:
        self.feedback.labels(polarity=polarity).inc()

    def stored(self, seconds: float) -> None:
        self.store_seconds.observe(seconds)

    def learning_called(self, outcome: str, input_tokens: int, output_tokens: int) -> None:
        self.learning_calls.labels(outcome=outcome).inc()
        self.learning_tokens.labels(direction="input").inc(input_tokens)
        self.learning_tokens.labels(direction="output").inc(output_tokens)

    def spent(self, model: str, place: str, kind: str, cost: float) -> None:
        self.cost.labels(model=model, place=place, kind=kind).inc(cost)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason=reason).inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def watch_loop(metrics: Metrics, every: float = LAG_PROBE_EVERY) -> None:
    """Until cancelled: how late the loop wakes a short sleep, into `rapport_event_loop_lag_seconds` (ten cheap
    wake-ups a second)."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(every)
        metrics.loop_lag.observe(max(loop.time() - asked - every, 0.0))
