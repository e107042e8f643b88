from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0012_audit_chains')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Acknowledgement',
            name='speech',
            field=fields.JSONField(null=True),
        ),
        ops.AddField(
            model_name='RecordingSession',
            name='spoken',
            field=fields.JSONField(default=dict),
        ),
    ]
