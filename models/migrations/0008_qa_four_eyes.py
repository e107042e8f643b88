"""Four eyes for dismissing findings (R-40): `qa_dismissal` holds each dismissal with its reason
code (a fixed list, `qa.dismissals`), who proposed it and, for a critical finding, the second
inspector who approved or refused it; `qa_finding.dismissal_reason` keeps the reason of the
dismissal in effect. Reversible: rolling back drops the table and the column."""

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.migrations import operations as ops

from models.qa import DismissalStatus


class Migration(migrations.Migration):
    dependencies = [('models', '0007_seal_keys')]

    initial = False

    operations = [
        ops.AddField(
            model_name='QaFinding',
            name='dismissal_reason',
            field=fields.CharField(default='', max_length=40),
        ),
        ops.CreateModel(
            name='QaDismissal',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('finding', fields.ForeignKeyField('models.QaFinding', source_field='finding_id', db_constraint=True, to_field='id', related_name='dismissals', on_delete=OnDelete.RESTRICT)),
                ('session', fields.ForeignKeyField('models.RecordingSession', source_field='session_id', db_constraint=True, to_field='id', related_name='qa_dismissals', on_delete=OnDelete.RESTRICT)),
                ('reason_code', fields.CharField(max_length=40)),
                ('note', fields.CharField(max_length=500)),
                ('duplicate_of_id', fields.IntField(null=True)),
                ('four_eyes', fields.BooleanField()),
                ('status', fields.CharEnumField(description='PROPOSED: proposed\nAPPROVED: approved\nREFUSED: refused', enum_type=DismissalStatus, max_length=12)),
                ('proposed_by', fields.ForeignKeyField('models.User', source_field='proposed_by_id', db_constraint=True, to_field='id', related_name='qa_dismissals_proposed', on_delete=OnDelete.RESTRICT)),
                ('proposed_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('reviewed_by', fields.ForeignKeyField('models.User', source_field='reviewed_by_id', null=True, db_constraint=True, to_field='id', related_name='qa_dismissals_reviewed', on_delete=OnDelete.RESTRICT)),
                ('reviewed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('review_note', fields.CharField(default='', max_length=500)),
            ],
            options={'table': 'qa_dismissal', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A dismissal of one finding, with a reason from the fixed list (R-40).'},
            bases=['Model'],
        ),
    ]
