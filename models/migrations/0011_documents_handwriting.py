from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    """R-25: a signature keeps the strokes it was written with (sealed with its image), what the
    recogniser read in the hand-copy, its character error rate and the engine."""

    dependencies = [('models', '0010_call_gates')]

    initial = False

    operations = [
        ops.AddField(model_name='Signature', name='strokes_path',
                     field=fields.CharField(default='', max_length=300)),
        ops.AddField(model_name='Signature', name='strokes_sha256',
                     field=fields.CharField(default='', max_length=64)),
        ops.AddField(model_name='Signature', name='recognised_text',
                     field=fields.TextField(default='')),
        ops.AddField(model_name='Signature', name='cer', field=fields.FloatField(null=True)),
        ops.AddField(model_name='Signature', name='engine',
                     field=fields.CharField(default='', max_length=120)),
    ]
