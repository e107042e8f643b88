from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0002_audit_append_only')]

    initial = False

    operations = [
        ops.CreateModel(
            name='IdentityUpload',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('session', fields.ForeignKeyField('models.RecordingSession', source_field='session_id', db_constraint=True, to_field='id', related_name='identity_uploads', on_delete=OnDelete.RESTRICT)),
                ('attempt', fields.IntField()),
                ('kind', fields.CharField(max_length=16)),
                ('path', fields.CharField(max_length=300)),
                ('sha256', fields.CharField(max_length=64)),
                ('size_bytes', fields.BigIntField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'identity_upload', 'app': 'models', 'pk_attr': 'id', 'table_description': 'An uploaded ID-card side or liveness clip, stored encrypted (R-12, R-52).'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Order',
            name='extra_values',
            field=fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='Order',
            name='insured_name_enc',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name='Order',
            name='payment_mode',
            field=fields.CharField(default='年交', max_length=16),
        ),
        ops.AddField(
            model_name='Order',
            name='sum_insured',
            field=fields.DecimalField(null=True, max_digits=14, decimal_places=2),
        ),
        ops.AlterField(
            model_name='RecordingSession',
            name='script_hash',
            field=fields.CharField(default='', max_length=80),
        ),
        ops.AlterField(
            model_name='ScriptVersion',
            name='content_hash',
            field=fields.CharField(max_length=80),
        ),
        ops.AddField(
            model_name='ScriptVersion',
            name='approved_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ScriptVersion',
            name='audio',
            field=fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='ScriptVersion',
            name='lint',
            field=fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='ScriptVersion',
            name='prerender_error',
            field=fields.TextField(default='', unique=False),
        ),
        ops.AddField(
            model_name='ScriptVersion',
            name='prerender_status',
            field=fields.CharField(default='', max_length=16),
        ),
        ops.AddField(
            model_name='ScriptVersion',
            name='retired_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ScriptVersion',
            name='submitted_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ScriptVersion',
            name='submitted_by',
            field=fields.ForeignKeyField('models.User', source_field='submitted_by_id', null=True, db_constraint=True, to_field='id', related_name='scripts_submitted', on_delete=OnDelete.RESTRICT),
        ),
    ]
