"""What generalises in long-term recall: what is stored for a turn, how a question is asked, and the fusion.

    python -m bench.retrieval_study DATASET.json [--grid] [--json OUT.json]

Every variant goes through the product's `Recall` (add and search) over one scratch store, each as people of
its own. A variant of storage changes what a memory holds (the turn's speaker, the reply it got: in the product
a memory is a message and Rapport's answer, here a turn and the next one) and what is embedded; a variant of
search changes the query or `RecallSettings`. Reports turn recall@5/10/20, session recall@5, multi-hop
recall@10, the vector half alone at @10, and the search's p95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.memory import CATEGORY_NAMES, Sample, Tally, load_samples
from bench.stats import summary_ms
from bot.wiring import build_memory
from core.ports import Memory
from core.recall import Recall, RecallSettings
from storage.database import Database
from storage.embeddings import BatchingEmbedder, default_model_path, load_model

__all__ = ["STORAGE", "main"]

VECTOR_ONLY = RecallSettings(vector_weight=1.0, lexical_weight=0.0, neighbour_share=0.0, recency_weight=0.0)


@dataclass(frozen=True)
class Storage:
    """What a turn's memory holds (for BM25) and what is embedded for it."""

    speaker_in_index: bool  # the speaker's name among the indexed words (document_of's "Speaker: ")
    reply_in_index: bool  # the next turn's words indexed with this one
    embed: Callable[[Memory], str]


def _said(m: Memory) -> str:
    return f"{m.speaker}: {m.text}" if m.speaker else m.text


def _exchange(m: Memory) -> str:
    return f"{_said(m)}\n{m.reply}" if m.reply else _said(m)


STORAGE: dict[str, Storage] = {
    "bare (today)": Storage(True, False, lambda m: m.text),
    "speaker": Storage(True, False, _said),
    "speaker, not indexed": Storage(False, False, _said),
    "speaker+reply": Storage(True, False, _exchange),
    "speaker+reply, reply indexed": Storage(True, True, _exchange),
}

_WH = re.compile(r"^\s*(what|which|who|whom|when|where|why|how|did|does|do|is|was|were|would|could)\b\s*", re.I)


def _query_plain(question: str, names: Sequence[str]) -> str:
    return question


def _query_no_wh(question: str, names: Sequence[str]) -> str:
    """The question word off the front: it is not in any turn, and MiniLM weighs it."""
    return _WH.sub("", question).rstrip("?") or question


QUERIES: dict[str, Callable[[str, Sequence[str]], str]] = {"as asked": _query_plain, "no question word": _query_no_wh}


def _stored(sample: Sample, storage: Storage, tag: str) -> list[Memory]:
    """The sample's turns as memories of a person of this variant's own, each with the turn after it as reply."""
    out = []
    for i, m in enumerate(sample.memories):
        after = sample.memories[i + 1] if i + 1 < len(sample.memories) else None
        reply = _said(after) if after is not None and after.conversation_id == m.conversation_id else ""
        out.append(
            replace(
                m,
                id=f"{tag}|{m.id}",
                user_key=f"{sample.user_key}#{tag}",
                speaker=m.speaker if storage.speaker_in_index else "",
                text=f"{m.text}\n{reply}" if storage.reply_in_index and reply else m.text,
                reply=reply,
            )
        )
    return out


async def _score(
    samples: Sequence[Sample],
    recall: Recall,
    tag: str,
    vectors: dict[str, list[float]],
    query: Callable[[str, Sequence[str]], str],
) -> dict[str, Any]:
    overall, multi = Tally(), Tally()
    latencies = []
    for sample in samples:
        names = sorted({m.speaker for m in sample.memories})
        prefix = f"{tag}|{sample.user_key.split(':', 1)[1]}|"
        for qa in sample.questions:
            text = query(str(qa["question"]), names)
            started = time.perf_counter()
            hits = await recall.search(f"{sample.user_key}#{tag}", text, _ready(vectors[text]), scopes=None, limit=20)
            latencies.append(time.perf_counter() - started)
            ranked = [h.memory.id.removeprefix(prefix) for h in hits]
            evidence = {str(e) for e in qa["evidence"]}
            overall.add(evidence, ranked)
            if CATEGORY_NAMES.get(int(qa.get("category") or 0)) == "multi-hop":
                multi.add(evidence, ranked)
    report = overall.report()
    return {
        **report,
        "multi-hop@10": multi.report()["turn_recall@10"],
        "search_ms": summary_ms(latencies),
    }


async def _ready(vector: list[float]) -> list[float]:
    return vector


async def study(dataset: Path, *, grid: bool, model: Any = None) -> dict[str, Any]:
    samples = load_samples(dataset)
    model = model if model is not None else await asyncio.to_thread(load_model, default_model_path())
    embedder = BatchingEmbedder(model)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rapport-study-") as scratch:
        database = Database(f"sqlite://{scratch}/study.sqlite3")
        await database.open()
        try:
            index, hybrid = await build_memory(database, None)
            questions = {q(str(qa["question"]), []) for s in samples for qa in s.questions for q in QUERIES.values()}
            ordered = sorted(questions)
            vectors = dict(zip(ordered, await embedder.embed(ordered), strict=True))
            for number, (name, storage) in enumerate(STORAGE.items()):
                tag = f"v{number}"
                for sample in samples:
                    memories = _stored(sample, storage, tag)
                    embeddings = await embedder.embed([storage.embed(m) for m in memories])
                    for start in range(0, len(memories), 500):
                        await hybrid.add(memories[start : start + 500], embeddings[start : start + 500])
                settings_list: list[tuple[str, RecallSettings]] = [("default", RecallSettings())]
                if grid:
                    settings_list += [
                        (f"v{v:.2f} n{n:.2f} c{c}", RecallSettings(candidates=c, vector_weight=v,
                                                                   lexical_weight=1 - v, neighbour_share=n))
                        for v in (0.3, 0.45, 0.6, 0.75)
                        for n in (0.0, 0.35, 0.5)
                        for c in (50,)
                        if (v, n) != (0.45, 0.35)
                    ]  # fmt: skip
                vector_alone = await _score(
                    samples, Recall(index=index, settings=VECTOR_ONLY), tag,
                    vectors, _query_plain,
                )  # fmt: skip
                for query_name, query in QUERIES.items():
                    for label, settings in settings_list:
                        if query_name != "as asked" and label != "default":
                            continue
                        recall = Recall(index=index, settings=settings)
                        result = await _score(samples, recall, tag, vectors, query)
                        rows.append({"storage": name, "query": query_name, "settings": label, **result,
                                     "vector@10": vector_alone["turn_recall@10"]})  # fmt: skip
        finally:
            await index.close()
            await database.close()
            await embedder.close()
    return {"dataset": str(dataset), "rows": rows}


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"dataset {report['dataset']}",
        "| stored / embedded | query | settings | @5 | @10 | @20 | session@5 | multi-hop@10 | vector@10 | p95 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['storage']} | {r['query']} | {r['settings']} | {r['turn_recall@5']:.1%} | {r['turn_recall@10']:.1%} "
            f"| {r['turn_recall@20']:.1%} | {r['session_recall@5']:.1%} | {r['multi-hop@10']:.1%} "
            f"| {r['vector@10']:.1%} | {r['search_ms']['p95']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval_study", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--grid", action="store_true", help="also sweep fusion weights, neighbour share, candidates")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = asyncio.run(study(args.dataset, grid=args.grid))
    print(_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
