"""The channels' API modules, in the order they are added to the app's router."""

from __future__ import annotations

from api.registry import Api
from bot import routes_bank, routes_miniprogram, routes_staff, routes_wechat

CHANNEL_APIS: tuple[Api, ...] = (
    routes_wechat.api, routes_staff.api, routes_miniprogram.api, routes_bank.api,
)
