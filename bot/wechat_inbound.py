"""The edge of the WeChat message endpoint: URL verification, signature and timestamp checks,
safe XML (no DTD, so no external entities and no entity expansion), plain and AES safe mode
(消息加解密), parsing into wechatpy's typed messages, and encoding passive replies.

Everything behind this module receives typed message objects, never XML.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.messages import BaseMessage
from wechatpy.replies import TextReply
from wechatpy.utils import WeChatSigner

from bot.settings import MessageMode


class InboundRejected(Exception):
    """The request is not a valid WeChat message; `status`/`code` say why (never a 500)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.detail = detail


def _signature(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def check_xml_safe(raw: bytes | str) -> Element:
    """Refuses any DTD (so no entities at all: no XXE, no billion laughs) and malformed XML;
    returns the parsed `<xml>` root.

    WeChat never sends a DTD; refusing one outright is simpler and safer than expanding it.
    """
    try:
        root = safe_fromstring(raw, forbid_dtd=True, forbid_entities=True,
                               forbid_external=True)
    except DefusedXmlException as exc:
        raise InboundRejected(400, "xml_forbidden_construct", "消息格式不被接受") from exc
    except (ParseError, ValueError, TypeError) as exc:
        raise InboundRejected(400, "xml_malformed", "消息格式有误") from exc
    if root.tag != "xml":
        raise InboundRejected(400, "xml_malformed", "消息格式有误")
    return root


@dataclass(frozen=True)
class Inbound:
    """One decoded message and how it came (AES or plain), for the reply to match."""

    message: BaseMessage
    encrypted: bool
    xml: str


class MessageCodec:
    """Signatures, decryption and replies for one official account."""

    def __init__(self, token: str, encoding_aes_key: str, app_id: str, mode: MessageMode,
                 timestamp_tolerance: int) -> None:
        self.token = token
        self.app_id = app_id
        self.mode = mode
        self.tolerance = timestamp_tolerance
        self.crypto = WeChatCrypto(token, encoding_aes_key, app_id)

    def _check_signature(self, query: dict[str, str]) -> None:
        signature = query.get("signature", "")
        timestamp = query.get("timestamp", "")
        nonce = query.get("nonce", "")
        if not (signature and timestamp and nonce) or len(signature) != 40:
            raise InboundRejected(403, "signature_invalid", "签名校验失败")
        expected = _signature(self.token, timestamp, nonce)
        if not hmac.compare_digest(expected, signature):
            raise InboundRejected(403, "signature_invalid", "签名校验失败")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > self.tolerance:
            raise InboundRejected(403, "timestamp_out_of_window", "请求已过期")

    def verify_url(self, query: dict[str, str]) -> str:
        """The GET that WeChat sends when the server URL is configured: echo `echostr`."""
        self._check_signature(query)
        echostr = query.get("echostr", "")
        if not echostr or len(echostr) > 200:
            raise InboundRejected(400, "echostr_missing", "缺少 echostr")
        return echostr

    def decode(self, query: dict[str, str], body: bytes) -> Inbound:
        self._check_signature(query)
        outer = check_xml_safe(body)
        encrypted = query.get("encrypt_type", "raw").lower() == "aes"
        if encrypted:
            if self.mode == "plain":
                raise InboundRejected(400, "encryption_not_enabled", "未启用消息加密")
            # The envelope is handed over parsed (wechatpy would parse it again, issue 14);
            # no <Encrypt> is a KeyError there, as with wechatpy's own parse.
            encrypt = outer.findtext("Encrypt")
            envelope = {} if encrypt is None else {"Encrypt": encrypt.strip()}
            try:
                xml = str(self.crypto.decrypt_message(
                    envelope, query.get("msg_signature", ""), query.get("timestamp", ""),
                    query.get("nonce", ""),
                ))
            except InvalidSignatureException as exc:
                raise InboundRejected(403, "msg_signature_invalid", "消息签名校验失败") from exc
            except InvalidAppIdException as exc:
                raise InboundRejected(403, "app_id_mismatch", "消息不属于本公众号") from exc
            except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
                raise InboundRejected(400, "decrypt_failed", "消息解密失败") from exc
            check_xml_safe(xml)
        else:
            if self.mode == "safe":
                raise InboundRejected(403, "encryption_required", "本公众号要求加密消息")
            xml = body.decode("utf-8", errors="strict")
        try:
            message = parse_message(xml)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise InboundRejected(400, "message_malformed", "消息内容有误") from exc
        if message is None or not getattr(message, "source", None):
            raise InboundRejected(400, "message_malformed", "消息内容有误")
        return Inbound(message, encrypted, xml)

    def reply_text(self, message: BaseMessage, text: str) -> str:
        """A passive text reply (被动回复), as plain XML."""
        reply = TextReply(source=message.target, target=message.source, content=text)
        return str(reply.render())

    def encode(self, reply_xml: str, encrypted: bool) -> str:
        """What goes back to WeChat: "success" for no reply, else the (encrypted) XML."""
        if not reply_xml:
            return "success"
        if not encrypted:
            return reply_xml
        return str(self.crypto.encrypt_message(reply_xml, secrets.token_hex(8),
                                               str(int(time.time()))))


def dedup_key(message: BaseMessage) -> str:
    """WeChat retries a message up to three times: messages by MsgId, events by
    FromUserName + CreateTime + Event (+ EventKey)."""
    data: dict[str, Any] = message._data
    msg_id = data.get("MsgId")
    if msg_id:
        return f"msg:{msg_id}"
    return "evt:{}:{}:{}:{}".format(
        data.get("FromUserName", ""), data.get("CreateTime", ""),
        str(data.get("Event", "")).lower(), str(data.get("EventKey", ""))[:64],
    )
