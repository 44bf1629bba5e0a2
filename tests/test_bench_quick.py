"""The benchmark harness works end to end in its quick mode (the full runs are not tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmarks_write_tables_and_raw_figures(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    raw = json.loads((tmp_path / "benchmarks.json").read_text())
    assert raw["machine"]["cores"] >= 1
    context = raw["parts"]["context"]["tiers"]
    assert set(context) == {"0", "200"}
    assert context["200"]["memories"] >= 200
    assert all(tier["context_ms"]["n"] == 5 for tier in context.values())
    [load] = raw["parts"]["load"]["runs"]
    assert load["answers"] > 0
    assert load["interactions_stored"] == load["messages_sent"], "every message sent was stored"
    cpu = load["cpu_ms_per_answer"]
    assert cpu["event_loop"] > 0 and cpu["worker_threads"] > 0, "the loop and the model both did work"
    assert cpu["total"] == pytest.approx(
        sum(v for k, v in cpu.items() if k not in ("total", "fake_claude", "ceiling_answers_per_second")), abs=0.05
    )
    assert cpu["ceiling_answers_per_second"] == pytest.approx(raw["machine"]["cores"] * 1000 / cpu["total"], rel=0.01)
    assert raw["parts"]["memory"]["questions"] == 29
    steady, cold = raw["parts"]["openloop"]["runs"]
    assert steady["people_seen_before"] and not cold["people_seen_before"]
    for open_loop in (steady, cold):  # stored = this run's own, not the greeting's
        assert open_loop["answers"] == open_loop["messages_sent"] == open_loop["interactions_stored"] > 0
        assert open_loop["accept_ms"]["n"] == open_loop["messages_sent"]
        assert open_loop["added_ms"]["n"] + open_loop["behind_their_own_ms"]["n"] == open_loop["answers"]
    slack_open = raw["parts"]["slack_openloop"]
    [through_slack] = slack_open["runs"]
    assert through_slack["failed"] == 0 and through_slack["answers"] == through_slack["messages_sent"] > 0
    assert through_slack["ack_ms"]["n"] == through_slack["messages_sent"]
    assert slack_open["calibration"]["cpu_ms_per_answer"]["event_loop"] > 0, "the worker's own CPU was read"
    assert through_slack["loop_lag_p99_bucket_ms"] is not None, "the worker's loop lag was read from /metrics"
    kill, term = raw["parts"]["recovery"]["runs"]
    assert (kill["stopped_by"], term["stopped_by"]) == ("SIGKILL", "SIGTERM")
    assert kill["last_answered_s"] >= kill["ready_s"] > 0 and term["last_answered_s"] >= term["ready_s"] > 0
    streaming = raw["parts"]["streaming"]
    assert all(
        streaming["first_visible"][k]["first_visible_ms"]["n"] == 3 for k in ("discord", "slack_thread", "slack_dm")
    )
    assert all(streaming["long_answer"][k]["edits_per_answer"] >= 1 for k in ("discord", "slack_thread", "slack_dm"))
    assert streaming["cache"]["turns"] == 4 and streaming["cache"]["input_tokens"] > 0
    runs = raw["parts"]["streaming_cpu"]["runs"]
    assert [r["streaming"] for r in runs] == [False, True] and all(r["answers"] > 0 for r in runs)
    person = raw["parts"]["person_model"]
    assert person["dataset"]["people"] == 2 and person["dataset"]["messages"] >= 40
    errors = person["replay"]["errors"]
    assert errors["calls_with_errors"] > 0, "errors were injected"
    assert errors["current_share"] > 0.8
    assert errors["superseded_by_cause"].get("unexplained", 0) == 0, "a superseded fact reached a prompt unexplained"
    assert errors["malformed_calls_that_changed_the_model"] == 0
    assert errors["dropped_changes_seen_in_prompts"] == errors["other_peoples_items_in_prompts"] == 0
    assert errors["duplicate_items_in_prompts"] == 0
    defaults = person["pacing"][0]
    assert defaults["settings"] == {} and defaults["bursts"]["calls_per_100_messages"] <= 25
    assert errors["learning"]["requests_per_100_messages"] >= defaults["all"]["calls_per_100_messages"] > 0
    off, on = person["latency"]["runs"]
    assert (off["learning"], on["learning"]) == (False, True)
    assert off["answer_ms"]["n"] == on["answer_ms"]["n"] == 60 and on["learning_calls"] > 0
    gate = raw["parts"]["gate"]["cases"]
    assert [c["store"] for c in gate] == ["sqlite", "sqlite", "sqlite", "postgres", "redis"]
    assert all(run["screen_ms"]["n"] == 100 and run["charge_ms"]["n"] == 100 for c in gate for run in c["runs"])
    table = (tmp_path / "benchmarks.md").read_text()
    for heading in (
        "## Context assembly",
        "## Load",
        "## Open loop",
        "## Open loop through the Slack adapter",
        "## Recovery after a restart",
        "## Memory retrieval",
        "## Streaming",
        "## What streaming costs",
        "## Person model",
        "## The operators' gate",
        "python -m bench --quick",
        "ceiling",
    ):
        assert heading in table
