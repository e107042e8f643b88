"""A local stand-in for Tencent Cloud SMS (sms.tencentcloudapi.com, API 3.0, actions SendSms and
PullSmsSendStatus, version 2021-01-11), speaking its request and response formats and error
codes.

It verifies every request's TC3-HMAC-SHA256 signature the way the provider does, computed here
independently of bot/sms.py from the request as received (the headers named in SignedHeaders,
the body's SHA-256, the credential scope's date and service), and refuses a stale timestamp,
an unknown SecretId, a wrong action or version. A link in a template parameter is refused
(`InvalidParameterValue.ProhibitedUseUrlInTemplateParameter`, as Tencent does): the approved
template writes the link's fixed start. Switches make the next sends fail with a per-number code
(e.g. a blacklisted number) or an API error (e.g. an internal timeout).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

AUTH = re.compile(r"^TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/([a-z]+)/tc3_request,"
                  r" SignedHeaders=([a-z0-9;\-]+), Signature=([0-9a-f]{64})$")
PHONE = re.compile(r"^\+861[3-9][0-9]{9}$")
# Approved templates: id -> text with {1}, {2} ... placeholders; the invitation link's fixed
# start is written in the template ({public} is the platform's public URL, set on the fake).
TEMPLATES = {
    "1000001": ("您好，您的保险远程双录邀请已生成，请于{1}前打开链接完成：{public}/h5/invite/{2} "
                "链接仅限本人使用，请勿转发。"),
}
PLACEHOLDER = re.compile(r"\{\d+\}")
URL_IN_VALUE = re.compile(r"://|www\.|\.(?:cn|com)/", re.IGNORECASE)


@dataclass
class FakeTencentSms:
    secret_id: str
    secret_key: str
    sdk_app_id: str
    sign_name: str = "远程双录"
    url: str = ""
    public_url: str = "https://shuanglu.example.cn"
    sent: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    # The next sends answer with these per-number codes (SendStatusSet) ...
    fail_numbers: list[str] = field(default_factory=list)
    # ... or these API errors (Response.Error).
    fail_api: list[str] = field(default_factory=list)
    # The operator's delivery reports waiting to be pulled (PullSmsSendStatus gives each once);
    # the next `undelivered` sent texts are reported as not delivered.
    reports: list[dict[str, Any]] = field(default_factory=list)
    undelivered: int = 0
    pulls: int = 0
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @staticmethod
    def _error(code: str, message: str) -> web.Response:
        # The API answers HTTP 200 with Response.Error for every refusal.
        return web.json_response({"Response": {"Error": {"Code": code, "Message": message},
                                               "RequestId": str(uuid.uuid4())}})

    def _signature(self, request: web.Request, body: bytes, date: str, service: str,
                   signed: str, timestamp: str) -> str:
        headers = "".join(f"{name}:{request.headers.get(name, '').strip().lower()}\n"
                          for name in signed.split(";"))
        canonical_request = (f"{request.method}\n{request.path}\n{request.query_string}\n"
                             f"{headers}\n{signed}\n{hashlib.sha256(body).hexdigest()}")
        string_to_sign = (f"TC3-HMAC-SHA256\n{timestamp}\n{date}/{service}/tc3_request\n"
                          + hashlib.sha256(canonical_request.encode()).hexdigest())

        def sign(key: bytes, msg: str) -> bytes:
            return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()

        k_date = sign(("TC3" + self.secret_key).encode("utf-8"), date)
        k_signing = sign(sign(k_date, service), "tc3_request")
        return hmac.new(k_signing, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        match = AUTH.match(request.headers.get("Authorization", ""))
        if match is None:
            self.refused.append("AuthFailure.InvalidAuthorization")
            return self._error("AuthFailure.InvalidAuthorization", "Authorization is invalid")
        secret_id, date, service, signed, signature = match.groups()
        if secret_id != self.secret_id:
            self.refused.append("AuthFailure.SecretIdNotFound")
            return self._error("AuthFailure.SecretIdNotFound", "The SecretId is not found")
        timestamp = request.headers.get("X-TC-Timestamp", "")
        if not timestamp.isdigit() or abs(int(timestamp) - time.time()) > 300:
            self.refused.append("AuthFailure.SignatureExpire")
            return self._error("AuthFailure.SignatureExpire", "Signature expired")
        if datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%d") != date \
                or service != "sms" or "host" not in signed.split(";") \
                or "content-type" not in signed.split(";"):
            self.refused.append("AuthFailure.SignatureFailure")
            return self._error("AuthFailure.SignatureFailure", "credential scope mismatch")
        expected = self._signature(request, body, date, service, signed, timestamp)
        if not hmac.compare_digest(expected, signature):
            self.refused.append("AuthFailure.SignatureFailure")
            return self._error("AuthFailure.SignatureFailure",
                               "The provided credentials could not be validated.")
        action = request.headers.get("X-TC-Action")
        if action not in ("SendSms", "PullSmsSendStatus"):
            return self._error("InvalidAction", "action not found")
        if request.headers.get("X-TC-Version") != "2021-01-11":
            return self._error("NoSuchVersion", "version not found")
        try:
            params = json.loads(body)
        except ValueError:
            return self._error("InvalidParameter", "body is not JSON")
        if params.get("SmsSdkAppId") != self.sdk_app_id:
            return self._error("FailedOperation.SmsSdkAppIdVerifyFail", "SdkAppId verify fail")
        if action == "PullSmsSendStatus":
            self.pulls += 1
            limit = int(params.get("Limit") or 0)
            if not 0 < limit <= 100:
                return self._error("InvalidParameterValue", "Limit must be 1..100")
            given, self.reports = self.reports[:limit], self.reports[limit:]
            return web.json_response({"Response": {"PullSmsSendStatusSet": given,
                                                   "RequestId": str(uuid.uuid4())}})
        if params.get("SignName") != self.sign_name:
            return self._error("FailedOperation.SignatureIncorrectOrUnapproved",
                               "signature incorrect or unapproved")
        template = TEMPLATES.get(str(params.get("TemplateId")))
        if template is None:
            return self._error("FailedOperation.TemplateIncorrectOrUnapproved",
                               "template incorrect or unapproved")
        values = params.get("TemplateParamSet") or []
        if len(values) != len(PLACEHOLDER.findall(template)):
            return self._error("InvalidParameterValue.TemplateParameterFormatError",
                               "template parameters do not match the template")
        if any(URL_IN_VALUE.search(str(v)) for v in values):
            self.refused.append("InvalidParameterValue.ProhibitedUseUrlInTemplateParameter")
            return self._error("InvalidParameterValue.ProhibitedUseUrlInTemplateParameter",
                               "禁止在模板变量中使用 URL。")
        if self.fail_api:
            code = self.fail_api.pop(0)
            return self._error(code, "injected")
        statuses = []
        for number in params.get("PhoneNumberSet") or []:
            serial = f"2433:{next(self._serial):012d}"
            code, message = "Ok", "send success"
            if not PHONE.match(str(number)):
                code, message = "InvalidParameterValue.IncorrectPhoneNumber", "incorrect number"
            elif self.fail_numbers:
                code, message = self.fail_numbers.pop(0), "injected"
            if code == "Ok":
                text = template.replace("{public}", self.public_url)
                for i, value in enumerate(values, start=1):
                    text = text.replace(f"{{{i}}}", str(value))
                self.sent.append({"phone": number, "text": f"【{self.sign_name}】{text}",
                                  "params": values, "serial": serial,
                                  "context": params.get("SessionContext", "")})
                delivered = self.undelivered <= 0
                self.undelivered -= 0 if delivered else 1
                self.reports.append({
                    "UserReceiveTime": int(time.time()), "CountryCode": "86",
                    "SubscriberNumber": number.removeprefix("+86"), "PhoneNumber": number,
                    "SerialNo": serial, "ReportStatus": "SUCCESS" if delivered else "FAIL",
                    "Description": "DELIVRD" if delivered else "MK:0005",
                    "SessionContext": params.get("SessionContext", "")})
            statuses.append({"SerialNo": serial if code == "Ok" else "", "PhoneNumber": number,
                             "Fee": 1 if code == "Ok" else 0,
                             "SessionContext": params.get("SessionContext", ""),
                             "Code": code, "Message": message, "IsoCode": "CN"})
        return web.json_response({"Response": {"SendStatusSet": statuses,
                                                "RequestId": str(uuid.uuid4())}})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self.handle)
        return app


@asynccontextmanager
async def serving(secret_id: str, secret_key: str, sdk_app_id: str
                  ) -> AsyncIterator[FakeTencentSms]:
    """The fake on a local port, its `url` set, for as long as the block runs."""
    fake = FakeTencentSms(secret_id, secret_key, sdk_app_id)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("/"))
    try:
        yield fake
    finally:
        await server.close()
