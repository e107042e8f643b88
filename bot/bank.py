"""The bank app's side of an invitation: signed deep links that open the H5 flow in the bank
app's webview for the bank's own customer, and the status the bank's backend reads or is sent
(R-43: recording complete? QA complete?)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from bot.runtime import Channels
from bot.settings import BankClient
from models.sessions import RecordingSession, SessionEvent, SessionState
from security.partner_signing import sign_link
from workflow.states import STATE_LABELS_ZH

RECORDED = frozenset({SessionState.COMPLETED, SessionState.SEALED, SessionState.QA_PENDING,
                      SessionState.QA_PASSED, SessionState.QA_REJECTED})
INSPECTED = frozenset({SessionState.QA_PASSED, SessionState.QA_REJECTED})


def deep_link(channels: Channels, client: BankClient, ref: str, customer_ref: str,
              expires_at: datetime) -> dict[str, str]:
    """A single-use link for the bank app's webview, signed so it cannot be altered; it names
    the bank customer it is for, and the app opens it only for that logged-in customer."""
    exp = str(int(expires_at.timestamp()))
    nonce = secrets.token_hex(12)
    sig = sign_link(channels.config.deep_link_key, ref, customer_ref, exp, nonce)
    h5 = (f"{channels.config.public_url}/h5/bank/{ref}?"
          + urlencode({"cu": customer_ref, "exp": exp, "n": nonce, "sig": sig}))
    return {"deep_link": f"{client.deep_link_base}?{urlencode({'url': h5})}", "h5_url": h5,
            "expires_at": expires_at.isoformat()}


def status_view(application_no: str, session: RecordingSession) -> dict[str, Any]:
    return {
        "application_no": application_no, "session_id": str(session.id),
        "state": session.state.value, "state_label": STATE_LABELS_ZH[session.state],
        "recording_complete": session.state in RECORDED,
        "qa_complete": session.state in INSPECTED,
        "qa_passed": session.state == SessionState.QA_PASSED,
        "end_reason": session.end_reason,
        "updated_at": session.updated_at.isoformat() if session.updated_at else None,
    }


def webhook_body(application_no: str, session: RecordingSession,
                 event: SessionEvent) -> dict[str, Any]:
    state = SessionState(event.to_state)
    return {
        "type": "session.state_changed", "application_no": application_no,
        "session_id": str(session.id), "seq": event.seq, "event": event.type,
        "state": state.value, "state_label": STATE_LABELS_ZH[state],
        "at": event.at.isoformat(),
        "recording_complete": state in RECORDED, "qa_complete": state in INSPECTED,
        "qa_passed": state == SessionState.QA_PASSED,
    }
