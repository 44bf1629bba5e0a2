from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('rapport', '0004_memory_term_covering_index')]

    initial = False

    operations = [
        ops.CreateModel(
            name='InboxEntry',
            fields=[
                ('seq', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key', fields.CharField(unique=True, max_length=255)),
                ('person', fields.CharField(max_length=191)),
                ('kind', fields.CharField(max_length=16)),
                ('platform', fields.CharField(max_length=32)),
                ('place', fields.CharField(max_length=191)),
                ('thread', fields.CharField(null=True, max_length=191)),
                ('conversation', fields.CharField(max_length=255)),
                ('event', fields.TextField(unique=False)),
                ('route', fields.TextField(unique=False)),
                ('step', fields.SmallIntField(default=0)),
                ('answer', fields.TextField(null=True, unique=False)),
                ('refs', fields.TextField(null=True, unique=False)),
                ('taken', fields.IntField(default=0)),
                ('job_owner', fields.CharField(null=True, max_length=64)),
                ('job_until', fields.BigIntField(default=0)),
                ('received_at', fields.BigIntField()),
            ],
            options={'table': 'inbox', 'app': 'rapport', 'indexes': [Index(fields=['person', 'step', 'seq']), Index(fields=['platform', 'place', 'thread']), Index(fields=['conversation', 'seq']), Index(fields=['step', 'job_until'])], 'pk_attr': 'seq'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PersonTurn',
            fields=[
                ('person', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=191)),
                ('owner', fields.CharField(max_length=64)),
                ('until', fields.BigIntField()),
            ],
            options={'table': 'person_turn', 'app': 'rapport', 'pk_attr': 'person'},
            bases=['Model'],
        ),
    ]
