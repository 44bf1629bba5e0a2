from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('rapport', '0002_memory')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='MemoryItem',
            index=Index(fields=['user_key', 'seq']),
        ),
    ]
