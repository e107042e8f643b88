"""A local stand-in for Aliyun SMS (dysmsapi.aliyuncs.com, RPC API version 2017-05-25, actions
SendSms and QuerySendDetails), speaking its request and response formats and error codes.

It verifies every request's RPC signature the way Aliyun documents it, computed here
independently of bot/sms_aliyun.py (the Java-style encoding the documentation gives:
form-encode, then "+" -> %20, "*" -> %2A, %7E -> "~"), over the parameters of the query string
and the form body together, with the request's method; it refuses an unknown AccessKeyId, a
stale Timestamp, a reused SignatureNonce, a wrong version or signature method. Switches make
the next sends fail with a Code (e.g. a blacklisted number) and the operator's answer wait or
fail. A link in a variable is refused (isv.PARAM_NOT_SUPPORT_URL): the template fixes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote_plus

from aiohttp import web
from aiohttp.test_utils import TestServer

PHONE = re.compile(r"^1[3-9][0-9]{9}$")
# Approved templates: TemplateCode -> text with named ${...} variables; the link's fixed start
# is written in the template ({public} is the platform's public URL, set on the fake).
TEMPLATES = {
    "SMS_465380001": ("您好，您的保险远程双录邀请已生成，请于${until}前打开链接完成："
                      "{public}/h5/invite/${token} 链接仅限本人使用，请勿转发。"),
}
URL_IN_VALUE = re.compile(r"://|www\.|\.(?:cn|com)/", re.IGNORECASE)
VARIABLE = re.compile(r"\$\{(\w+)\}")


def _encode(value: str) -> str:
    return quote_plus(value, encoding="utf-8").replace("+", "%20").replace(
        "*", "%2A").replace("%7E", "~")


@dataclass
class FakeAliyunSms:
    access_key_id: str
    access_key_secret: str
    sign_name: str = "远程双录"
    url: str = ""
    public_url: str = "https://shuanglu.example.cn"
    sent: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    # The next sends answer with these Codes (e.g. isv.BLACK_KEY_CONTROL_LIMIT).
    fail_codes: list[str] = field(default_factory=list)
    # The next `waiting` QuerySendDetails answer SendStatus 1 (no receipt yet); the next
    # `undelivered` sent texts are reported failed.
    waiting: int = 0
    undelivered: int = 0
    queries: int = 0
    _nonces: set[str] = field(default_factory=set)
    _biz: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _error(self, code: str, message: str, status: int = 200) -> web.Response:
        self.refused.append(code)
        return web.json_response({"RequestId": str(uuid.uuid4()), "HostId":
                                  "dysmsapi.aliyuncs.com", "Code": code, "Message": message},
                                 status=status)

    def _signature(self, method: str, params: dict[str, str]) -> str:
        canonical = "&".join(f"{_encode(k)}={_encode(params[k])}"
                             for k in sorted(params) if k != "Signature")
        to_sign = f"{method}&{_encode('/')}&{_encode(canonical)}"
        key = (self.access_key_secret + "&").encode("utf-8")
        return base64.b64encode(hmac.new(key, to_sign.encode("utf-8"), hashlib.sha1)
                                .digest()).decode()

    async def handle(self, request: web.Request) -> web.Response:
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        if request.method == "POST":
            params.update(parse_qsl((await request.read()).decode("utf-8"),
                                    keep_blank_values=True))
        if params.get("AccessKeyId") != self.access_key_id:
            return self._error("InvalidAccessKeyId.NotFound",
                               "Specified access key is not found.", 404)
        if params.get("SignatureMethod") != "HMAC-SHA1" \
                or params.get("SignatureVersion") != "1.0":
            return self._error("InvalidSignatureMethod", "signature method not supported", 400)
        if params.get("Version") != "2017-05-25":
            return self._error("InvalidVersion", "Specified parameter Version is not valid.",
                               400)
        try:
            stamp = datetime.strptime(params.get("Timestamp", ""), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return self._error("InvalidTimeStamp.Format", "Timestamp format is invalid", 400)
        if abs(stamp.replace(tzinfo=UTC) - datetime.now(UTC)) > timedelta(minutes=15):
            return self._error("InvalidTimeStamp.Expired",
                               "Specified time stamp or date value is expired.", 400)
        expected = self._signature(request.method, params)
        if not hmac.compare_digest(expected, params.get("Signature", "")):
            return self._error("SignatureDoesNotMatch",
                               "Specified signature is not matched with our calculation.", 400)
        nonce = params.get("SignatureNonce", "")
        if not nonce or nonce in self._nonces:
            return self._error("SignatureNonceUsed",
                               "Specified signature nonce was used already.", 400)
        self._nonces.add(nonce)
        action = params.get("Action")
        if action == "SendSms":
            return self._send(params)
        if action == "QuerySendDetails":
            return self._query(params)
        return self._error("InvalidAction.NotFound", "Specified api is not found", 404)

    def _send(self, params: dict[str, str]) -> web.Response:
        if params.get("SignName") != self.sign_name:
            return self._error("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        template = TEMPLATES.get(params.get("TemplateCode", ""))
        if template is None:
            return self._error("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        try:
            values = json.loads(params.get("TemplateParam") or "{}")
        except ValueError:
            return self._error("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        if not isinstance(values, dict) or set(VARIABLE.findall(template)) - set(values):
            return self._error("isv.TEMPLATE_MISSING_PARAMETERS", "模板变量缺少对应参数值")
        if any(URL_IN_VALUE.search(str(v)) for v in values.values()):
            return self._error("isv.PARAM_NOT_SUPPORT_URL", "不支持URL为变量")
        phone = params.get("PhoneNumbers", "")
        if not PHONE.match(phone):
            return self._error("isv.MOBILE_NUMBER_ILLEGAL", "手机号码格式错误")
        if self.fail_codes:
            return self._error(self.fail_codes.pop(0), "injected")
        biz_id = f"{next(self._biz):06d}^{uuid.uuid4().int % 10**10:010d}"
        text = VARIABLE.sub(lambda m: str(values[m.group(1)]),
                            template.replace("{public}", self.public_url))
        delivered = self.undelivered <= 0
        self.undelivered -= 0 if delivered else 1
        self.sent.append({
            "phone": phone, "text": f"【{self.sign_name}】{text}", "params": values,
            "biz_id": biz_id, "out_id": params.get("OutId", ""), "delivered": delivered,
            "send_date": datetime.now(timezone(timedelta(hours=8))).strftime("%Y%m%d"),
            "template": params["TemplateCode"]})
        return web.json_response({"Message": "OK", "RequestId": str(uuid.uuid4()),
                                  "Code": "OK", "BizId": biz_id})

    def _query(self, params: dict[str, str]) -> web.Response:
        self.queries += 1
        if not PHONE.match(params.get("PhoneNumber", "")):
            return self._error("isv.MOBILE_NUMBER_ILLEGAL", "手机号码格式错误")
        if not re.fullmatch(r"\d{8}", params.get("SendDate", "")):
            return self._error("isv.INVALID_PARAMETERS", "SendDate 格式错误")
        size = int(params.get("PageSize") or 0)
        if not 1 <= size <= 50:
            return self._error("isv.INVALID_PARAMETERS", "PageSize 取值 1~50")
        found = [s for s in self.sent if s["phone"] == params["PhoneNumber"]
                 and s["send_date"] == params["SendDate"]
                 and params.get("BizId", s["biz_id"]) == s["biz_id"]]
        waiting = self.waiting > 0
        self.waiting -= 1 if waiting else 0
        details = [{
            "ErrCode": "" if waiting else ("DELIVERED" if s["delivered"] else "MK:0005"),
            "TemplateCode": s["template"], "OutId": s["out_id"],
            "ReceiveDate": "" if waiting else "2026-12-05 10:00:05",
            "SendDate": "2026-12-05 10:00:00", "PhoneNum": s["phone"], "Content": s["text"],
            "SendStatus": 1 if waiting else (3 if s["delivered"] else 2),
        } for s in found[:size]]
        return web.json_response({"TotalCount": len(found), "Message": "OK",
                                  "RequestId": str(uuid.uuid4()), "Code": "OK",
                                  "SmsSendDetailDTOs": {"SmsSendDetailDTO": details}})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/", self.handle)
        return app


@asynccontextmanager
async def serving(access_key_id: str, access_key_secret: str
                  ) -> AsyncIterator[FakeAliyunSms]:
    """The fake on a local port, its `url` set, for as long as the block runs."""
    fake = FakeAliyunSms(access_key_id, access_key_secret)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("/"))
    try:
        yield fake
    finally:
        await server.close()
