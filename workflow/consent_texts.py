"""The consent texts the customer agrees to (R-10) and the opening prompt (R-11).

Each text has a version; the hash of the exact text is stored with the answer, so it is always
known what the customer saw. Changing a text means a new version here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from models.sessions import ConsentKind


@dataclass(frozen=True)
class ConsentText:
    kind: ConsentKind
    version: str
    title: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


RECORDING_CONSENT = ConsentText(
    ConsentKind.RECORDING,
    "2026-11-v1",
    "远程同步录音录像告知及同意书",
    "为保障您的合法权益，依据监管要求，本次保险销售过程将通过视频连线进行同步录音录像"
    "（远程双录）。录音录像将完整记录销售过程中的关键环节，仅用于销售行为回溯、质量检查及"
    "纠纷处理，并依法保存。您可以拒绝远程双录，拒绝后本次投保不能通过远程方式继续办理，"
    "您可以前往营业网点办理。点击“同意”即表示您同意对本次销售过程进行远程录音录像。",
)

PERSONAL_INFORMATION_CONSENT = ConsentText(
    ConsentKind.PERSONAL_INFORMATION,
    "2026-11-v1",
    "个人信息处理授权书",
    "为核验您的身份并完成远程双录，我们需要处理您的以下个人信息：姓名、身份证件信息"
    "（含证件照片）、人脸图像及视频、声音、签名笔迹、联系方式及设备网络信息。其中身份证件"
    "信息和人脸信息属于敏感个人信息。上述信息仅用于身份核验、录音录像及其保存和质量检查，"
    "采取加密等安全措施保护，按法律法规要求的期限保存，不会用于其他目的或向无关第三方提供。"
    "点击“同意”即表示您单独同意我们按上述方式处理您的个人信息。",
)

CONSENT_TEXTS: dict[ConsentKind, ConsentText] = {
    RECORDING_CONSENT.kind: RECORDING_CONSENT,
    PERSONAL_INFORMATION_CONSENT.kind: PERSONAL_INFORMATION_CONSENT,
}

OPENING_PROMPT = (
    "您好，本次录音录像是为了保护您的合法权益。请您如实回答每一个问题。"
    "如销售人员向您作出与保险合同及相关文件不一致的承诺，请要求其以书面形式作出。"
)

RISK_SENTENCE = "本人已阅读保险条款、产品说明书和投保提示书，了解本产品的特点和保单利益的不确定性"
