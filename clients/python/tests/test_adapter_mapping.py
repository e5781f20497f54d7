"""Unit tests for the adapters' pure mapping: tool call -> request body, decisions ->
LangGraph decisions, batch answers -> decisions (failing closed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from greenlight_client import Decision
from greenlight_client._tools import ToolCall, batch_decisions, decide, denial_message, tool_action
from greenlight_client.langgraph import resume_value

APPROVED = Decision(approved=True, reason="Approved in Slack", status="approved", id="a1")
DENIED = Decision(approved=False, reason="not today", status="denied", id="a2")


def test_tool_action_shows_name_and_indented_arguments():
    body = tool_action(ToolCall("delete_file", '{"path":"build/"}'), framework="X", timeout_secs=30)
    assert body == {
        "code": 'delete_file\n{\n  "path": "build/"\n}',
        "language": "json",
        "title": "X tool call: delete_file",
        "timeout_secs": 30,
    }
    assert tool_action(ToolCall("t", "not json"), framework="X", title="T")["code"] == "t\nnot json"


def test_denial_message_carries_the_reason():
    assert denial_message(DENIED) == "The tool call was not approved. Reason: not today"


def test_langgraph_batched_decisions_in_order():
    value = {
        "action_requests": [{"name": "a", "args": {}}, {"name": "b", "args": {}}],
        "review_configs": [
            {"action_name": "a", "allowed_decisions": ["approve", "reject"]},
            {"action_name": "b", "allowed_decisions": ["approve", "respond"]},
        ],
    }
    assert resume_value(value, [APPROVED, DENIED]) == {
        "decisions": [{"type": "approve"}, {"type": "respond", "message": "The tool call was not approved. Reason: not today"}]
    }
    # A missing decision rejects; an approval the tool does not allow rejects.
    only_reject = dict(value, review_configs=[{"action_name": "a", "allowed_decisions": ["reject"]}])
    got = resume_value(only_reject, [APPROVED])["decisions"]
    assert [d["type"] for d in got] == ["reject", "reject"]
    assert "fail closed" in got[0]["message"] and "no decision" in got[1]["message"]


def test_langgraph_unknown_interrupt_is_rejected():
    assert resume_value({"question": "?"}, [APPROVED])["type"] == "reject"


def test_batch_answers_fail_closed():
    pending = Decision(approved=False, reason="waiting", status="pending", id="p")
    got = batch_decisions(SimpleNamespace(approvals=[APPROVED, pending]), 2)
    assert got[0] is APPROVED and got[1].status == "error" and not got[1].approved
    assert all(not d.approved for d in batch_decisions(SimpleNamespace(approvals=[APPROVED]), 2))
    assert all(not d.approved for d in batch_decisions(SimpleNamespace(approvals=None), 1))


def test_decide_denies_every_call_when_the_client_raises():
    class Broken:
        async def request_approval(self, **kwargs):
            raise RuntimeError("boom")

    got = asyncio.run(decide(Broken(), [ToolCall("a"), ToolCall("b")], framework="X"))
    assert [d.approved for d in got] == [False, False] and "boom" in got[0].reason


def test_decide_uses_one_batch_for_several_calls():
    seen = []

    class Batching:
        async def request_batch(self, actions, *, wait, timeout_secs=None, callback_url=None):
            seen.append((len(actions), wait, timeout_secs))
            return SimpleNamespace(approvals=[APPROVED, DENIED][: len(actions)])

    got = asyncio.run(decide(Batching(), [ToolCall("a"), ToolCall("b")], framework="X", timeout_secs=9))
    assert got == [APPROVED, DENIED] and seen == [(2, True, 9)]


def test_callback_payloads_read_into_decisions():
    import pytest

    from greenlight_client.resume import decided_from_payload

    approval = {"id": "a1", "status": "denied", "approved": False, "reason": "nope"}
    one = decided_from_payload({"type": "approval.decided", "data": approval})
    assert (one.kind, one.id, [d.reason for d in one.decisions]) == ("approval", "a1", ["nope"])
    batch = decided_from_payload(
        {"type": "batch.decided", "data": {"id": "b1", "approvals": [dict(approval, status="approved", approved=True), {"id": "x", "status": "pending"}]}}
    )
    assert batch.id == "b1" and [d.approved for d in batch.decisions] == [True, False]
    assert batch.decisions[1].status == "error"  # an undecided item never approves
    for bad in ({"type": "other", "data": approval}, {"type": "batch.decided", "data": {"id": "b"}}, {"data": None}):
        with pytest.raises(ValueError):
            decided_from_payload(bad)
