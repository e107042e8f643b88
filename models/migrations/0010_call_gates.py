from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0009_evidence_incomplete')]

    initial = False

    operations = [
        ops.AddField(
            model_name='RecordingSession',
            name='answer_open_step',
            field=fields.CharField(default='', max_length=64),
        ),
        ops.AddField(
            model_name='RecordingSession',
            name='call_parties',
            field=fields.JSONField(default=dict),
        ),
    ]
