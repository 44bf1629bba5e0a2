"""The retrieval evaluation: LoCoMo-format input, the product's own recall, and arithmetic that adds up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.memory import Tally, load_samples, run, session_of
from bench.stats import percentile, summary_ms

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "bench" / "data" / "locomo_mini.json"


def test_tally_arithmetic() -> None:
    tally = Tally()
    tally.add({"D1:1", "D2:4"}, ["D1:1", "D1:2", "D1:3", "D1:4", "D1:5", "D1:6", "D2:4"])
    tally.add({"D3:1"}, ["D3:1"])
    report = tally.report()
    assert report["questions"] == 2
    assert report["turn_recall@5"] == pytest.approx((0.5 + 1.0) / 2)
    assert report["turn_recall@10"] == pytest.approx(1.0)
    assert report["session_recall@5"] == pytest.approx((0.5 + 1.0) / 2)
    assert session_of("D12:3") == "D12"


def test_percentiles() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert summary_ms([0.001, 0.002, 0.003]) == {"n": 3, "p50": 2.0, "p95": 2.9, "p99": 2.98, "max": 3.0}


def test_dataset_loads_turns_with_speaker_and_session_time() -> None:
    samples = load_samples(DATASET)
    assert len(samples) == 2
    first = samples[0].memories[0]
    assert first.id == "maya-tom|D1:1" and first.speaker == "Maya"
    assert (first.created_at.year, first.created_at.month, first.created_at.day) == (2025, 3, 14)
    assert all(q["evidence"] for s in samples for q in s.questions)


async def test_evaluation_runs_through_the_product_recall_and_fusion_beats_each_half(embedding_model: Any) -> None:
    report = await run(DATASET, compare=True, database_url=None, model=embedding_model)
    assert report["questions"] == 29 and report["memories"] == 69
    modes = report["modes"]
    for result in modes.values():
        overall = result["overall"]
        assert 0 <= overall["turn_recall@5"] <= overall["turn_recall@10"] <= overall["turn_recall@20"] <= 1
        assert sum(c["questions"] for c in result["by_category"].values()) == overall["questions"]
        assert result["latency_ms"]["n"] == 29
    hybrid = modes["hybrid"]["overall"]["turn_recall@10"]
    assert hybrid >= modes["vector"]["overall"]["turn_recall@10"]
    assert hybrid >= modes["bm25"]["overall"]["turn_recall@10"]
    assert modes["hybrid"]["overall"]["session_recall@5"] >= 0.9


def test_command_refuses_a_malformed_dataset_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "a list"}))
    result = subprocess.run(
        [sys.executable, "-m", "bench.memory", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("bench.memory: cannot evaluate")
