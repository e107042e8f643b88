from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0004_channels')]

    initial = False

    operations = [
        ops.AddField(
            model_name='RecordingSession',
            name='speaking_step',
            field=fields.CharField(default='', max_length=64),
        ),
    ]
