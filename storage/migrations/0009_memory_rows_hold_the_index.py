import hashlib
from typing import Any

import numpy as np
from tortoise import fields, migrations
from tortoise.migrations import operations as ops

# Each memory row now holds what its index needs (storage/memory_store.py): its BM25 terms, packed, and its
# vector. The postings move from memory_term into the rows, as they were counted (nothing is tokenised again);
# memory_term and memory_stats go (each process computes BM25's statistics from the rows it holds). The vectors
# are in the embedded Chroma store, which a migration cannot open: the worker moves them in on its first start
# (storage/vector_import.py), without embedding anything that Chroma still has.
PAGE = 2_000


def pack_terms(terms: dict[str, int]) -> bytes:
    """As storage.memory_store.pack_terms packed them when this migration was written (kept here, frozen)."""
    packed = np.empty(len(terms), np.dtype([("term", "<i8"), ("tf", "<i4")]))
    packed["term"] = [
        int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little", signed=True) for t in terms
    ]
    packed["tf"] = list(terms.values())
    return packed.tobytes()


async def pack_postings(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    # The rows a worker must still give a vector to, found at each start without reading the whole table.
    await client.execute_script("CREATE INDEX memory_without_vector ON memory (seq) WHERE vector IS NULL")
    postgres = client.capabilities.dialect == "postgres"
    last = -1
    while True:
        mark = "$1" if postgres else "?"
        _, rows = await client.execute_query(
            f"SELECT seq, id FROM memory WHERE seq > {mark} ORDER BY seq LIMIT {PAGE}", [last]
        )
        if not rows:
            return
        ids = [row["id"] for row in rows]
        marks = ", ".join(f"${i + 1}" if postgres else "?" for i in range(len(ids)))
        _, postings = await client.execute_query(
            f"SELECT memory_id, term, tf FROM memory_term WHERE memory_id IN ({marks})", ids
        )
        terms: dict[str, dict[str, int]] = {}
        for posting in postings:  # terms were cut to 64 characters: two that share those add up
            counts = terms.setdefault(posting["memory_id"], {})
            counts[posting["term"]] = counts.get(posting["term"], 0) + int(posting["tf"])
        update = "UPDATE memory SET terms = $1 WHERE id = $2" if postgres else "UPDATE memory SET terms = ? WHERE id = ?"
        await client.execute_many(update, [[pack_terms(terms.get(memory_id, {})), memory_id] for memory_id in ids])
        last = int(rows[-1]["seq"])


async def nothing(apps: Any, schema_editor: Any) -> None:
    """Back: the postings tables come back empty (the rows keep their packed terms)."""
    await schema_editor.client.execute_script("DROP INDEX IF EXISTS memory_without_vector")


class Migration(migrations.Migration):
    dependencies = [("rapport", "0008_usage")]

    initial = False

    operations = [
        ops.AddField(model_name="MemoryItem", name="terms", field=fields.BinaryField(null=True)),
        ops.AddField(model_name="MemoryItem", name="vector", field=fields.BinaryField(null=True)),
        ops.RunPython(pack_postings, nothing),
        ops.DeleteModel(name="MemoryTerm"),
        ops.DeleteModel(name="MemoryStats"),
    ]
