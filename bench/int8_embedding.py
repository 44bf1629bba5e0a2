"""What the embedding model would save and cost quantised to int8: a decision for issue 17's CPU per answer.

    python -m bench.int8_embedding [DATASET.json ...]

The same MiniLM graph the worker exports (storage/embeddings.py), quantised by onnxruntime's `quantize_dynamic`
(weights int8, activations quantised as they come) into a scratch directory. Reports, for each graph: one short
text's encode time on one thread (what a turn's query costs under load), the cosine between its vectors and the
float graph's, and the retrieval evaluation (`bench.memory`) on each dataset given (default: the dev set).
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import memory
from bench.stats import summary_ms
from storage.embeddings import OnnxEncoder, _fingerprint, _resolve, default_cache_dir, default_model_path, load_model

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


def _quantised(scratch: Path) -> OnnxEncoder:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_dir = _resolve(default_model_path())
    graph = default_cache_dir() / f"{model_dir.name}-{_fingerprint(model_dir)}.onnx"
    target = scratch / "int8.onnx"
    quantize_dynamic(str(graph), str(target), weight_type=QuantType.QInt8)
    return OnnxEncoder(target, model_dir)


def run(datasets: list[Path]) -> dict[str, Any]:
    plain = load_model(default_model_path())  # exports the float graph first if this machine has none
    with tempfile.TemporaryDirectory(prefix="rapport-int8-") as scratch:
        int8 = _quantised(Path(scratch))
        cosines = (plain.encode(TEXTS) * int8.encode(TEXTS)).sum(axis=1)
        report: dict[str, Any] = {"cosine": [round(float(c), 4) for c in cosines], "graphs": {}}
        for name, encoder in (("float32", plain), ("int8", int8)):
            recall = {}
            for dataset in datasets:
                result = asyncio.run(memory.run(dataset, compare=False, database_url=None, model=encoder))
                recall[str(dataset)] = result["modes"]["hybrid"]["overall"]
            report["graphs"][name] = {"encode_ms": _timed(encoder), "recall": recall}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8_embedding", description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", type=Path, default=[Path("bench/data/devset.json")])
    args = parser.parse_args(argv)
    report = run(args.datasets)
    print(f"cosine to the float graph's vectors: {report['cosine']}")
    print(
        "| graph | encode one text p50 / p95 ms | "
        + " | ".join(f"{d.name} @10 / session@5" for d in args.datasets)
        + " |"
    )
    print("| --- | --- | " + " | ".join("---" for _ in args.datasets) + " |")
    for name, graph in report["graphs"].items():
        timing = graph["encode_ms"]
        cells = [
            f"{graph['recall'][str(d)]['turn_recall@10']:.1%} / {graph['recall'][str(d)]['session_recall@5']:.1%}"
            for d in args.datasets
        ]
        print(f"| {name} | {timing['p50']} / {timing['p95']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
