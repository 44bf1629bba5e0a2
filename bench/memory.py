"""Retrieval evaluation on a LoCoMo-format dataset, through the product's own memory path.

    python -m bench.memory DATASET.json [--compare] [--json results.json]

Each sample becomes one person; every turn is stored as that person's memory with the session's date, through
`core.recall.Recall.add` (what the assistant uses), and every question is asked through `Recall.search`.
Reports turn-level recall@5/10/20 of the evidence, session-level recall@5, per category, and retrieval latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.stats import summary_ms
from bot.wiring import build_memory
from core.ports import Memory
from core.recall import Recall, RecallSettings, embedded_text
from storage.database import Database
from storage.embeddings import BatchingEmbedder, default_model_path, load_model

__all__ = ["MODES", "evaluate", "load_samples", "main", "session_of"]

CUTOFFS = (5, 10, 20)
CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
MODES: dict[str, RecallSettings] = {
    "hybrid": RecallSettings(),
    "vector": RecallSettings(vector_weight=1.0, lexical_weight=0.0, neighbour_share=0.0, recency_weight=0.0),
    "bm25": RecallSettings(vector_weight=0.0, lexical_weight=1.0, neighbour_share=0.0, recency_weight=0.0),
    "equal-fusion": RecallSettings(vector_weight=0.5, lexical_weight=0.5, neighbour_share=0.0, recency_weight=0.0),
}
_SESSION = re.compile(r"^session_(\d+)$")


def _parse_when(text: str) -> datetime:
    """LoCoMo dates look like '1:56 pm on 8 May, 2023'; anything unreadable falls back to the epoch."""
    for fmt in ("%I:%M %p on %d %B, %Y", "%H:%M on %d %B, %Y", "%d %B, %Y", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return datetime(1970, 1, 1, tzinfo=UTC)


def session_of(dia_id: str) -> str:
    """'D3:14' → 'D3' (LoCoMo dialogue ids name their session)."""
    return dia_id.split(":", 1)[0]


@dataclass
class Sample:
    user_key: str
    memories: list[Memory]
    questions: list[dict[str, Any]]


def load_samples(path: Path) -> list[Sample]:
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError("a LoCoMo dataset is a JSON list of samples")
    samples = []
    for index, raw in enumerate(data):
        sample_id = str(raw.get("sample_id", index))
        user_key = f"locomo:{sample_id}"
        conversation = raw["conversation"]
        sessions = sorted(
            (int(m.group(1)), key) for key in conversation if (m := _SESSION.match(key)) and conversation[key]
        )
        memories = []
        for number, key in sessions:
            when = _parse_when(str(conversation.get(f"{key}_date_time", "")))
            for turn in conversation[key]:
                text = str(turn.get("text", ""))
                if turn.get("blip_caption"):
                    text += f" [shares a photo: {turn['blip_caption']}]"
                memories.append(
                    Memory(
                        id=f"{sample_id}|{turn['dia_id']}",
                        user_key=user_key,
                        text=text,
                        scope="person",
                        conversation_id=f"{sample_id}:session_{number}",
                        created_at=when,
                        speaker=str(turn.get("speaker", "")),
                    )
                )
        questions = [q for q in raw.get("qa", []) if q.get("evidence")]
        samples.append(Sample(user_key=user_key, memories=memories, questions=questions))
    return samples


@dataclass
class Tally:
    questions: int = 0
    turn_recall: dict[int, float] = field(default_factory=lambda: dict.fromkeys(CUTOFFS, 0.0))
    session_recall_5: float = 0.0

    def add(self, evidence: set[str], ranked: Sequence[str]) -> None:
        self.questions += 1
        for k in CUTOFFS:
            self.turn_recall[k] += len(evidence & set(ranked[:k])) / len(evidence)
        wanted = {session_of(e) for e in evidence}
        self.session_recall_5 += len(wanted & {session_of(r) for r in ranked[:5]}) / len(wanted)

    def report(self) -> dict[str, Any]:
        n = max(self.questions, 1)
        return {
            "questions": self.questions,
            **{f"turn_recall@{k}": round(self.turn_recall[k] / n, 4) for k in CUTOFFS},
            "session_recall@5": round(self.session_recall_5 / n, 4),
        }


async def evaluate(samples: Sequence[Sample], recalls: dict[str, Recall], embedder: BatchingEmbedder) -> dict[str, Any]:
    """Store every sample once, then ask every question in every mode."""
    primary = next(iter(recalls.values()))
    for sample in samples:
        embeddings = await embedder.embed([embedded_text(m) for m in sample.memories])
        for start in range(0, len(sample.memories), 500):
            await primary.add(sample.memories[start : start + 500], embeddings[start : start + 500])
    results: dict[str, Any] = {}
    for mode, recall in recalls.items():
        overall = Tally()
        by_category: defaultdict[str, Tally] = defaultdict(Tally)
        latencies: list[float] = []
        for sample in samples:
            prefix = sample.user_key.split(":", 1)[1] + "|"
            for qa in sample.questions:
                started = time.perf_counter()
                [vector] = await embedder.embed([str(qa["question"])])
                hits = await recall.search(
                    sample.user_key, str(qa["question"]), _ready(vector), scopes=None, limit=max(CUTOFFS)
                )
                latencies.append(time.perf_counter() - started)
                ranked = [hit.memory.id.removeprefix(prefix) for hit in hits]
                evidence = {str(e) for e in qa["evidence"]}
                overall.add(evidence, ranked)
                category = qa.get("category")
                by_category[CATEGORY_NAMES.get(int(category), str(category)) if category else "?"].add(evidence, ranked)
        results[mode] = {
            "overall": overall.report(),
            "by_category": {name: tally.report() for name, tally in sorted(by_category.items())},
            "latency_ms": summary_ms(latencies),
        }
    return results


async def run(dataset: Path, *, compare: bool, database_url: str | None, model: Any = None) -> dict[str, Any]:
    samples = load_samples(dataset)
    with tempfile.TemporaryDirectory(prefix="rapport-eval-") as scratch:
        database = Database(database_url or f"sqlite://{scratch}/eval.sqlite3")
        await database.open()
        try:
            results = await _evaluate_all(samples, database, compare=compare, model=model)
        finally:
            await database.close()
    return {
        "dataset": str(dataset),
        "samples": len(samples),
        "memories": sum(len(s.memories) for s in samples),
        "questions": sum(len(s.questions) for s in samples),
        "modes": results,
    }


async def _ready(vector: list[float]) -> list[float]:
    return vector


async def _evaluate_all(samples: list[Sample], database: Database, *, compare: bool, model: Any) -> dict[str, Any]:
    index, hybrid = await build_memory(database, None)
    recalls = {"hybrid": hybrid}
    if compare:
        for mode, settings in MODES.items():
            if mode != "hybrid":
                recalls[mode] = Recall(index=index, settings=settings)
    model = model if model is not None else await asyncio.to_thread(load_model, default_model_path())
    embedder = BatchingEmbedder(model)
    try:
        results = await evaluate(samples, recalls, embedder)
    finally:
        await embedder.close()
    for sample in samples:
        await hybrid.forget_user(sample.user_key)
    await index.close()
    return results


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"dataset {report['dataset']}: {report['samples']} samples, {report['memories']} turns, "
        f"{report['questions']} questions with evidence",
        "| mode | recall@5 | recall@10 | recall@20 | session recall@5 | p50 ms | p95 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, result in report["modes"].items():
        o, lat = result["overall"], result["latency_ms"]
        lines.append(
            f"| {mode} | {o['turn_recall@5']:.1%} | {o['turn_recall@10']:.1%} | {o['turn_recall@20']:.1%} "
            f"| {o['session_recall@5']:.1%} | {lat['p50']} | {lat['p95']} |"
        )
    hybrid = report["modes"]["hybrid"]["by_category"]
    lines += ["", "| category (hybrid) | questions | recall@10 | session recall@5 |", "| --- | --- | --- | --- |"]
    for name, r in hybrid.items():
        lines.append(f"| {name} | {r['questions']} | {r['turn_recall@10']:.1%} | {r['session_recall@5']:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a LoCoMo-format JSON file")
    parser.add_argument("--compare", action="store_true", help="also run vector-only, BM25-only and equal fusion")
    parser.add_argument("--database-url", help="where to store the memories (default: a scratch SQLite file)")
    parser.add_argument("--json", type=Path, help="write the full results here")
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(run(args.dataset, compare=args.compare, database_url=args.database_url))
    except (OSError, ValueError, KeyError) as exc:
        print(f"bench.memory: cannot evaluate {args.dataset}: {exc}", file=sys.stderr)
        return 2
    print(_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
