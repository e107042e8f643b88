"""SessionState gains `evidence_incomplete` (sealing refused because a registered file is missing,
unreadable or not what was written; R-31). The column stays VARCHAR(20); what changes is the
enum listed in the column description, which Tortoise's autodetector compares, so the change is
recorded here as `tortoise makemigrations` writes it, keeping the migration state equal to the
models (a later makemigrations finds nothing to add)."""

from typing import Any

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

from models.sessions import SessionState

STATES = (
    "CREATED: created\nINVITED: invited\nOPENED: opened\nCONSENTED: consented\n"
    "IDENTITY_VERIFIED: identity_verified\nIN_CALL: in_call\nDISCLOSING: disclosing\n"
    "SIGNING: signing\nCOMPLETED: completed\nSEALED: sealed\nQA_PENDING: qa_pending\n"
    "QA_PASSED: qa_passed\nQA_REJECTED: qa_rejected\nDECLINED: declined\n"
    "IDENTITY_FAILED: identity_failed\nINTERRUPTED: interrupted\nEXPIRED: expired\n"
    "ABORTED: aborted\nEVIDENCE_INCOMPLETE: evidence_incomplete"
)


class AlterDescription(ops.AlterField):
    """An AlterField whose only change is the description. PostgreSQL gets its COMMENT ON
    COLUMN. SQLite keeps no column comments, and Tortoise answers any AlterField there by
    rebuilding the table, which fails with "FOREIGN KEY constraint failed" as soon as events,
    recordings or signatures reference a session: SQLite gets the state change only."""

    async def database_forward(self, app_label: str, old_state: Any, new_state: Any,
                               state_editor: Any = None) -> None:
        if state_editor is not None and state_editor.DIALECT != "sqlite":
            await super().database_forward(app_label, old_state, new_state, state_editor)

    async def database_backward(self, app_label: str, old_state: Any, new_state: Any,
                                state_editor: Any = None) -> None:
        if state_editor is not None and state_editor.DIALECT != "sqlite":
            await super().database_backward(app_label, old_state, new_state, state_editor)


class Migration(migrations.Migration):
    dependencies = [('models', '0008_qa_four_eyes')]

    initial = False

    operations = [
        AlterDescription(
            model_name='RecordingSession',
            name='resume_state',
            field=fields.CharEnumField(null=True, description=STATES, enum_type=SessionState,
                                       max_length=20),
        ),
        AlterDescription(
            model_name='RecordingSession',
            name='state',
            field=fields.CharEnumField(default=SessionState.CREATED, description=STATES,
                                       enum_type=SessionState, max_length=20),
        ),
    ]
