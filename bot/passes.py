"""The channel worker's passes, in the order one run takes them (bot/runtime.run_once): session
events to agent notifications and bank webhooks (feed), invitation reminders, every due outbox
message, the SMS delivery reports. The composition root (app/factory.py) registers them with the
channels' runtime, which so imports none of these modules (no import cycle in bot/)."""

from __future__ import annotations

from bot import feed, outbox, reminders, sms_reports
from bot.runtime import ChannelPass, Channels


async def _sms_reports(channels: Channels) -> int:
    return await sms_reports.sweep(channels.sms, channels.redis, channels.now(),
                                   channels.config.sms.report_pull_seconds, channels.deps.cipher)


CHANNEL_PASSES: dict[str, ChannelPass] = {
    "events": feed.process,
    "reminders": reminders.sweep,
    "delivered": outbox.deliver_all,
    "sms_reports": _sms_reports,
}
