from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

from typing import Any

# Existing interactions take the audience their memory was kept under (0006 placed those), or, without one, the
# person's alone for a DM and the channel's own otherwise. The failed ones have nothing to learn from; the rest
# wait to be learned from once (the backfill, within each person's daily cap). People already known have been
# told that Rapport remembers.


async def place_interactions(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    await client.execute_query(
        "UPDATE interaction SET audience = COALESCE((SELECT m.scope FROM memory m WHERE m.id = interaction.id), "
        "CASE WHEN private THEN 'person' ELSE 'place:' || platform || '::' || conversation_id END)"
    )
    await client.execute_query("UPDATE interaction SET learn = 2 WHERE NOT ok OR user_text = ''")
    await client.execute_query(
        "INSERT INTO person_learning (user_key, paused, greeted, held_until, retry_at, last_quiet_call, last_seen, "
        "day, tokens_today, failures) SELECT user_key, FALSE, TRUE, 0, 0, 0, 0, '', 0, 0 FROM user_profile WHERE TRUE "
        "ON CONFLICT (user_key) DO NOTHING"
    )


async def nothing(apps: Any, schema_editor: Any) -> None:
    return None

class Migration(migrations.Migration):
    dependencies = [('rapport', '0006_audiences')]

    initial = False

    operations = [
        ops.CreateModel(
            name='PersonItem',
            fields=[
                ('seq', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('id', fields.CharField(unique=True, max_length=32)),
                ('user_key', fields.CharField(max_length=191)),
                ('kind', fields.CharField(max_length=16)),
                ('about', fields.CharField(default='', max_length=64)),
                ('text', fields.TextField(unique=False)),
                ('audience', fields.CharField(max_length=191)),
                ('origin', fields.CharField(default='said', max_length=16)),
                ('sources', fields.TextField(default='[]', unique=False)),
                ('evidence', fields.CharField(default='', max_length=191)),
                ('learned_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('valid_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('ended', fields.CharField(default='', max_length=16)),
                ('replaced_by', fields.CharField(null=True, max_length=32)),
            ],
            options={'table': 'person_item', 'app': 'rapport', 'indexes': [Index(fields=['user_key', 'ended', 'seq'])], 'pk_attr': 'seq'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PersonLearning',
            fields=[
                ('user_key', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=191)),
                ('paused', fields.BooleanField(default=False)),
                ('greeted', fields.BooleanField(default=False)),
                ('owner', fields.CharField(null=True, max_length=64)),
                ('held_until', fields.BigIntField(default=0)),
                ('retry_at', fields.BigIntField(default=0)),
                ('last_quiet_call', fields.BigIntField(default=0)),
                ('last_seen', fields.BigIntField(default=0)),
                ('day', fields.CharField(default='', max_length=10)),
                ('tokens_today', fields.IntField(default=0)),
                ('failures', fields.IntField(default=0)),
            ],
            options={'table': 'person_learning', 'app': 'rapport', 'pk_attr': 'user_key'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Interaction',
            name='audience',
            field=fields.CharField(default='person', db_default='person', max_length=191),
        ),
        ops.AddField(
            model_name='Interaction',
            name='learn',
            field=fields.SmallIntField(default=0, db_default=0),
        ),
        ops.AddIndex(
            model_name='Interaction',
            index=Index(fields=['learn', 'user_key']),
        ),
        ops.RunPython(place_interactions, nothing),
    ]
