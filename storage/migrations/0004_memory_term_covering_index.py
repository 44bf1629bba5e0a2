from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index


async def vacuum_postings_often(apps: Any, schema_editor: Any) -> None:
    """PostgreSQL: an index-only scan skips the table only for pages vacuum has marked all-visible, and by default
    an insert-only table is vacuumed after growing by 20%. Postings arrive with every answer, so vacuum them after
    2% growth (cheap: it visits only the pages written since)."""
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor.client.execute_script(
            "ALTER TABLE memory_term SET (autovacuum_vacuum_insert_scale_factor = 0.02)"
        )


async def default_vacuum(apps: Any, schema_editor: Any) -> None:
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor.client.execute_script(
            "ALTER TABLE memory_term RESET (autovacuum_vacuum_insert_scale_factor)"
        )


class Migration(migrations.Migration):
    dependencies = [('rapport', '0003_memory_seq_index')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='MemoryTerm',
            index=Index(fields=['user_key', 'term', 'scope', 'memory_id', 'tf', 'length']),
        ),
        ops.RemoveIndex(
            model_name='MemoryTerm',
            name=None,
            fields=['user_key', 'term', 'scope'],
        ),
        ops.RunPython(vacuum_postings_often, default_vacuum),
    ]
