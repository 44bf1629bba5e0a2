from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

# Operators' counters (storage/usage.py): spending per period and subject, message-rate windows, and refusals
# recorded without a word of the message. New tables only: nothing to place.


class Migration(migrations.Migration):
    dependencies = [("rapport", "0007_person_model")]

    initial = False

    operations = [
        ops.CreateModel(
            name="Refusal",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("user_key", fields.CharField(max_length=191)),
                ("platform", fields.CharField(max_length=16)),
                ("server", fields.CharField(max_length=64)),
                ("channel", fields.CharField(max_length=64)),
                ("reason", fields.CharField(max_length=32)),
            ],
            options={
                "table": "refusal",
                "app": "rapport",
                "indexes": [Index(fields=["server", "at"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="UsageTotal",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("period", fields.CharField(max_length=10)),
                ("subject", fields.CharField(max_length=255)),
                ("tokens", fields.BigIntField(default=0)),
                ("cost", fields.FloatField(default=0)),
            ],
            options={
                "table": "usage_total",
                "app": "rapport",
                "unique_together": (("period", "subject"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="UsageWindow",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("subject", fields.CharField(max_length=255)),
                ("start", fields.BigIntField()),
                ("until", fields.BigIntField(default=0)),
                ("count", fields.IntField()),
            ],
            options={
                "table": "usage_window",
                "app": "rapport",
                "unique_together": (("subject", "start"),),
                "indexes": [Index(fields=["until"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
    ]
