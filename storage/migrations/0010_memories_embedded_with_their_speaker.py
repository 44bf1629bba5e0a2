from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops

# A memory's vector is now computed from "Speaker: text" (core.recall.embedded_text), and a message's query
# from the same shape. Vectors computed from the bare words would sit beside them in another geometry, so the
# rows that name a speaker lose their vector here and the worker embeds them again behind the answers on its
# next start (storage/vector_import.py), found by their words until then. Rows without a speaker embed the same
# either way and keep theirs. A Chroma server's vectors (CHROMA_URL) are not touched: a migration cannot reach it.


async def forget_bare_vectors(apps: Any, schema_editor: Any) -> None:
    await schema_editor.client.execute_script(
        "UPDATE memory SET vector = NULL WHERE vector IS NOT NULL AND speaker <> ''"
    )


async def nothing(apps: Any, schema_editor: Any) -> None:
    """Going back keeps the vectors as they are: both shapes can be searched, only less well together."""


class Migration(migrations.Migration):
    dependencies = [("rapport", "0009_memory_rows_hold_the_index")]

    initial = False

    operations = [ops.RunPython(forget_bare_vectors, nothing)]
