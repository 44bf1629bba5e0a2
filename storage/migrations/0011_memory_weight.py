from typing import Any

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

from core.recall import terms_of

# Each memory row holds how much its words can hold (core.recall.weight_of), which the index multiplies into both
# halves' scores, so that "Later!" said by the person a question names no longer fills the top places. Rows
# written before are weighed here, page by page, with the formula as it was when this migration was written.
PAGE = 2_000


def weight_of(text: str) -> float:
    """core.recall.weight_of when this migration was written (kept here, frozen)."""
    n = len(terms_of(text))
    return n / (n + 1)


async def weigh_rows(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    mark = "$1" if postgres else "?"
    update = "UPDATE memory SET weight = $1 WHERE seq = $2" if postgres else "UPDATE memory SET weight = ? WHERE seq = ?"
    last = -1
    while True:
        _, rows = await client.execute_query(
            f"SELECT seq, text FROM memory WHERE seq > {mark} ORDER BY seq LIMIT {PAGE}", [last]
        )
        if not rows:
            return
        await client.execute_many(update, [[weight_of(str(row["text"])), int(row["seq"])] for row in rows])
        last = int(rows[-1]["seq"])


async def nothing(apps: Any, schema_editor: Any) -> None:
    """Back: the column goes with the field."""


class Migration(migrations.Migration):
    dependencies = [("rapport", "0010_memories_embedded_with_their_speaker")]

    initial = False

    operations = [
        ops.AddField(model_name="MemoryItem", name="weight", field=fields.FloatField(null=True)),
        ops.RunPython(weigh_rows, nothing),
    ]
