"""Aliyun SMS (阿里云短信服务, Dysmsapi 2017-05-25) behind the `SmsSender` interface of
bot/sms.py (issue 17 item 4): selected with `SHUANGLU_SMS_ENGINE=aliyun`.

Wire format, as Aliyun documents its RPC-style APIs:

- `POST https://dysmsapi.aliyuncs.com/` with the parameters form-encoded in the body: the
  common ones (`AccessKeyId`, `Action`, `Format=JSON`, `RegionId`, `SignatureMethod=HMAC-SHA1`,
  `SignatureNonce` (a fresh UUID), `SignatureVersion=1.0`, `Timestamp` (UTC,
  `yyyy-MM-ddTHH:mm:ssZ`), `Version=2017-05-25`) and the action's own, plus `Signature`.
- Signature: the parameters but `Signature`, sorted by name, each name and value
  percent-encoded (RFC 3986: only `A-Z a-z 0-9 - _ . ~` left as they are, a space is `%20`,
  UTF-8 bytes as `%XY`), joined `name=value` with `&` (the canonicalized query string);
  `StringToSign = METHOD & percentEncode("/") & percentEncode(canonicalized)`;
  `Signature = Base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))`.
- `SendSms`: `PhoneNumbers`, `SignName`, `TemplateCode`, `TemplateParam` (a JSON object of the
  template's named variables, e.g. `${until}`, `${token}`) and `OutId` (given back with the
  delivery details). A link may not be a variable in a notification template (Aliyun answers
  `isv.PARAM_NOT_SUPPORT_URL`): the template writes `<public URL>/h5/invite/` and `${token}`
  after it, and the sender passes the link without that start. The answer is
  `{"Code": "OK", "BizId": ..., "RequestId": ...}` or another
  `Code` (`isv.*` refusals, `isp.SYSTEM_ERROR`, `isv.BUSINESS_LIMIT_CONTROL`; signature and
  throttling errors come with an HTTP 4xx).
- Delivery: `QuerySendDetails` (`PhoneNumber`, `BizId`, `SendDate` yyyyMMdd, `PageSize`,
  `CurrentPage`) answers `SmsSendDetailDTOs.SmsSendDetailDTO[]` with `SendStatus` 1 waiting,
  2 failed (`ErrCode`), 3 delivered. It needs the number, the BizId and the day: the
  report sweep (bot/sms_reports.py) reads them from the outbox rows still waiting (the number
  decrypted for the call only) and passes them in, so any worker on any node asks, after any
  restart (Aliyun's push receipts through MNS are not used).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.sms import AwaitedText, SmsError, SmsMessage, SmsReceipt, SmsReport
from security.masking import mask_phone

log = logging.getLogger(__name__)

VERSION = "2017-05-25"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
# Codes worth trying again later; any other Code but "OK" is final.
TRANSIENT_CODES = frozenset({
    "isp.SYSTEM_ERROR", "isp.RAM_PERMISSION_DENY_TIMEOUT", "isv.BUSINESS_LIMIT_CONTROL",
    "Throttling.User", "Throttling", "ServiceUnavailable", "InternalError",
    "SignatureNonceUsed",
})
# Aliyun dates SendSms in China Standard Time (QuerySendDetails' SendDate).
CHINA = timezone(timedelta(hours=8))


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Aliyun's signature wants it (space -> %20, "*" -> %2A, "~" kept)."""
    return quote(value, safe="-_.~")


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}"
                         for k, v in sorted(params.items()) if k != "Signature")
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical)}"


def rpc_signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    digest = hmac.new((secret + "&").encode(), string_to_sign(method, params).encode(),
                      hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class AliyunSmsSender:
    """Aliyun `SendSms` and `QuerySendDetails`."""

    http: aiohttp.ClientSession
    endpoint: str
    access_key_id: str
    access_key_secret: str
    sign_name: str
    # The template's variable names, in the order of SmsMessage.params.
    param_names: tuple[str, ...] = ("until", "token")
    region: str = "cn-hangzhou"
    # Operators refuse a whole link in a variable (isv.PARAM_NOT_SUPPORT_URL): the approved
    # template writes this fixed start of the invitation link, the variable carries the rest.
    link_prefix: str = ""
    clock: Callable[[], datetime] | None = None
    name: str = "aliyun"

    def _now(self) -> datetime:
        return self.clock() if self.clock else datetime.now(UTC)

    def signed(self, action: str, params: Mapping[str, str]) -> dict[str, str]:
        """The action's parameters with the common ones and the signature."""
        full = {
            "AccessKeyId": self.access_key_id, "Action": action, "Format": "JSON",
            "RegionId": self.region, "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": str(uuid.uuid4()), "SignatureVersion": "1.0",
            "Timestamp": self._now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": VERSION, **params,
        }
        full["Signature"] = rpc_signature(self.access_key_secret, "POST", full)
        return full

    async def _call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        body = "&".join(f"{percent_encode(k)}={percent_encode(v)}"
                        for k, v in self.signed(action, params).items())
        try:
            async with self.http.post(self.endpoint, data=body.encode(),
                                      headers={"Content-Type": FORM}) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SmsError("Transport", type(exc).__name__, transient=True) from exc
        try:
            answer: dict[str, Any] = json.loads(raw)
            code = str(answer["Code"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SmsError("BadResponse", f"HTTP {status}", transient=True) from exc
        if code != "OK":
            raise SmsError(code, str(answer.get("Message", ""))[:120],
                           transient=code in TRANSIENT_CODES or status >= 500)
        return answer

    async def send(self, message: SmsMessage) -> SmsReceipt:
        if len(message.params) != len(self.param_names):
            raise SmsError("isv.TEMPLATE_MISSING_PARAMETERS",
                           "parameters do not match SHUANGLU_SMS_TEMPLATE_PARAM_NAMES",
                           transient=False)
        values = [p.removeprefix(self.link_prefix) if self.link_prefix else p
                  for p in message.params]
        template = dict(zip(self.param_names, values, strict=True))
        phone = message.phone.removeprefix("+86")
        answer = await self._call("SendSms", {
            "PhoneNumbers": phone, "SignName": self.sign_name,
            "TemplateCode": message.template_id,
            "TemplateParam": json.dumps(template, ensure_ascii=False, separators=(",", ":")),
            "OutId": message.context,
        })
        biz_id = str(answer.get("BizId", ""))
        log.info("sms to %s sent (aliyun BizId %s)", mask_phone(phone), biz_id)
        return SmsReceipt(self.name, biz_id)

    async def pull_reports(self, awaited: Sequence[AwaitedText] = (),
                           limit: int = 100) -> list[SmsReport]:
        """`QuerySendDetails` for each text still waiting (the outbox rows the caller read:
        nothing is remembered here, so any worker can ask after any restart); a report is
        given once it is final, and the caller then stops awaiting that text."""
        reports: list[SmsReport] = []
        for item in list(awaited)[:limit]:
            answer = await self._call("QuerySendDetails", {
                "PhoneNumber": item.phone.removeprefix("+86"), "BizId": item.message_id,
                "SendDate": item.sent_at.astimezone(CHINA).strftime("%Y%m%d"),
                "PageSize": "10", "CurrentPage": "1"})
            details = (answer.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or []
            status = int(details[0].get("SendStatus", 1)) if details else 1
            if status == 1:
                continue  # the operator has not answered yet
            reports.append(SmsReport(item.context, item.message_id, status == 3,
                                     str(details[0].get("ErrCode", ""))[:60]))
        return reports
