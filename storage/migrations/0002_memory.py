from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("rapport", "0001_initial")]

    initial = False

    operations = [
        ops.CreateModel(
            name="MemoryItem",
            fields=[
                ("seq", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("id", fields.CharField(unique=True, max_length=64)),
                ("user_key", fields.CharField(max_length=191)),
                ("scope", fields.CharField(max_length=8)),
                ("conversation_id", fields.CharField(max_length=191)),
                ("speaker", fields.CharField(default="", max_length=191)),
                ("text", fields.TextField(unique=False)),
                ("reply", fields.TextField(default="", unique=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("length", fields.IntField(default=0)),
            ],
            options={
                "table": "memory",
                "app": "rapport",
                "indexes": [Index(fields=["user_key", "conversation_id", "seq"])],
                "pk_attr": "seq",
                "table_description": "A long-term memory. `seq` orders memories, so a conversation's neighbouring turns can be found.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="MemoryStats",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("user_key", fields.CharField(max_length=191)),
                ("scope", fields.CharField(max_length=8)),
                ("documents", fields.BigIntField(default=0)),
                ("total_length", fields.BigIntField(default=0)),
            ],
            options={
                "table": "memory_stats",
                "app": "rapport",
                "unique_together": (("user_key", "scope"),),
                "pk_attr": "id",
                "table_description": "Per person and scope: how many memories and how many terms in all, for BM25's length normalisation.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="MemoryTerm",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("user_key", fields.CharField(max_length=191)),
                ("scope", fields.CharField(max_length=8)),
                ("term", fields.CharField(max_length=64)),
                ("memory_id", fields.CharField(db_index=True, max_length=64)),
                ("tf", fields.IntField()),
                ("length", fields.IntField()),
            ],
            options={
                "table": "memory_term",
                "app": "rapport",
                "indexes": [Index(fields=["user_key", "term", "scope"])],
                "pk_attr": "id",
                "table_description": "One posting of the BM25 index: how often a stemmed term occurs in a memory.",
            },
            bases=["Model"],
        ),
    ]
