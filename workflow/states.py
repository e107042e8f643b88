"""The states of a session and which action may move it from where to where.

created → invited → opened → consented → identity_verified → in_call → disclosing → signing →
completed → sealed → qa_pending → qa_passed | qa_rejected, with the exits declined,
identity_failed, interrupted (resumable within a window), expired and aborted.

completed → evidence_incomplete when sealing finds a registered file missing, unreadable or not
what was written (R-31); the sweep retries it, and it is sealed once the file is back. Aborted
and expired sessions that recorded anything are sealed as incomplete and stay where they are.
"""

from __future__ import annotations

from models.sessions import SessionState as S

TERMINAL = frozenset({S.QA_PASSED, S.QA_REJECTED, S.DECLINED, S.IDENTITY_FAILED, S.EXPIRED,
                      S.ABORTED})
CALL_STATES = frozenset({S.IN_CALL, S.DISCLOSING, S.SIGNING})
PRE_CALL_STATES = frozenset({S.CREATED, S.INVITED, S.OPENED, S.CONSENTED, S.IDENTITY_VERIFIED})
ABORTABLE = PRE_CALL_STATES | CALL_STATES | {S.INTERRUPTED}
# States in which nothing has been agreed yet: a stale one expires.
STALE_CANDIDATES = frozenset({S.CREATED, S.INVITED, S.OPENED, S.CONSENTED, S.IDENTITY_VERIFIED})
# Ended before completion: sealed as incomplete when anything was recorded.
ENDED_EARLY = frozenset({S.ABORTED, S.EXPIRED})

# action -> (states it may start from, state it leads to; None when it depends on the outcome)
TRANSITIONS: dict[str, tuple[frozenset[S], S | None]] = {
    "invite": (frozenset({S.CREATED, S.INVITED, S.OPENED}), S.INVITED),
    "open": (frozenset({S.INVITED}), S.OPENED),
    "consent": (frozenset({S.OPENED}), None),  # consented or declined
    "identity": (frozenset({S.CONSENTED}), None),  # identity_verified, stays, identity_failed
    "start_call": (frozenset({S.IDENTITY_VERIFIED}), S.IN_CALL),
    "start_script": (frozenset({S.IN_CALL}), S.DISCLOSING),
    "acknowledge": (frozenset({S.DISCLOSING}), None),  # stays disclosing, or signing at the end
    "advance": (frozenset({S.DISCLOSING}), None),
    "resume_script": (frozenset({S.DISCLOSING}), S.DISCLOSING),
    "sign": (frozenset({S.SIGNING}), S.SIGNING),
    "complete": (frozenset({S.SIGNING}), S.COMPLETED),
    # sealed (then qa_pending), or evidence_incomplete when a file fails its check
    "seal": (frozenset({S.COMPLETED, S.EVIDENCE_INCOMPLETE}), None),
    "seal_incomplete": (ENDED_EARLY, None),  # the state stays: sealed as incomplete, or not
    "submit_qa": (frozenset({S.SEALED}), S.QA_PENDING),
    "review": (frozenset({S.QA_PENDING}), None),  # qa_passed or qa_rejected
    "interrupt": (CALL_STATES, S.INTERRUPTED),
    "resume_call": (frozenset({S.INTERRUPTED}), None),  # back to the state it left
    "abort": (ABORTABLE, S.ABORTED),
    "expire": (STALE_CANDIDATES | {S.INTERRUPTED}, S.EXPIRED),
    "record_media": (CALL_STATES | {S.INTERRUPTED}, None),
}

STATE_LABELS_ZH: dict[S, str] = {
    S.CREATED: "已创建",
    S.INVITED: "已邀请",
    S.OPENED: "客户已打开邀请",
    S.CONSENTED: "客户已同意录制",
    S.IDENTITY_VERIFIED: "身份已核验",
    S.IN_CALL: "通话中",
    S.DISCLOSING: "播报话术中",
    S.SIGNING: "签署中",
    S.COMPLETED: "已完成",
    S.SEALED: "已封存",
    S.QA_PENDING: "待质检",
    S.QA_PASSED: "质检通过",
    S.QA_REJECTED: "质检不通过",
    S.DECLINED: "客户拒绝录制",
    S.IDENTITY_FAILED: "身份核验失败",
    S.INTERRUPTED: "通话中断",
    S.EXPIRED: "已过期",
    S.ABORTED: "已终止",
    S.EVIDENCE_INCOMPLETE: "证据不完整",
}

ACTION_LABELS_ZH: dict[str, str] = {
    "invite": "发送邀请",
    "open": "打开邀请",
    "consent": "同意录制",
    "identity": "身份核验",
    "start_call": "开始通话",
    "start_script": "开始播报话术",
    "acknowledge": "确认话术",
    "advance": "进入下一步",
    "resume_script": "解释后继续",
    "sign": "签名",
    "complete": "完成录制",
    "seal": "封存",
    "seal_incomplete": "封存未完成的录制",
    "submit_qa": "提交质检",
    "review": "质检",
    "interrupt": "中断",
    "resume_call": "断点续录",
    "abort": "终止",
    "expire": "过期",
    "record_media": "保存录像",
}
