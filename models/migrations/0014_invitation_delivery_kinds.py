"""Invitations through more channels (issue 17 item 4): `ChannelKind` gains `sms` and `link`,
`OutboxKind` gains `sms`, `mp_card` and `bank_push`. The columns stay VARCHAR(16) / (20); what
changes is the enum listed in the column description, which Tortoise's autodetector compares,
so the change is recorded here (as 0009 does) and a later makemigrations finds nothing to add.
SQLite keeps no column comments: only the migration state changes there."""

from typing import Any

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

from models.channels import ChannelKind, OutboxKind

CHANNELS = ("WECHAT: wechat\nMINIPROGRAM: miniprogram\nBANK_APP: bank_app\nSMS: sms\n"
            "LINK: link")
KINDS = ("WECHAT_TEMPLATE: wechat_template\nWECHAT_CUSTOM: wechat_custom\n"
         "WECHAT_SUBSCRIBE: wechat_subscribe\nMP_SUBSCRIBE: mp_subscribe\nWEBHOOK: webhook\n"
         "SMS: sms\nMP_CARD: mp_card\nBANK_PUSH: bank_push")


class AlterDescription(ops.AlterField):
    """An AlterField whose only change is the description (see 0009): PostgreSQL gets its
    COMMENT ON COLUMN; SQLite, which would rebuild the table, gets the state change only."""

    async def database_forward(self, app_label: str, old_state: Any, new_state: Any,
                               state_editor: Any = None) -> None:
        if state_editor is not None and state_editor.DIALECT != "sqlite":
            await super().database_forward(app_label, old_state, new_state, state_editor)

    async def database_backward(self, app_label: str, old_state: Any, new_state: Any,
                                state_editor: Any = None) -> None:
        if state_editor is not None and state_editor.DIALECT != "sqlite":
            await super().database_backward(app_label, old_state, new_state, state_editor)


class Migration(migrations.Migration):
    dependencies = [('models', '0013_spoken_answers')]

    initial = False

    operations = [
        AlterDescription(
            model_name='ChannelInvitation',
            name='channel',
            field=fields.CharEnumField(description=CHANNELS, enum_type=ChannelKind,
                                       max_length=16),
        ),
        AlterDescription(
            model_name='OutboundMessage',
            name='kind',
            field=fields.CharEnumField(description=KINDS, enum_type=OutboxKind, max_length=20),
        ),
    ]
