from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.channels import ChannelKind, DeliveryStatus, OutboxKind, OutboxStatus
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0003_scripts_orders_identity')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ChannelFeed',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('session', fields.OneToOneField('models.RecordingSession', source_field='session_id', db_constraint=True, to_field='id', related_name='channel_feed', on_delete=OnDelete.RESTRICT)),
                ('last_seq', fields.IntField(default=0)),
                ('bank_client', fields.CharField(null=True, max_length=64)),
                ('active', fields.BooleanField(default=True, db_index=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'channel_feed', 'app': 'models', 'pk_attr': 'id', 'table_description': 'The last session event the channels have acted on, for each session they follow.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ChannelInvitation',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('ref_hash', fields.CharField(unique=True, max_length=64)),
                ('ref_enc', fields.TextField(unique=False)),
                ('token_enc', fields.TextField(unique=False)),
                ('session', fields.ForeignKeyField('models.RecordingSession', source_field='session_id', db_constraint=True, to_field='id', related_name='channel_invitations', on_delete=OnDelete.RESTRICT)),
                ('invitation', fields.ForeignKeyField('models.Invitation', source_field='invitation_id', db_constraint=True, to_field='id', related_name='channel_invitations', on_delete=OnDelete.RESTRICT)),
                ('channel', fields.CharEnumField(description='WECHAT: wechat\nMINIPROGRAM: miniprogram\nBANK_APP: bank_app', enum_type=ChannelKind, max_length=16)),
                ('delivery', fields.CharField(default='link', max_length=16)),
                ('delivery_status', fields.CharEnumField(default=DeliveryStatus.PENDING, description='PENDING: pending\nWAITING_SCAN: waiting_scan\nSENT: sent\nDELIVERED: delivered\nFAILED: failed', enum_type=DeliveryStatus, max_length=16)),
                ('delivery_detail', fields.CharField(default='', max_length=200)),
                ('template_msgid', fields.BigIntField(null=True, db_index=True)),
                ('qr_scene', fields.CharField(null=True, unique=True, max_length=64)),
                ('qr_url', fields.CharField(default='', max_length=500)),
                ('bound_app_id', fields.CharField(null=True, max_length=32)),
                ('bound_openid', fields.CharField(null=True, db_index=True, max_length=64)),
                ('bound_unionid', fields.CharField(null=True, max_length=64)),
                ('bound_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('bank_client', fields.CharField(null=True, max_length=64)),
                ('bank_customer_ref', fields.CharField(null=True, max_length=128)),
                ('created_by', fields.ForeignKeyField('models.User', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name='channel_invitations', on_delete=OnDelete.RESTRICT)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('reminder_sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('opened_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('open_count', fields.IntField(default=0)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'channel_invitation', 'app': 'models', 'pk_attr': 'id', 'table_description': 'An invitation delivered through a channel and bound to the person it was meant for.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ConversationMessage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('app_id', fields.CharField(max_length=32)),
                ('openid', fields.CharField(db_index=True, max_length=64)),
                ('session', fields.ForeignKeyField('models.RecordingSession', source_field='session_id', null=True, db_constraint=True, to_field='id', related_name='conversation', on_delete=OnDelete.RESTRICT)),
                ('direction', fields.CharField(max_length=3)),
                ('via', fields.CharField(max_length=16)),
                ('msg_type', fields.CharField(max_length=40)),
                ('text', fields.TextField(default='', unique=False)),
                ('data', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('intent', fields.CharField(default='', max_length=32)),
                ('at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'conversation_message', 'app': 'models', 'pk_attr': 'id', 'table_description': 'One message of a chat with a customer, in or out, kept for QA replay (R-41).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OutboundMessage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('kind', fields.CharEnumField(description='WECHAT_TEMPLATE: wechat_template\nWECHAT_CUSTOM: wechat_custom\nWECHAT_SUBSCRIBE: wechat_subscribe\nMP_SUBSCRIBE: mp_subscribe\nWEBHOOK: webhook', enum_type=OutboxKind, max_length=20)),
                ('dedup_key', fields.CharField(unique=True, max_length=200)),
                ('session', fields.ForeignKeyField('models.RecordingSession', source_field='session_id', null=True, db_constraint=True, to_field='id', related_name='outbound_messages', on_delete=OnDelete.RESTRICT)),
                ('target', fields.CharField(max_length=200)),
                ('payload', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=OutboxStatus.PENDING, description='PENDING: pending\nSENDING: sending\nSENT: sent\nFAILED: failed\nGAVE_UP: gave_up', enum_type=OutboxStatus, max_length=10)),
                ('attempts', fields.IntField(default=0)),
                ('next_attempt_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.CharField(default='', max_length=300)),
                ('result', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('wechat_msgid', fields.BigIntField(null=True, db_index=True)),
                ('delivery_report', fields.CharField(default='', max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'outbound_message', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A message or webhook waiting to be delivered, retried with backoff until acknowledged.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SubscriptionGrant',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('app_id', fields.CharField(max_length=32)),
                ('openid', fields.CharField(max_length=64)),
                ('template_id', fields.CharField(max_length=64)),
                ('remaining', fields.IntField(default=0)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'subscription_grant', 'app': 'models', 'unique_together': (('app_id', 'openid', 'template_id'),), 'pk_attr': 'id', 'table_description': 'How many one-time subscribe messages a user has accepted for one template.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WechatUser',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('app_id', fields.CharField(max_length=32)),
                ('openid', fields.CharField(max_length=64)),
                ('unionid', fields.CharField(null=True, max_length=64)),
                ('subscribed', fields.BooleanField(default=False)),
                ('subscribed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('unsubscribed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('reminders_opt_out', fields.BooleanField(default=False)),
                ('staff_user', fields.ForeignKeyField('models.User', source_field='staff_user_id', null=True, db_constraint=True, to_field='id', related_name='wechat_accounts', on_delete=OnDelete.RESTRICT)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', null=True, db_constraint=True, to_field='id', related_name='wechat_accounts', on_delete=OnDelete.RESTRICT)),
                ('dialogue_state', fields.CharField(default='idle', max_length=20)),
                ('dialogue_expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_inbound_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'wechat_user', 'app': 'models', 'unique_together': (('app_id', 'openid'),), 'pk_attr': 'id', 'table_description': 'A WeChat user of the official account or the mini-program, by app and openid.'},
            bases=['Model'],
        ),
    ]
