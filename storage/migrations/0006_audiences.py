import json
from typing import Any

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

# What was kept as "private" (a DM, the console) is the person's alone. What was kept as "shared" cannot be placed
# better than its own conversation: it becomes private to that channel (core.privacy). A Discord channel's server
# is not in what was stored, so those codes name no server, and no live place matches them: they come back in DMs
# only. Interests and patterns were counted without their conversation: both kinds become the person's alone.
OLD = ("private", "shared")


def _place(conversation_key: str) -> str:
    platform, team, channel = (conversation_key.split(":") + ["", "", ""])[:3]
    return f"place:{platform}:{team}:{channel}"


async def place_audiences(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    mark = "$1" if client.capabilities.dialect == "postgres" else "?"
    await client.execute_query("UPDATE memory SET scope = 'person' WHERE scope = 'private'")
    _, rows = await client.execute_query("SELECT DISTINCT conversation_id FROM memory WHERE scope = 'shared'")
    for row in rows:
        conversation = row["conversation_id"]
        code = _place(conversation)
        second = "$2" if mark == "$1" else "?"
        await client.execute_query(
            f"UPDATE memory SET scope = {mark} WHERE scope = 'shared' AND conversation_id = {second}", [code, conversation]
        )
    await client.execute_query(
        "UPDATE memory_term SET scope = (SELECT m.scope FROM memory m WHERE m.id = memory_term.memory_id) "
        "WHERE scope IN ('private', 'shared')"
    )
    await client.execute_query("DELETE FROM memory_stats")
    await client.execute_query(
        "INSERT INTO memory_stats (user_key, scope, documents, total_length) "
        "SELECT user_key, scope, COUNT(*), SUM(length) FROM memory GROUP BY user_key, scope"
    )
    await client.execute_query(
        "INSERT INTO learned_pattern (user_key, kind, value, scope, count, updated_at) "
        "SELECT user_key, kind, value, 'person', SUM(count), MAX(updated_at) FROM learned_pattern "
        "WHERE scope IN ('private', 'shared') GROUP BY user_key, kind, value "
        "ON CONFLICT (user_key, kind, value, scope) DO UPDATE SET count = learned_pattern.count + excluded.count"
    )
    await client.execute_query("DELETE FROM learned_pattern WHERE scope IN ('private', 'shared')")
    _, profiles = await client.execute_query("SELECT user_key, CAST(interests AS TEXT) AS interests FROM user_profile")
    for profile in profiles:
        interests = json.loads(profile["interests"] or "{}")
        placed = {
            topic: {"person": sum(counts.values())} if set(counts) <= set(OLD) else counts
            for topic, counts in interests.items()
        }
        if placed != interests:
            cast = "::jsonb" if mark == "$1" else ""
            second = "$2" if mark == "$1" else "?"
            await client.execute_query(
                f"UPDATE user_profile SET interests = {mark}{cast} WHERE user_key = {second}",
                [json.dumps(placed), profile["user_key"]],
            )


async def unplace_audiences(apps: Any, schema_editor: Any) -> None:
    """Back to two scopes, as well as they go: the person's alone is private, everything else shared."""
    client = schema_editor.client
    for table in ("memory", "memory_term", "memory_stats", "learned_pattern"):
        await client.execute_query(f"UPDATE {table} SET scope = 'private' WHERE scope = 'person'")
        await client.execute_query(f"UPDATE {table} SET scope = 'shared' WHERE scope <> 'private'")


class WidenOnPostgres(ops.AlterField):
    """AlterField on PostgreSQL only. SQLite does not enforce a VARCHAR's length, and tortoise's SQLite schema
    editor rebuilds the table to alter a column, dropping its unique constraints (which ON CONFLICT relies on)."""

    async def database_forward(self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None) -> None:
        if state_editor is not None and state_editor.client.capabilities.dialect == "postgres":
            await super().database_forward(app_label, old_state, new_state, state_editor)

    async def database_backward(self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None) -> None:
        if state_editor is not None and state_editor.client.capabilities.dialect == "postgres":
            await super().database_backward(app_label, old_state, new_state, state_editor)


class Migration(migrations.Migration):
    dependencies = [('rapport', '0005_inbox')]

    initial = False

    operations = [
        WidenOnPostgres(
            model_name='LearnedPattern',
            name='scope',
            field=fields.CharField(max_length=191),
        ),
        WidenOnPostgres(
            model_name='MemoryItem',
            name='scope',
            field=fields.CharField(max_length=191),
        ),
        WidenOnPostgres(
            model_name='MemoryStats',
            name='scope',
            field=fields.CharField(max_length=191),
        ),
        WidenOnPostgres(
            model_name='MemoryTerm',
            name='scope',
            field=fields.CharField(max_length=191),
        ),
        ops.RunPython(place_audiences, unplace_audiences),
    ]
