"""Run every benchmark and write docs/benchmarks.md (tables) and docs/benchmarks.json (raw figures).

    python -m bench            # the full runs (several minutes)
    python -m bench --quick    # small sizes, to prove the harness works (the test suite runs this)

Each part runs in a process of its own, so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.loop import run as run_loop

ROOT = Path(__file__).resolve().parent.parent

FULL: dict[str, dict[str, Any]] = {
    "context": {"tiers": [0, 1_000, 10_000, 100_000], "others": 100_000, "messages": 100},
    "load": {"people": [50, 200, 500], "seconds": 30.0, "claude_latency": 1.0, "warmup": 5.0},
    "openloop": {
        "shares": [0.3, 0.6, 0.9],
        "seconds": 30.0,
        "people": 2_000,
        "claude_latency": 1.0,
        "calibrate": 20.0,
        "cold_share": 0.6,
    },  # fmt: skip
    "recovery": {"events": 200, "lease": 20.0, "claude_latency": 1.0},
    "slack_openloop": {
        "shares": [0.3, 0.6, 0.9],
        "seconds": 30.0,
        "people": 2_000,
        "claude_latency": 1.0,
        "calibrate": 20.0,
        "calibrate_rate": 60.0,
    },  # fmt: skip
    "memory": {"dataset": "bench/data/locomo_mini.json"},
    "streaming": {"answers": 40, "turns": 40, "long_chars": 6_000, "long_seconds": 10.0},
    "streaming_cpu": {"people": 200, "seconds": 20.0, "claude_latency": 1.0, "answer_chars": 800, "rounds": 2},
    "person_model": {
        "dataset": "bench/data/person_dialogues.json",
        "error_rate": 0.2,
        "seeds": [14, 15, 16],
        "control": True,
        "latency": {"people": 30, "messages": 20, "rounds": 3, "answer_latency": 0.1},
    },
    "gate": {"messages": 2_000, "people": 200, "concurrency": [1, 50]},
}
QUICK: dict[str, dict[str, Any]] = {
    "context": {"tiers": [0, 200], "others": 1_000, "messages": 5},
    "load": {"people": [10], "seconds": 2.0, "claude_latency": 0.2, "warmup": 0.5},
    "openloop": {
        "shares": [0.3],
        "seconds": 2.0,
        "people": 50,
        "claude_latency": 0.2,
        "calibrate": 2.0,
        "cold_share": 0.3,
    },  # fmt: skip
    "recovery": {"events": 3, "lease": 3.0, "claude_latency": 0.2},
    "slack_openloop": {
        "shares": [0.3],
        "seconds": 1.0,
        "people": 20,
        "claude_latency": 0.2,
        "calibrate": 1.0,
        "calibrate_rate": 10.0,
    },  # fmt: skip
    "memory": {"dataset": "bench/data/locomo_mini.json"},
    "streaming": {"answers": 3, "turns": 4, "long_chars": 600, "long_seconds": 1.0},
    "streaming_cpu": {"people": 10, "seconds": 2.0, "claude_latency": 0.2, "answer_chars": 200, "rounds": 1},
    "person_model": {
        "dataset": "bench/data/person_dialogues.json",
        "people": ["dev", "margit"],
        "sessions": 3,
        "error_rate": 0.2,
        "seeds": [14],
        "control": False,
        "latency": {"people": 6, "messages": 10, "rounds": 1, "answer_latency": 0.05},
    },
    "gate": {"messages": 100, "people": 20, "concurrency": [1, 10]},
}
# Not part of a plain run: it needs a revision to compare with (python -m bench --only compare --before REV).
# Nor are the long ones of issue 17: the first messages after a restart, and a worker's memory with 1,000 people.
OPTIONAL: dict[str, dict[str, Any]] = {
    "compare": {"people": 200, "seconds": 20.0, "rounds": 3},
    "cold": {"tiers": [100_000, 10_000, 3_000], "others": 100_000, "messages": 30},
    "rss": {"people": 1_000, "memories": 1_000},
}


async def _part(name: str, config: dict[str, Any]) -> dict[str, Any]:
    from bench.cold import measure_cold
    from bench.compare import measure_compare
    from bench.gate import measure_gate
    from bench.latency import ContextClock, measure_context
    from bench.load import measure_load
    from bench.memory import run as run_memory
    from bench.openloop import greet, measure_open_loop
    from bench.person_model import measure_person_model
    from bench.recovery import measure_recovery
    from bench.rss import measure_rss
    from bench.slack_openloop import measure_slack_open_loop
    from bench.stack import real_stack
    from bench.streaming import measure_streaming, measure_streaming_cpu

    if name == "context":
        clock = ContextClock()
        async with real_stack(latency=0.0, telemetry=clock) as services:
            return await measure_context(
                services, clock, tiers=tuple(config["tiers"]), others=config["others"], messages=config["messages"]
            )
    if name == "load":
        runs = []
        for people in config["people"]:
            async with real_stack(latency=config["claude_latency"]) as services:
                runs.append(
                    await measure_load(
                        services,
                        people=people,
                        seconds=config["seconds"],
                        claude_latency=config["claude_latency"],
                        tag=f"load{people}",
                        warmup=config["warmup"],
                    )
                )
        return {"claude_latency_s": config["claude_latency"], "runs": runs}
    if name == "openloop":
        async with real_stack(latency=config["claude_latency"]) as services:
            calibration = await measure_load(
                services,
                people=200 if config["calibrate"] > 5 else 10,
                seconds=config["calibrate"],
                claude_latency=config["claude_latency"],
                tag="calibrate",
                warmup=min(5.0, config["calibrate"] / 4),
            )
            cpu = calibration["cpu_ms_per_answer"] or {}
            ceiling = float(cpu.get("ceiling_answers_per_second") or calibration["answers_per_second"])
            # Steady state: everyone has been answered once before the runs (bench/openloop.py); the cold run's
            # people have not.
            greeted = await greet(services, people=config["people"], tag="open", rate=ceiling * 0.6)
            runs = []
            for share, tag in [(share, "open") for share in config["shares"]] + [(config["cold_share"], "cold")]:
                runs.append(
                    await measure_open_loop(
                        services,
                        rate=round(ceiling * share, 1),
                        seconds=config["seconds"],
                        claude_latency=config["claude_latency"],
                        people=config["people"],
                        tag=tag,
                    )
                    | {"share_of_ceiling": share, "people_seen_before": tag == "open"}
                )
        return {
            "ceiling_answers_per_second": ceiling,
            "claude_latency_s": config["claude_latency"],
            "greeted_in_s": greeted,
            "runs": runs,
        }
    if name == "slack_openloop":
        return await measure_slack_open_loop(
            shares=list(config["shares"]),
            seconds=config["seconds"],
            people=config["people"],
            claude_latency=config["claude_latency"],
            calibrate=config["calibrate"],
            calibrate_rate=config["calibrate_rate"],
        )
    if name == "recovery":
        return await measure_recovery(
            events=config["events"], lease=config["lease"], claude_latency=config["claude_latency"]
        )
    if name == "cold":
        return await measure_cold(tiers=tuple(config["tiers"]), others=config["others"], messages=config["messages"])
    if name == "rss":
        return await measure_rss(people=config["people"], memories=config["memories"])
    if name == "compare":
        return await measure_compare(
            before=config["before"], people=config["people"], seconds=config["seconds"], rounds=config["rounds"]
        )
    if name == "streaming":
        return await measure_streaming(**config)
    if name == "streaming_cpu":
        return await measure_streaming_cpu(**config)
    if name == "person_model":
        return await measure_person_model(config)
    if name == "gate":
        return await measure_gate(
            messages=config["messages"], people=config["people"], concurrency=tuple(config["concurrency"])
        )
    if name == "memory":
        return await run_memory(ROOT / config["dataset"], compare=True, database_url=None)
    raise ValueError(name)


def _machine() -> dict[str, Any]:
    memory_kib = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024**2, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _md(results: dict[str, Any], command: str) -> str:
    m = results["machine"]
    out = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` on {results['date']}: {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}. Real PostgreSQL, Redis and the real all-MiniLM-L6-v2; a fake "
        "Claude in its own process. Raw figures: `docs/benchmarks.json`.",
        "",
    ]
    context = results["parts"].get("context")
    if context:
        out += [
            "## Context assembly",
            "",
            f"Message received → request ready for Claude, for one person with N memories, with {context['others']:,} "
            "memories of 1,000 other people in the same store (vacuumed and analyzed after seeding, as autovacuum "
            "would in a live database). The first message of each person reads their memory rows into the process's "
            "index: up to 12,000 memories all of them, beyond that the newest 3,000, the rest loading behind while "
            "the search covers what is held (storage/memory_index.py).",
            "",
            "| memories of the person | p50 ms | p95 ms | p99 ms | storing after the answer p50 / p95 ms |",
            "| --- | --- | --- | --- | --- |",
        ]
        for tier, r in context["tiers"].items():
            c, s = r["context_ms"], r["store_ms"]
            out.append(f"| {int(tier):,} | {c['p50']} | {c['p95']} | {c['p99']} | {s['p50']} / {s['p95']} |")
        out.append("")
    load = results["parts"].get("load")
    if load:
        out += [
            "## Load",
            "",
            f"People writing at once, each sending its next message when the last is answered; Claude answers in "
            f"{load['claude_latency_s']} s. Added time = answer time minus Claude's. Everyone's first message "
            "arrives in the same instant to cold caches, and the first waves echo for a few seconds: the steady "
            f"column leaves out messages sent in the first {load['runs'][0].get('warmup_seconds', 5)} s.",
            "",
            "| people | answers/s | added p50 / p95 / p99 ms | steady added p50 / p95 ms | loop lag p99 / max ms "
            "| peak RSS MiB (worker + Chroma) | sent | stored |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in load["runs"]:
            a, lag, steady = r["added_ms"], r["loop_lag_ms"], r.get("added_after_warmup_ms", {})
            out.append(
                f"| {r['people']} | {r['answers_per_second']} | {a['p50']} / {a['p95']} / {a['p99']} | "
                f"{steady.get('p50')} / {steady.get('p95')} | {lag['p99']} / {lag['max']} | {r['peak_rss_mib']} "
                f"| {r['messages_sent']} | {r['interactions_stored']} |"
            )
        cpu_runs = [r for r in load["runs"] if r.get("cpu_ms_per_answer")]
        if cpu_runs:
            out += [
                "",
                "CPU per answer in ms, from /proc over the same runs. The ceiling is the answers per second "
                f"{results['machine']['cores']} cores could give at that cost with every core busy all the time "
                "(the fake Claude's share left out).",
                "",
                "| people | event loop | model and other worker threads | PostgreSQL | Redis | Chroma | fake Claude "
                "| total | ceiling answers/s |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            for r in cpu_runs:
                c = r["cpu_ms_per_answer"]
                out.append(
                    f"| {r['people']} | {c['event_loop']} | {c['worker_threads']} | {c['postgres']} | {c['redis']} "
                    f"| {c['chroma']} | {c['fake_claude']} | {c['total']} | {c['ceiling_answers_per_second']} |"
                )
        out.append("")
    openloop = results["parts"].get("openloop")
    if openloop:
        out += [
            "## Open loop",
            "",
            "Messages arriving at random (Poisson), each from one of "
            f"{openloop['runs'][0]['people']:,} people, at a share of the ceiling the closed-loop run measured "
            f"just before ({openloop['ceiling_answers_per_second']} answers/s); Claude answers in "
            f"{openloop['claude_latency_s']} s. Everyone has been answered once before the runs (a steady stream, "
            "as minutes after a restart); the row marked cold is people Rapport has not seen since it started. "
            "Added = answer time minus Claude's, over messages whose person had no "
            "earlier one still being answered (those wait their turn: counted apart). Accept = writing the event to "
            "the inbox, what the platform's acknowledgement waits for.",
            "",
            "| share | messages/s | added p50 / p95 / p99 ms | behind their own (n, p50 ms) | accept p50 / p95 ms "
            "| loop lag p99 ms | CPU ms per answer | sent / stored |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in openloop["runs"]:
            a, b, acc = r["added_ms"], r["behind_their_own_ms"], r["accept_ms"]
            cpu = (r.get("cpu_ms_per_answer") or {}).get("total")
            out.append(
                f"| {int(r['share_of_ceiling'] * 100)} %{'' if r.get('people_seen_before', True) else ', cold'} "
                f"| {r['rate']} | {a['p50']} / {a['p95']} / {a['p99']} "
                f"| {b['n']}, {b['p50']} | {acc['p50']} / {acc['p95']} | {r['loop_lag_ms']['p99']} | {cpu} "
                f"| {r['messages_sent']} / {r['interactions_stored']} |"
            )
        out.append("")
    slack_open = results["parts"].get("slack_openloop")
    if slack_open:
        cal = slack_open["calibration"]
        cal_cpu = cal.get("cpu_ms_per_answer") or {}
        out += [
            "## Open loop through the Slack adapter",
            "",
            "The same arrivals end to end: a real worker (`python -m bot`) in Slack HTTP mode, signed Events API "
            f"requests (each a DM from one of {slack_open['runs'][0]['people']:,} people), the fake Web API and the "
            f"fake Claude ({slack_open['claude_latency_s']} s) in the benchmark's process. The ceiling "
            f"({slack_open['ceiling_answers_per_second']} answers/s) comes from the CPU an answer cost in a "
            f"calibration run at {cal['rate']} messages/s on the same worker ({cal_cpu.get('total')} ms: event loop "
            f"{cal_cpu.get('event_loop')}, other threads {cal_cpu.get('worker_threads')}, PostgreSQL "
            f"{cal_cpu.get('postgres')}, Redis {cal_cpu.get('redis')}, Chroma {cal_cpu.get('chroma')}). Added = "
            "from the request sent to the whole answer at the Web API, minus Claude's time (the placeholder and "
            "the stream's edits included); ack = the HTTP response Slack waits for; loop lag = the worker's own "
            "`rapport_event_loop_lag_seconds`, as the bucket its 99th percentile falls in. The benchmark's own "
            "process (the load, the fake Web API, the fake Claude) shares the two cores: past the lowest share the "
            "machine is saturated by the two together, and the figures say so rather than what Rapport alone would "
            "do.",
            "",
            "| share | messages/s | added p50 / p95 / p99 ms | behind their own (n, p50 ms) | ack p50 / p95 ms "
            "| loop lag p99 ≤ ms | CPU ms per answer: loop / threads / PostgreSQL / Redis / Chroma | total "
            "| the benchmark's own CPU ms per answer | failed |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in slack_open["runs"]:
            a, b, ack = r["added_ms"], r["behind_their_own_ms"], r["ack_ms"]
            c = r.get("cpu_ms_per_answer") or {}
            parts = " / ".join(str(c.get(k)) for k in ("event_loop", "worker_threads", "postgres", "redis", "chroma"))
            out.append(
                f"| {int(r['share_of_ceiling'] * 100)} % | {r['rate']} | {a['p50']} / {a['p95']} / {a['p99']} "
                f"| {b['n']}, {b['p50']} | {ack['p50']} / {ack['p95']} | {r['loop_lag_p99_bucket_ms']} | {parts} "
                f"| {c.get('total')} | {r.get('benchmark_cpu_ms_per_answer')} | {r['failed']} |"
            )
        out.append("")
    recovery = results["parts"].get("recovery")
    if recovery:
        out += [
            "## Recovery after a restart",
            "",
            "A worker in Slack HTTP mode with N messages acknowledged and all of them with Claude, stopped; a new one "
            "started on the same database. After SIGKILL the old turns are taken over when their leases lapse "
            "(TURN_LEASE_SECONDS); after SIGTERM they were handed back on the way out.",
            "",
            "| stopped by | messages | lease s | new process ready s | last message answered s |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in recovery["runs"]:
            cells = (r["stopped_by"], r["events"], r["lease_seconds"], r["ready_s"], r["last_answered_s"])
            out.append("| " + " | ".join(str(c) for c in cells) + " |")
        out.append("")
    out += _cold_md(results["parts"])
    compare = results["parts"].get("compare")
    if compare:
        out += [
            "## Before and after",
            "",
            f"The closed-loop load benchmark at {compare['people']} people ({compare['seconds']} s a run), in a "
            f"checkout of `{compare['before']}` and in this one, taking turns in one run.",
            "",
            "| run | answers/s | added p50 / p95 ms | CPU ms per answer: loop / threads / PostgreSQL / Redis / Chroma "
            "| total |",
            "| --- | --- | --- | --- | --- |",
        ]
        for side in ("before", "after"):
            for number, r in enumerate(compare["runs"][side], 1):
                c = r.get("cpu_ms_per_answer") or {}
                parts = " / ".join(
                    str(c.get(k)) for k in ("event_loop", "worker_threads", "postgres", "redis", "chroma")
                )
                out.append(
                    f"| {side} {number} | {r['answers_per_second']} | {r['added_ms']['p50']} / {r['added_ms']['p95']} "
                    f"| {parts} | {c.get('total')} |"
                )
        out.append("")
    out += _streaming_md(results["parts"])
    out += _person_model_md(results["parts"])
    out += _gate_md(results["parts"])
    memory = results["parts"].get("memory")
    if memory:
        from bench.memory import _table

        out += ["## Memory retrieval", "", _table(memory), ""]
    return "\n".join(out)


def _cold_md(parts: dict[str, Any]) -> list[str]:
    out: list[str] = []
    cold = parts.get("cold")
    if cold:
        out += [
            "## The first messages after a restart",
            "",
            f"`python -m bench --only cold`: one person with N memories among {cold['others']:,} of 1,000 others "
            "(synthetic vectors), let go by the process's index first, as a restart leaves it; then their first "
            f"{cold['messages']} messages, one at a time. Context assembly, ms.",
            "",
            "| memories of the person | 1st | 2nd | 3rd | 4th | 5th | p50 | p95 | max |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for tier, r in cold["tiers"].items():
            first = " | ".join(str(t) for t in r["first_ms"][:5])
            c = r["context_ms"]
            out.append(f"| {int(tier):,} | {first} | {c['p50']} | {c['p95']} | {c['max']} |")
        out.append("")
    rss = parts.get("rss")
    if rss:
        m = rss["message_ms"]
        out += [
            "## Memory with many people",
            "",
            f"`python -m bench --only rss`: the embedded worker's services on a database of {rss['people']:,} people "
            f"with {rss['memories_each']:,} memories each (synthetic vectors); each person sends one message, so "
            "that every person's memories are read into the index once (it holds what fits its cap, least recently "
            "used first out).",
            "",
            "| resident after start | peak resident | index holds | people held | message p50 / p95 / max ms |",
            "| --- | --- | --- | --- | --- |",
            f"| {rss['rss_after_start_mib']} MiB | {rss['rss_peak_mib']} MiB | {rss['index_held_mib']} MiB | "
            f"{rss['people_held']} | {m['p50']} / {m['p95']} / {m['max']} |",
            "",
        ]
    return out


def _streaming_md(parts: dict[str, Any]) -> list[str]:
    out: list[str] = []
    streaming = parts.get("streaming")
    if streaming:
        first, long, cache = streaming["first_visible"], streaming["long_answer"], streaming["cache"]
        places = (("Discord (DM)", "discord"), ("Slack thread (streaming methods)", "slack_thread"),
                  ("Slack DM (placeholder edited)", "slack_dm"))  # fmt: skip
        out += [
            "## Streaming",
            "",
            "The real discord.py and slack-bolt against the local fakes, a fake Claude streaming 16-character pieces. "
            "First visible = from Claude's first piece leaving the fake to the first call that shows text at the "
            f"fake platform (target p95 ≤ {first['target_p95_ms']} ms). Edits: a {long['chars']:,}-character answer "
            f"streamed over {long['seconds']} s.",
            "",
            "| where | first visible p50 / p95 / max ms | edits per answer (long) | edits per second (long) "
            "| messages (long) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, key in places:
            f, e = first[key]["first_visible_ms"], long[key]
            out.append(
                f"| {label} | {f['p50']} / {f['p95']} / {f['max']} | {e['edits_per_answer']} | "
                f"{e['edits_per_second']} | {e.get('messages_per_answer', '–')} |"
            )
        out += [
            "",
            f"Prompt caching over a {cache['turns']}-turn conversation (the fake's cache as documented: a prefix up "
            "to a breakpoint or up to 20 blocks before one, 5 minutes, at least "
            f"{cache['cache_minimum_tokens']:,} tokens): {cache['read_from_cache_share']:.1%} of "
            f"{cache['input_tokens']:,} input tokens read from the cache, {cache['written_to_cache_share']:.1%} "
            f"written to it (target read ≥ {cache['target_read_share']:.0%}).",
            "",
        ]
    cpu = parts.get("streaming_cpu")
    if cpu:
        out += [
            "## What streaming costs",
            "",
            f"The closed-loop load benchmark at {cpu['people']} people, answers of about {cpu['answer_chars']} "
            f"characters (16-character pieces), Claude {cpu['claude_latency_s']} s; streaming off and on taking "
            "turns on one stack.",
            "",
            "| run | answers/s | added p50 / p95 ms | CPU ms per answer: loop / threads / PostgreSQL / Redis / Chroma "
            "| total |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in cpu["runs"]:
            c = r.get("cpu_ms_per_answer") or {}
            split = " / ".join(str(c.get(k)) for k in ("event_loop", "worker_threads", "postgres", "redis", "chroma"))
            out.append(
                f"| {'on' if r['streaming'] else 'off'} {r['round'] + 1} | {r['answers_per_second']} "
                f"| {r['added_ms']['p50']} / {r['added_ms']['p95']} | {split} | {c.get('total')} |"
            )
        out.append("")
    return out


def _gate_md(parts: dict[str, Any]) -> list[str]:
    found = parts.get("gate")
    if not found:
        return []
    out = [
        "## The operators' gate",
        "",
        f"`Gate.screen` before each message is kept and `Gate.charge` after each answer, {found['messages']} messages "
        f"from {found['people']} people, one at a time and many at once (ms).",
        "",
        "| policy | at once | screen p50 / p95 / p99 | charge p50 / p95 / p99 | messages/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in found["cases"]:
        for run in case["runs"]:
            screen, charge = run["screen_ms"], run["charge_ms"]
            out.append(
                f"| {case['case']} | {run['concurrency']} | {screen['p50']} / {screen['p95']} / {screen['p99']} "
                f"| {charge['p50']} / {charge['p95']} / {charge['p99']} | {run['messages_per_second']} |"
            )
    out.append("")
    return out


def _person_model_md(parts: dict[str, Any]) -> list[str]:
    found = parts.get("person_model")
    if not found:
        return []
    data, replay, latency = found["dataset"], found["replay"], found["latency"]
    errors, clean = replay["errors"], replay.get("clean")
    s = found["settings"]
    paced = (
        f" or {s['quiet_gaps']:g} of the person's own gaps, at most {s['max_quiet']:.0f} s" if "quiet_gaps" in s else ""
    )
    seeds = (
        f"seeds {', '.join(str(x) for x in errors['seeds'])}, pooled"
        if len(errors["seeds"]) > 1
        else f"seed {errors['seeds'][0]}"
    )

    def pct(share: float | None) -> str:
        return "–" if share is None else f"{share:.1%}"

    def causes(figures: dict[str, Any]) -> str:
        by = figures.get("superseded_by_cause") or {}
        return ", ".join(f"{why} {n}" for why, n in sorted(by.items())) or "none"

    def per_100(part: str) -> Any:
        return lambda f: f"{f[part]['requests_per_100_messages']} / {f[part]['tokens_per_100_messages']:,}"

    def row(label: str, pick: Any) -> str:
        return f"| {label} | {pick(errors)} | {pick(clean) if clean else '–'} |"

    out = [
        "## Person model",
        "",
        f"The held-out dialogues of `{data['path']}`: {data['people']} people in {len(data['languages'])} "
        f"language{'s' if len(data['languages']) > 1 else ''} "
        f"({', '.join(data['languages'])}), {data['sessions']} sessions, {data['messages']} messages with "
        f"{data['annotations']} annotations and {data['reactions']} reactions, {data['checkpoints']} checkpoints. They "
        "are replayed through the real stack (inbox, turns, stores, the SDK against the fake Anthropic API, here in "
        "the benchmark's process); the learning model's answers are scripted from the annotations (the request's "
        f"M and E lines mapped back to the dataset), with an error injected in {replay['error_rate']:.0%} of the "
        f"calls ({seeds}): wrong, contradictory, duplicated or malformed extractions. Learning runs whenever "
        f"`core.learner.due` says so on the dataset's clock (batch {s['batch']}, quiet {s['quiet_s']:.0f} s{paced}, "
        f"cooldown {s['cooldown_s']:.0f} s, a sweep every {s['poll_s']:.0f} s); a failed call is tried again at the "
        "next due point. At each checkpoint the person sends a probe and the system prompt Claude got is read (a fact "
        "is present when its annotated text is an item there, case and punctuation aside).",
        "",
        f"| | with errors ({errors['runs']} run{'s' if errors['runs'] > 1 else ''}) | no errors"
        f"{' (1 run)' if clean else ''} |",
        "| --- | --- | --- |",
        row(
            "current facts in the prompt at checkpoints (said / shown by reactions)",
            lambda f: f"{pct(f['current_share'])} ({pct(f['said_share'])} / {pct(f['shown_share'])})",
        ),
        row(
            "prompts with a superseded fact whose ending was learned (target 0); items by the error that caused them",
            lambda f: f"{f['prompts_with_superseded']} of {f['prompts_checked']}; {causes(f)}",
        ),
        row("superseded facts in the checkpoint probes", lambda f: f["superseded_at_checkpoints"]),
        row(
            "prompts with a fact ended in words, not yet learned from (scheduler lag)",
            lambda f: f["prompts_with_superseded_not_yet_learned"],
        ),
        row("duplicate items in prompts", lambda f: f["duplicate_items_in_prompts"]),
        row("prompts with an invented fact (cited right: accepted)", lambda f: f["prompts_with_never_said_items"]),
        row(
            "changes naming an exchange or item not in the request, in a prompt",
            lambda f: f["dropped_changes_seen_in_prompts"],
        ),
        row("another person's facts in a prompt", lambda f: f["other_peoples_items_in_prompts"]),
        row("malformed calls that changed the model", lambda f: f["malformed_calls_that_changed_the_model"]),
        row("exchanges given up after repeated failures", lambda f: f["exchanges_given_up"]),
        row("learning requests / tokens per 100 messages", per_100("learning")),
        row("… of the slow writer", per_100("learning_slow_writer")),
        "",
        f"Errors injected ({errors['calls_with_errors']} of {errors['calls']} calls): "
        + ", ".join(f"{k} {v}" for k, v in errors["errors_injected"].items())
        + ".",
        "",
        "Calls at realistic pacing, the scheduler alone over the dataset's timestamps (every call learns what waits; "
        "the slow writer sends a message every 150–480 s for an hour or more), with the defaults and some "
        "alternatives:",
        "",
        "| settings | calls per 100 messages: all / bursts / slow writer | messages per call | wait before a call "
        "reads it p50 / p95 s: all / slow writer |",
        "| --- | --- | --- | --- |",
    ]
    for p in found["pacing"]:
        a, b, w = p["all"], p["bursts"], p["slow_writer"]
        label = ", ".join(f"{k} {v:g}" for k, v in p["settings"].items()) or "defaults"
        out.append(
            f"| {label} | {a['calls_per_100_messages']} / {b['calls_per_100_messages']} / "
            f"{w['calls_per_100_messages']} | {a['messages_per_call']} | {a['wait_s']['p50']} / {a['wait_s']['p95']} "
            f"· {w['wait_s']['p50']} / {w['wait_s']['p95']} |"
        )
    on, off, diff, noise = latency["on"], latency["off"], latency["on_minus_off"], latency["noise"]
    knobs = latency["learning_settings"]
    verdict = {
        True: "learning on is no slower than off beyond the noise",
        False: "learning on is slower than off beyond the noise",
        None: "one round: no noise to compare with",
    }
    out += [
        "",
        f"Answer latency (accept → delivered) with {latency['people']} people sending {latency['messages_each']} "
        f"messages each, Claude answering in {latency['answer_latency_s']} s and the learning model in "
        f"{latency['learning_latency_s']} s (10×; the fake API in a process of its own), learning off and on "
        f"(poll {knobs['poll']} s, a call for every {knobs['batch']} messages at once, quiet {knobs['quiet']} s, "
        "no cooldown, "
        f"{knobs['concurrency']} calls in flight at most) in alternating rounds on one stack:",
        "",
        "| round | learning | answers | p50 ms | p95 ms | p99 ms | learning calls in the run |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in latency["runs"]:
        a = r["answer_ms"]
        out.append(
            f"| {r['round'] + 1} | {'on' if r['learning'] else 'off'} | {a['n']} | {a['p50']} | {a['p95']} "
            f"| {a['p99']} | {r['learning_calls']} |"
        )
    out += [
        "",
        f"Median over rounds: off {off['p50_ms']} / {off['p95_ms']} ms, on {on['p50_ms']} / {on['p95_ms']} ms "
        f"(p50 / p95); on − off {diff['p50_ms']:+} / {diff['p95_ms']:+} ms; the noise (largest spread between rounds "
        f"of one mode) {noise['p50_spread_ms']} / {noise['p95_spread_ms']} ms: {verdict[latency['within_noise']]}.",
        "",
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run the benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the harness, measures little")
    parser.add_argument("--only", choices=sorted(FULL | OPTIONAL), action="append", help="run only these parts")
    parser.add_argument("--before", help="with --only compare: the git revision to compare this checkout with")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where benchmarks.md/.json go")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = (QUICK if args.quick else FULL) | OPTIONAL
    if args.before:
        config["compare"] = dict(config["compare"], before=args.before)
    if args.part:  # the child process for one part
        args.part_out.write_text(json.dumps(run_loop(_part(args.part, config[args.part]))))  # the worker's loop
        return 0
    if "compare" in (args.only or []) and not args.before:
        parser.error("--only compare needs --before REV")
    parts: dict[str, Any] = {}
    previous = args.out / "benchmarks.json"
    if args.only and previous.exists():  # a partial run keeps the other parts' last figures
        parts = json.loads(previous.read_text()).get("parts", {})
    for name in args.only or list(QUICK if args.quick else FULL):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, "-m", "bench", "--part", name, "--part-out", out.name]
            if args.quick:
                command.append("--quick")
            if args.before:
                command += ["--before", args.before]
            print(f"bench: running {name} …", file=sys.stderr, flush=True)
            subprocess.run(command, cwd=ROOT, check=True)
            parts[name] = json.loads(Path(out.name).read_text())
    results = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": _machine(), "parts": parts}
    invocation = (
        "python -m bench"
        + (" --quick" if args.quick else "")
        + "".join(f" --only {o}" for o in args.only or [])
        + (f" --before {args.before}" if args.before else "")
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "benchmarks.md").write_text(_md(results, invocation) + "\n")
    print(_md(results, invocation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
