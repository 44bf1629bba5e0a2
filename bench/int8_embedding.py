"""What the int8 embedding graph (the worker's default since issue 17's CPU work) saves and costs against the float
one it is quantised from.

    python -m bench.int8_embedding [DATASET.json ...]

Both graphs come from `storage.embeddings.load_model` (int8: onnxruntime's `quantize_dynamic`, a scale per output
channel) into a scratch directory. Reports, for each: one short text's encode time on one thread (what a turn's
query costs under load), the cosine between its vectors and the float graph's, and the retrieval evaluation
(`bench.memory`, hybrid and the vector half alone) on each dataset given (default: the dev set). A third row keeps
the memories' float vectors and embeds only the questions with int8: a deployment that switched, whose kept vectors
were not embedded again. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import memory
from bench.stats import summary_ms
from storage.embeddings import OnnxEncoder, default_model_path, load_model

TEXTS = [
    "Ada: my greyhound Pixel loves the beach, we go every Sunday morning",
    "Tom: what did I say about the cello lesson?",
    "Maya: So I accepted the offer from Tidewater Energy. Goodbye site engineer life, hello nurse.",
    "Sam: ok",
]
ROUNDS = 300


def _timed(encoder: OnnxEncoder) -> dict[str, float]:
    for text in TEXTS:
        encoder.encode([text])  # warm
    seconds = []
    for i in range(ROUNDS):
        started = time.perf_counter()
        encoder.encode([TEXTS[i % len(TEXTS)]])
        seconds.append(time.perf_counter() - started)
    return summary_ms(seconds)


class _Switched:
    """Memories (embedded many at a time) by the float graph, questions (one at a time) by the int8 one."""

    def __init__(self, before: OnnxEncoder, after: OnnxEncoder) -> None:
        self.dimension = after.dimension
        self._before, self._after = before, after

    def encode(self, texts: Sequence[str], *, quiet: bool = False) -> np.ndarray:
        return (self._before if len(texts) > 1 else self._after).encode(texts, quiet=quiet)


def run(datasets: list[Path]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rapport-int8-") as scratch:
        plain = load_model(default_model_path(), cache_dir=Path(scratch), int8=False)
        int8 = load_model(default_model_path(), cache_dir=Path(scratch))
        cosines = (plain.encode(TEXTS) * int8.encode(TEXTS)).sum(axis=1)
        report: dict[str, Any] = {"cosine": [round(float(c), 4) for c in cosines], "graphs": {}}
        graphs: dict[str, Any] = {"float32": plain, "int8": int8, "float32 memories, int8 questions": None}
        for name, encoder in graphs.items():
            recall = {}
            for dataset in datasets:
                model = encoder or _Switched(plain, int8)
                result = asyncio.run(memory.run(dataset, compare=True, database_url=None, model=model))
                recall[str(dataset)] = {
                    "hybrid": result["modes"]["hybrid"]["overall"],
                    "vector": result["modes"]["vector"]["overall"],
                }
            timing = _timed(encoder) if encoder is not None else None
            report["graphs"][name] = {"encode_ms": timing, "recall": recall}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8_embedding", description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", type=Path, default=[Path("bench/data/devset.json")])
    args = parser.parse_args(argv)
    report = run(args.datasets)
    print(f"cosine to the float graph's vectors: {report['cosine']}")
    print(
        "| graph | encode one text p50 / p95 ms | "
        + " | ".join(f"{d.name} @10 / session@5 / vector alone @10" for d in args.datasets)
        + " |"
    )
    print("| --- | --- | " + " | ".join("---" for _ in args.datasets) + " |")
    for name, graph in report["graphs"].items():
        timing = graph["encode_ms"]
        cells = []
        for d in args.datasets:
            found = graph["recall"][str(d)]
            hybrid, vector = found["hybrid"], found["vector"]
            cells.append(
                f"{hybrid['turn_recall@10']:.1%} / {hybrid['session_recall@5']:.1%} / {vector['turn_recall@10']:.1%}"
            )
        took = f"{timing['p50']} / {timing['p95']}" if timing else "–"
        print(f"| {name} | {took} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
