from orjson import loads
from tortoise import fields, migrations
from tortoise.fields.data import JSON_DUMPS
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="Feedback",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("interaction_id", fields.CharField(max_length=32)),
                ("user_key", fields.CharField(db_index=True, max_length=191)),
                ("emoji", fields.CharField(max_length=64)),
                ("score", fields.FloatField()),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "feedback",
                "app": "rapport",
                "unique_together": (("interaction_id", "emoji"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Interaction",
            fields=[
                ("id", fields.CharField(primary_key=True, unique=True, db_index=True, max_length=32)),
                ("user_key", fields.CharField(db_index=True, max_length=191)),
                ("platform", fields.CharField(max_length=32)),
                ("conversation_id", fields.CharField(max_length=191)),
                ("thread_id", fields.CharField(null=True, max_length=191)),
                ("private", fields.BooleanField()),
                ("user_text", fields.TextField(unique=False)),
                ("reply_text", fields.TextField(unique=False)),
                ("topics", fields.JSONField(default=list, encoder=JSON_DUMPS, decoder=loads)),
                ("ok", fields.BooleanField(default=True)),
                ("error", fields.CharField(null=True, max_length=64)),
                ("model", fields.CharField(max_length=64)),
                ("input_tokens", fields.IntField(default=0)),
                ("output_tokens", fields.IntField(default=0)),
                ("latency_ms", fields.IntField(default=0)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={"table": "interaction", "app": "rapport", "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="LearnedPattern",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("user_key", fields.CharField(max_length=191)),
                ("kind", fields.CharField(max_length=32)),
                ("value", fields.CharField(max_length=128)),
                ("scope", fields.CharField(max_length=8)),
                ("count", fields.IntField(default=0)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "learned_pattern",
                "app": "rapport",
                "unique_together": (("user_key", "kind", "value", "scope"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ReplyMessage",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("platform", fields.CharField(max_length=32)),
                ("channel_id", fields.CharField(max_length=191)),
                ("message_id", fields.CharField(max_length=191)),
                ("interaction_id", fields.CharField(db_index=True, max_length=32)),
                ("user_key", fields.CharField(db_index=True, max_length=191)),
            ],
            options={
                "table": "reply_message",
                "app": "rapport",
                "unique_together": (("platform", "channel_id", "message_id"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="UserProfile",
            fields=[
                ("user_key", fields.CharField(primary_key=True, unique=True, db_index=True, max_length=191)),
                ("platform", fields.CharField(max_length=32)),
                ("display_name", fields.CharField(default="", max_length=191)),
                ("interests", fields.JSONField(default=dict, encoder=JSON_DUMPS, decoder=loads)),
                ("style", fields.JSONField(default=dict, encoder=JSON_DUMPS, decoder=loads)),
                ("message_count", fields.IntField(default=0)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={"table": "user_profile", "app": "rapport", "pk_attr": "user_key"},
            bases=["Model"],
        ),
    ]
