"""A reviewer in the fake Slack: waits for greenlight's card and clicks Approve, or
Deny and types a reason in the modal, with signed Slack interactions.

Used by the framework adapter tests, which run the framework on the event loop and
the reviewer in a thread (``Reviewer.start``) or inline (``decide``).
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional

from greenlight_harness import FakeSlack, GreenlightServer, wait_until


def decide(
    greenlight: GreenlightServer,
    slack: FakeSlack,
    *,
    approve: bool,
    reason: str = "",
    index: int = 0,
    timeout: float = 20.0,
) -> str:
    """Decides the ``index``-th request greenlight posted (a card, or an item of a batch
    card); returns its approval id.

    Approve: one click. Deny: a click, then the reason modal (``views.open``) is
    submitted with ``reason``.
    """
    approval_id = wait_until(
        lambda: (approve_buttons(slack)[index] if len(approve_buttons(slack)) > index else None),
        timeout,
        what=f"approve button #{index} in greenlight's cards",
    )
    wait_until(lambda: greenlight.approval(approval_id)["status"] == "pending", 5, what="the request pending")
    decide_item(greenlight, slack, approval_id, approve=approve, reason=reason)
    return approval_id


def approve_buttons(slack: FakeSlack) -> List[str]:
    """The request ids of every Approve button greenlight posted, in order: one per
    card, or one per item of a batch card."""
    from greenlight_harness import _walk

    ids: List[str] = []
    for call in slack.calls_to("chat.postMessage"):
        for el in _walk(call["body"]):
            if el.get("action_id") == "greenlight_approve" and el.get("value") and el["value"] not in ids:
                ids.append(el["value"])
    return ids


def _message_with_button(slack: FakeSlack, approval_id: str):
    """(ts, channel) of the newest chat.postMessage with a button whose value is ``approval_id``."""
    from greenlight_harness import _walk

    for call in reversed(slack.calls_to("chat.postMessage")):
        if any(el.get("value") == approval_id and el.get("action_id") for el in _walk(call["body"])):
            answer = call.get("answer") or {}
            return answer.get("ts", ""), answer.get("channel", "")
    return None


def decide_item(
    greenlight: GreenlightServer, slack: FakeSlack, approval_id: str, *, approve: bool, reason: str = ""
) -> None:
    """Decides one request by id, clicking its own button wherever it is (its own card
    or a batch card listing several requests)."""
    ts, channel = wait_until(lambda: _message_with_button(slack, approval_id), 20, what=f"a card for {approval_id}")
    action = "greenlight_approve" if approve else "greenlight_deny"
    r = greenlight.click(action, approval_id, ts, channel)
    assert r.status_code == 200, r.text
    if approve:
        return

    def modal() -> Optional[Dict[str, Any]]:
        for call in slack.calls_to("views.open"):
            view = call["body"].get("view") or {}
            if view.get("private_metadata") == approval_id:
                return view
        return None

    view = wait_until(modal, 10, what=f"the deny-reason modal for {approval_id}")
    r = greenlight.submit_deny_reason(approval_id, reason, view)
    assert r.status_code == 200, r.text


class Reviewer:
    """Decides cards in a background thread, in order: ``plan`` is a list of
    ``(approve, reason)``; ``ids`` gets the approval ids, ``error`` any failure."""

    def __init__(self, greenlight: GreenlightServer, slack: FakeSlack, plan: List[Any], first_index: int = 0) -> None:
        self.greenlight, self.slack, self.plan, self.first_index = greenlight, slack, plan, first_index
        self.ids: List[str] = []
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for i, (approve, reason) in enumerate(self.plan):
                self.ids.append(
                    decide(self.greenlight, self.slack, approve=approve, reason=reason, index=self.first_index + i)
                )
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def start(self) -> "Reviewer":
        self._thread.start()
        return self

    def join(self, timeout: float = 30.0) -> List[str]:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        assert not self._thread.is_alive(), "reviewer still waiting"
        return self.ids


def card_text(slack: FakeSlack, approval_id: str) -> str:
    """Everything in the chat.postMessage that carries ``approval_id``'s buttons, as
    JSON text (what the reviewer reads: title, code, context)."""
    import json

    for call in slack.calls_to("chat.postMessage"):
        text = json.dumps(call["body"], ensure_ascii=False)
        if approval_id in text:
            return text
    raise AssertionError(f"no card posted for {approval_id}")
