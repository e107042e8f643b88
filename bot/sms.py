"""SMS behind one interface (issue 17 item 4): the invitation by text message.

`SmsSender` is what the outbox calls. Engines:

- `tencent`: Tencent Cloud SMS, API 3.0 `SendSms` and `PullSmsSendStatus` (the operators'
  delivery reports; version 2021-01-11) over HTTPS, signed with
  TC3-HMAC-SHA256 exactly as the provider documents it (canonical request, credential scope
  `<date>/sms/tc3_request`, HMAC chain from `"TC3" + SecretKey`). The message is an approved
  template (模板) with parameters, signed with the approved signature (签名). A link may not be
  a template variable (Tencent answers `InvalidParameterValue.ProhibitedUseUrlInTemplateParameter`):
  the approved invitation template writes `<public URL>/h5/invite/` and the variable after it
  carries the invitation token only (the parameters are the deadline and the token).
- `log`: dev and test without a provider: the message is written to
  `<data dir>/sms-outbox.jsonl` (phone masked, so the file holds no personal number) and the
  log, and counts as sent.
- `off`: SMS is not offered (the default in production until a provider is configured).

Phone numbers are personal data (R-52): the outbox keeps them encrypted, and nothing here logs
one unmasked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from security.masking import mask_phone

log = logging.getLogger(__name__)

SERVICE = "sms"
ACTION = "SendSms"
VERSION = "2021-01-11"
ALGORITHM = "TC3-HMAC-SHA256"
SIGNED_HEADERS = "content-type;host"
CONTENT_TYPE = "application/json; charset=utf-8"
# Per-number codes of SendStatusSet worth trying again later; anything else but "Ok" is final
# (wrong number, blacklisted, the template or signature not approved, ...).
TRANSIENT_CODES = frozenset({
    "LimitExceeded.PhoneNumberThirtySecondLimit", "LimitExceeded.PhoneNumberOneHourLimit",
    "InternalError.Timeout", "InternalError.RequestTimeException", "InternalError.OtherError",
    "FailedOperation.InsufficientBalanceInSmsPackage",
})
TRANSIENT_ERRORS = frozenset({"InternalError", "RequestLimitExceeded", "ResourceUnavailable",
                              "InternalError.Timeout", "InternalError.SendAndRecvFail"})


class SmsError(Exception):
    """The provider refused or failed; `transient` says whether a retry can help."""

    def __init__(self, code: str, message: str, *, transient: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.transient = transient


@dataclass(frozen=True)
class SmsMessage:
    """One text: the number (E.164 without "+" or a Chinese mobile), the provider template
    and its parameters, and the rendered text (what the customer reads)."""

    phone: str
    template_id: str
    params: tuple[str, ...]
    text: str
    # Given back with the delivery report (the outbox row it came from).
    context: str = ""


@dataclass(frozen=True)
class SmsReceipt:
    provider: str
    message_id: str


@dataclass(frozen=True)
class SmsReport:
    """The operator's delivery report of one text: `context` is what the sender passed as
    SmsMessage.context (the outbox row), `delivered` false when the phone never got it."""

    context: str
    serial: str
    delivered: bool
    description: str


@dataclass(frozen=True)
class AwaitedText:
    """A sent text still waiting for its report, as the outbox row holds it (the database, not
    a process's memory: any worker on any node can ask for it, after any restart). A provider
    that reports by pulling everything at once (Tencent) ignores it; one that is asked per
    text (Aliyun's QuerySendDetails) needs the number, its message id and the day it was sent."""

    context: str
    phone: str
    message_id: str
    sent_at: datetime


class SmsSender(Protocol):
    name: str

    async def send(self, message: SmsMessage) -> SmsReceipt: ...

    async def pull_reports(self, awaited: Sequence[AwaitedText] = (),
                           limit: int = 100) -> list[SmsReport]: ...


INVITE_PATH = "/h5/invite/"


def template_value(value: str) -> str:
    """A parameter as a template variable may carry it: an invitation link queued before the
    parameters became the token only is cut to its token (the template writes the start)."""
    if "://" in value and INVITE_PATH in value:
        return value.rsplit(INVITE_PATH, 1)[1]
    return value


def e164(phone: str) -> str:
    """13812345678 -> +8613812345678 (numbers already with a country code are kept)."""
    return phone if phone.startswith("+") else f"+86{phone}"


# -- Tencent Cloud API 3.0 signing (TC3-HMAC-SHA256) ----------------------------------------


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def tc3_signature(secret_key: str, host: str, payload: bytes, timestamp: int,
                  service: str = SERVICE) -> str:
    """The hex signature of a POST / with `payload`, content type and host signed."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    canonical = "\n".join([
        "POST", "/", "", f"content-type:{CONTENT_TYPE}\nhost:{host}\n", SIGNED_HEADERS,
        hashlib.sha256(payload).hexdigest(),
    ])
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join([ALGORITHM, str(timestamp), scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def tc3_headers(secret_id: str, secret_key: str, host: str, payload: bytes, timestamp: int,
                region: str, action: str = ACTION) -> dict[str, str]:
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    signature = tc3_signature(secret_key, host, payload, timestamp)
    return {
        "Authorization": (f"{ALGORITHM} Credential={secret_id}/{date}/{SERVICE}/tc3_request, "
                          f"SignedHeaders={SIGNED_HEADERS}, Signature={signature}"),
        "Content-Type": CONTENT_TYPE, "Host": host, "X-TC-Action": action,
        "X-TC-Timestamp": str(timestamp), "X-TC-Version": VERSION, "X-TC-Region": region,
    }


@dataclass
class TencentSmsSender:
    """Tencent Cloud SMS `SendSms`."""

    http: aiohttp.ClientSession
    endpoint: str
    secret_id: str
    secret_key: str
    sdk_app_id: str
    sign_name: str
    region: str = "ap-guangzhou"
    clock: Any = None
    name: str = "tencent"

    async def _call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """One signed API call; the `Response` object, or SmsError for `Response.Error`."""
        host = self.endpoint.split("://", 1)[-1].split("/", 1)[0]
        payload = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()
        now = self.clock() if self.clock else datetime.now(UTC)
        headers = tc3_headers(self.secret_id, self.secret_key, host, payload,
                              int(now.timestamp()), self.region, action)
        try:
            async with self.http.post(self.endpoint, data=payload, headers=headers) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SmsError("Transport", type(exc).__name__, transient=True) from exc
        try:
            body: dict[str, Any] = json.loads(raw)["Response"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SmsError("BadResponse", f"HTTP {status}", transient=True) from exc
        if "Error" in body:
            code = str(body["Error"].get("Code", "Unknown"))
            raise SmsError(code, str(body["Error"].get("Message", ""))[:120],
                           transient=code in TRANSIENT_ERRORS or code.startswith("InternalError"))
        return body

    async def send(self, message: SmsMessage) -> SmsReceipt:
        body = await self._call(ACTION, {
            "PhoneNumberSet": [e164(message.phone)], "SmsSdkAppId": self.sdk_app_id,
            "SignName": self.sign_name, "TemplateId": message.template_id,
            "TemplateParamSet": [template_value(p) for p in message.params],
            "SessionContext": message.context or secrets.token_hex(8),
        })
        statuses = body.get("SendStatusSet") or []
        if not statuses:
            raise SmsError("BadResponse", "no SendStatusSet", transient=True)
        first = statuses[0]
        code = str(first.get("Code", ""))
        if code != "Ok":
            raise SmsError(code, str(first.get("Message", ""))[:120],
                           transient=code in TRANSIENT_CODES)
        log.info("sms to %s sent (serial %s)", mask_phone(message.phone),
                 first.get("SerialNo", ""))
        return SmsReceipt(self.name, str(first.get("SerialNo", "")))

    async def pull_reports(self, awaited: Sequence[AwaitedText] = (),
                           limit: int = 100) -> list[SmsReport]:
        """`PullSmsSendStatus`: the delivery reports not pulled yet (each is given once)."""
        body = await self._call("PullSmsSendStatus", {"Limit": limit,
                                                      "SmsSdkAppId": self.sdk_app_id})
        return [SmsReport(str(r.get("SessionContext", "")), str(r.get("SerialNo", "")),
                          r.get("ReportStatus") == "SUCCESS", str(r.get("Description", ""))[:60])
                for r in body.get("PullSmsSendStatusSet") or []]


@dataclass
class LogSmsSender:
    """Dev/test: the text is recorded locally (phone masked) instead of sent."""

    path: Path
    name: str = "log"

    async def send(self, message: SmsMessage) -> SmsReceipt:
        message_id = "log-" + secrets.token_hex(8)
        record = {"id": message_id, "at": datetime.now(UTC).isoformat(),
                  "phone": mask_phone(message.phone), "template_id": message.template_id,
                  "text": message.text}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        # The text carries a single-use link: it goes to the file only, not to the log.
        log.info("sms (log engine) to %s recorded in %s", mask_phone(message.phone), self.path)
        return SmsReceipt(self.name, message_id)

    async def pull_reports(self, awaited: Sequence[AwaitedText] = (),
                           limit: int = 100) -> list[SmsReport]:
        return []  # nothing was really sent: no operator reports
