from tortoise import migrations
from tortoise.migrations import operations as ops
from models.seal_keys import SealKeyStatus
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0006_qa_archive')]

    initial = False

    operations = [
        ops.CreateModel(
            name='SealKey',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('institution', fields.ForeignKeyField('models.Institution', source_field='institution_id', db_constraint=True, to_field='id', related_name='seal_keys', on_delete=OnDelete.RESTRICT)),
                ('key_id', fields.CharField(unique=True, max_length=32)),
                ('algorithm', fields.CharField(default='Ed25519', max_length=16)),
                ('public_key', fields.CharField(max_length=64)),
                ('custody', fields.CharField(default='db-aesgcm', max_length=32)),
                ('private_key_enc', fields.TextField(unique=False)),
                ('status', fields.CharEnumField(default=SealKeyStatus.ACTIVE, description='ACTIVE: active\nRETIRED: retired', enum_type=SealKeyStatus, max_length=8)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('created_by', fields.CharField(default='', max_length=100)),
                ('retired_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'seal_key', 'app': 'models', 'pk_attr': 'id', 'table_description': 'An Ed25519 key that signs the manifests of the sessions of one institution.'},
            bases=['Model'],
        ),
    ]
