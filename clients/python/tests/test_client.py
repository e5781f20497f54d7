"""Client protocol and fail-closed behaviour against scripted HTTP answers (no server)."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable, List

import httpx
import pytest
from autogen_agentchat.agents import ApprovalRequest, ApprovalResponse, CodeExecutorAgent
from autogen_ext.code_executors.local import LocalCommandLineCodeExecutor

from greenlight_client import AsyncClient, Client, Decision
from greenlight_client.autogen import slack_approval, slack_approval_sync
from greenlight_harness import free_port

FAST = dict(initial_backoff_secs=0.01, max_backoff_secs=0.05, submit_retry_secs=1.0, grace_secs=0.3)


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def approval(status="pending", approved=None, reason=None, decided_by=None, ttl=60.0, id="ap-1"):
    now = datetime.now(timezone.utc)
    return {
        "id": id,
        "status": status,
        "approved": (status == "approved") if approved is None else approved,
        "reason": reason if reason is not None else ("waiting for a reviewer" if status == "pending" else status),
        "decided_by": decided_by,
        "decided_at": None if status == "pending" else iso(now),
        "created_at": iso(now),
        "expires_at": iso(now + timedelta(seconds=ttl)),
        "agent": "python-test",
        "title": None,
        "language": None,
        "channel": "C1",
        "message_ts": "1.2",
    }


class Script:
    """A MockTransport whose answers are scripted per request; records requests."""

    def __init__(self, *answers: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: List[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def ok(obj, status=200):
    return lambda req: httpx.Response(status, json=obj)


def raw(body: bytes, status=200, ctype="application/json"):
    return lambda req: httpx.Response(status, content=body, headers={"Content-Type": ctype})


def err(code, message, status):
    return lambda req: httpx.Response(status, json={"error": {"code": code, "message": message}})


def boom(exc_type=httpx.ConnectError, msg="connection refused"):
    def answer(req):
        raise exc_type(msg, request=req)

    return answer


def run(kind: str, script: Script, **call) -> Decision:
    opts = dict(FAST, transport=script.transport)
    if kind == "sync":
        return Client("http://greenlight.test", "tok", **opts).request_approval(**call)
    return asyncio.run(AsyncClient("http://greenlight.test", "tok", **opts).request_approval(**call))


KINDS = pytest.mark.parametrize("kind", ["sync", "async"])


@KINDS
def test_submit_then_long_poll_until_approved(kind):
    script = Script(
        ok(approval(), 202),
        ok(approval()),
        ok(approval("approved", reason="Approved in Slack by <@U1>", decided_by="U1")),
    )
    d = run(kind, script, code="print(1)", language="python", title="t", context=[{"role": "user", "content": "x"}],
            timeout_secs=90)
    assert d == Decision(True, "Approved in Slack by <@U1>", "approved", "ap-1", "U1")
    post, *gets = script.requests
    assert post.method == "POST" and post.url.path == "/v1/approvals"
    assert post.headers["Authorization"] == "Bearer tok"
    assert uuid.UUID(post.headers["Idempotency-Key"]).version == 4
    assert json.loads(post.content) == {
        "code": "print(1)",
        "language": "python",
        "title": "t",
        "context": [{"role": "user", "content": "x"}],
        "timeout_secs": 90,
    }
    assert len(gets) == 2
    for g in gets:
        assert g.method == "GET" and g.url.path == "/v1/approvals/ap-1"
        assert 1 <= int(g.url.params["wait"]) <= 25


@KINDS
def test_decided_at_submission_needs_no_poll(kind):
    script = Script(ok(approval("denied", reason="rule: no rm -rf", decided_by="greenlight")))
    d = run(kind, script, code="rm -rf /")
    assert (d.approved, d.status, d.reason, d.decided_by) == (False, "denied", "rule: no rm -rf", "greenlight")
    assert len(script.requests) == 1


@KINDS
def test_dropped_submission_is_retried_with_the_same_idempotency_key(kind):
    script = Script(
        boom(httpx.RemoteProtocolError, "Server disconnected without sending a response."),
        err("internal", "db locked", 503),
        ok(approval("approved", decided_by="U1")),
    )
    d = run(kind, script, code="x")
    assert d.approved
    keys = {r.headers["Idempotency-Key"] for r in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1
    assert {r.content for r in script.requests} == {script.requests[0].content}


@KINDS
def test_wait_survives_connection_errors_and_5xx(kind):
    script = Script(
        ok(approval(), 202),
        boom(httpx.ReadError, "connection reset"),
        boom(httpx.ConnectError, "connection refused"),
        err("internal", "restarting", 502),
        lambda req: httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"code": "rate_limited"}}),
        ok(approval("denied", reason="not today", decided_by="U9")),
    )
    d = run(kind, script, code="x")
    assert (d.approved, d.status, d.reason, d.decided_by) == (False, "denied", "not today", "U9")
    assert [r.url.path for r in script.requests[1:]] == ["/v1/approvals/ap-1"] * 5
    assert len({r.headers.get("Idempotency-Key") for r in script.requests[:1]}) == 1


@KINDS
def test_bad_token_fails_closed(kind):
    script = Script(err("unauthorized", "missing or wrong bearer token", 401))
    d = run(kind, script, code="x")
    assert not d.approved and d.status == "error"
    assert "401" in d.reason and "unauthorized" in d.reason and "token" in d.reason
    assert len(script.requests) == 1


@KINDS
def test_malformed_answers_fail_closed(kind):
    d = run(kind, Script(raw(b"<html>oops</html>", 202, "text/html")), code="x")
    assert not d.approved and d.status == "error" and "malformed" in d.reason and "not JSON" in d.reason
    d = run(kind, Script(ok(approval(), 202), ok({"hello": "world"})), code="x")
    assert not d.approved and d.status == "error" and "malformed" in d.reason
    d = run(kind, Script(ok(approval(), 202), ok(approval("approved", id="someone-else"))), code="x")
    assert not d.approved and d.status == "error"
    d = run(kind, Script(ok(approval("approved", approved=False))), code="x")
    assert not d.approved and d.status == "error" and "inconsistent" in d.reason


@KINDS
def test_validation_error_is_reported(kind):
    d = run(kind, Script(err("invalid_request", "code: must not be empty", 422)), code="")
    assert not d.approved and "422" in d.reason and "code: must not be empty" in d.reason


@KINDS
def test_server_side_expiry_is_a_denial(kind):
    script = Script(ok(approval(), 202), ok(approval("expired", reason="no decision within 60s", decided_by="greenlight")))
    d = run(kind, script, code="x")
    assert (d.approved, d.status, d.reason) == (False, "expired", "no decision within 60s")


@KINDS
def test_gives_up_after_expires_at_plus_grace(kind):
    t0 = time.monotonic()
    script = Script(ok(approval(ttl=0.5), 202), boom(httpx.ConnectError, "connection refused"))
    d = run(kind, script, code="x")
    elapsed = time.monotonic() - t0
    assert not d.approved and d.status == "error" and d.id == "ap-1"
    assert "expired" in d.reason and "connection refused" in d.reason
    assert 0.5 <= elapsed < 5


@KINDS
def test_keeps_waiting_when_an_escalation_moves_the_deadline(kind):
    t0 = time.monotonic()

    def moved_then_approved(req):
        # Past the first deadline plus grace (0.6 s), the request is still pending:
        # an escalation moved its expires_at a minute later.
        if time.monotonic() - t0 < 1.2:
            return httpx.Response(200, json=approval(ttl=60))
        return httpx.Response(200, json=approval("approved", reason="Approved in Slack by <@U2>", decided_by="U2"))

    script = Script(ok(approval(ttl=0.3), 202), moved_then_approved)
    d = run(kind, script, code="x")
    assert (d.approved, d.status, d.decided_by) == (True, "approved", "U2"), d


@KINDS
def test_unreachable_service_denies_quickly(kind):
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    if kind == "sync":
        d = Client(url, "tok", submit_retry_secs=0.3, initial_backoff_secs=0.05).request_approval("x")
    else:
        d = asyncio.run(AsyncClient(url, "tok", submit_retry_secs=0.3, initial_backoff_secs=0.05).request_approval("x"))
    assert time.monotonic() - t0 < 5
    assert not d.approved and d.status == "error"
    assert "unreachable" in d.reason and url in d.reason


def test_autogen_functions_have_the_right_shape():
    script = Script(ok(approval("approved", reason="ok by U1", decided_by="U1")))
    afunc = slack_approval("http://greenlight.test", "tok", timeout=30, transport=script.transport, **FAST)
    sfunc = slack_approval_sync("http://greenlight.test", "tok", timeout=30, transport=script.transport, **FAST)
    assert inspect.iscoroutinefunction(afunc)
    assert callable(sfunc) and not inspect.iscoroutinefunction(sfunc)

    agent = CodeExecutorAgent("exec", LocalCommandLineCodeExecutor(), approval_func=afunc)
    assert agent._approval_func_is_async is True  # what AutoGen decides at construction
    agent_sync = CodeExecutorAgent("exec2", LocalCommandLineCodeExecutor(), approval_func=sfunc)
    assert agent_sync._approval_func_is_async is False

    req = ApprovalRequest(code="```python\nprint(1)\n```", context=[])
    a = asyncio.run(afunc(req))
    s = sfunc(req)
    for resp in (a, s):
        assert isinstance(resp, ApprovalResponse)
        assert resp.approved is True and resp.reason == "ok by U1"
    body = json.loads(script.requests[0].content)
    assert body == {"code": "print(1)", "language": "python", "title": "AutoGen code execution (python)",
                    "timeout_secs": 30}


def test_autogen_function_never_raises():
    func = slack_approval(f"http://127.0.0.1:{free_port()}", "tok", submit_retry_secs=0.1)
    for bad in (None, object(), {"code": None}, ApprovalRequest(code="```sh\nls\n```", context=[])):
        resp = asyncio.run(func(bad))
        assert isinstance(resp, ApprovalResponse) and resp.approved is False and resp.reason
    resp = slack_approval_sync("not a url at all", "tok", submit_retry_secs=0.1)({"code": "x", "context": []})
    assert isinstance(resp, ApprovalResponse) and resp.approved is False and "greenlight" in resp.reason

