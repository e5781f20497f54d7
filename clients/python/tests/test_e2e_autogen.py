"""End to end: real AutoGen CodeExecutorAgent + LocalCommandLineCodeExecutor,
the real greenlight binary, a fake Slack, and signed Slack clicks."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Optional

import pytest
from autogen_agentchat.agents import CodeExecutorAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import SystemMessage, UserMessage
from autogen_ext.code_executors.local import LocalCommandLineCodeExecutor

from greenlight_client import Client
from greenlight_client.autogen import slack_approval
from greenlight_harness import API_TOKEN, REVIEWER, FakeSlack, GreenlightServer, free_port

DENIED_PREFIX = "Code execution was not approved. Reason: "

MARKER_CODE = (
    "Please run this:\n"
    "```python\n"
    "open('marker.txt', 'w').write('ran')\n"
    "print('approved-and-ran')\n"
    "```\n"
)
TWO_LANGUAGES_CODE = MARKER_CODE + "and this:\n```sh\necho from-sh\n```\n"


async def run_agent(func, work_dir: Path, code_md: str = MARKER_CODE) -> str:
    work_dir.mkdir(parents=True, exist_ok=True)
    executor = LocalCommandLineCodeExecutor(work_dir=work_dir, timeout=30)
    await executor.start()
    try:
        context = UnboundedChatCompletionContext(
            initial_messages=[
                SystemMessage(content="You are a careful agent."),
                UserMessage(content="Write a marker file and say hello.", source="user"),
            ]
        )
        agent = CodeExecutorAgent("executor", code_executor=executor, approval_func=func, model_context=context)
        response = await agent.on_messages([TextMessage(content=code_md, source="user")], CancellationToken())
        return response.chat_message.content
    finally:
        await executor.stop()


async def wait_for_slack_message(slack: FakeSlack, task: asyncio.Task, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        posted = slack.posted_approvals()
        if posted:
            return posted[-1]
        if task.done():
            raise AssertionError(f"agent finished before any Slack message was posted: {task.result()!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no chat.postMessage with greenlight buttons in {timeout}s; calls: "
                                 f"{[c['method'] for c in slack.calls]}")
        await asyncio.sleep(0.05)


pytestmark = pytest.mark.e2e


def test_approved_code_actually_runs(greenlight: GreenlightServer, fake_slack: FakeSlack, tmp_path: Path):
    """Two fenced blocks (python + sh): the reviewer sees language "python, sh"; both run once approved."""
    work = tmp_path / "work"
    func = slack_approval(greenlight.url, API_TOKEN, timeout=60, submit_retry_secs=5)

    async def main():
        task = asyncio.create_task(run_agent(func, work, TWO_LANGUAGES_CODE))
        approval_id, ts, channel = await wait_for_slack_message(fake_slack, task)
        pending = await asyncio.to_thread(greenlight.approval, approval_id)
        assert pending["status"] == "pending" and pending["approved"] is False
        assert pending["language"] == "python, sh"
        assert pending["agent"] == "python-test"
        assert not task.done()
        r = await asyncio.to_thread(greenlight.click, "greenlight_approve", approval_id, ts, channel)
        assert r.status_code == 200, r.text
        return approval_id, await asyncio.wait_for(task, 30)

    approval_id, out = asyncio.run(main())
    assert "approved-and-ran" in out and "from-sh" in out, out
    assert (work / "marker.txt").read_text() == "ran"
    final = greenlight.approval(approval_id)
    assert final["status"] == "approved" and final["approved"] is True
    assert REVIEWER in (final["decided_by"] or "")
    assert [a[0] for a in fake_slack.posted_approvals()] == [approval_id]  # one request, one message


def test_denied_code_returns_the_reviewers_reason(greenlight: GreenlightServer, fake_slack: FakeSlack, tmp_path: Path):
    work = tmp_path / "work"
    func = slack_approval(greenlight.url, API_TOKEN, timeout=60, submit_retry_secs=5)
    reason = "Writes files in the repo; use a temp dir"

    async def main():
        task = asyncio.create_task(run_agent(func, work))
        approval_id, ts, channel = await wait_for_slack_message(fake_slack, task)
        r = await asyncio.to_thread(greenlight.click, "greenlight_deny", approval_id, ts, channel)
        assert r.status_code == 200, r.text
        # Either a reason modal opens (views.open) or the click denies at once (fallback).
        deadline = time.monotonic() + 5
        opened = None
        while time.monotonic() < deadline and not task.done():
            calls = fake_slack.calls_to("views.open")
            if calls:
                opened = calls[-1]
                break
            await asyncio.sleep(0.05)
        if opened is not None:
            body = opened["body"]
            assert body.get("trigger_id") == "1.2.abc", body
            view = body.get("view") or {}
            assert view.get("private_metadata") == approval_id, view
            r = await asyncio.to_thread(greenlight.submit_deny_reason, approval_id, reason, view)
            assert r.status_code == 200, r.text
            expected = reason
        else:
            expected = f"Denied in Slack by <@{REVIEWER}>"
        return expected, await asyncio.wait_for(task, 30)

    expected, out = asyncio.run(main())
    assert out == f"{DENIED_PREFIX}{expected}"
    assert not (work / "marker.txt").exists()


def test_unreachable_service_denies_instead_of_raising(tmp_path: Path):
    url = f"http://127.0.0.1:{free_port()}"
    func = slack_approval(url, API_TOKEN, timeout=60, submit_retry_secs=1)
    t0 = time.monotonic()
    out = asyncio.run(run_agent(func, tmp_path / "work"))
    assert time.monotonic() - t0 < 10
    assert out.startswith(DENIED_PREFIX + "greenlight: service unreachable at " + url), out
    assert "fail closed" in out
    assert not (tmp_path / "work" / "marker.txt").exists()


def test_bad_token_denies_instead_of_raising(greenlight: GreenlightServer, fake_slack: FakeSlack, tmp_path: Path):
    func = slack_approval(greenlight.url, "not-the-token", timeout=60)
    out = asyncio.run(run_agent(func, tmp_path / "work"))
    assert out.startswith(DENIED_PREFIX + "greenlight: the API token was rejected (HTTP 401 unauthorized"), out
    assert not (tmp_path / "work" / "marker.txt").exists()
    assert fake_slack.posted_approvals() == []


def test_restart_mid_wait_still_delivers_the_decision(server_factory, fake_slack: FakeSlack, tmp_path: Path):
    port = free_port()
    srv: GreenlightServer = server_factory(port=port).start()
    work = tmp_path / "work"
    func = slack_approval(srv.url, API_TOKEN, timeout=120, submit_retry_secs=5, max_backoff_secs=0.5)

    async def main():
        task = asyncio.create_task(run_agent(func, work))
        approval_id, ts, channel = await wait_for_slack_message(fake_slack, task)
        await asyncio.sleep(0.3)  # let the agent settle into its long-poll
        await asyncio.to_thread(srv.kill)  # SIGKILL: a crash, not a graceful shutdown
        await asyncio.sleep(0.7)  # the agent sees the dropped connection and refused reconnects
        assert not task.done(), task.result()
        await asyncio.to_thread(srv.start)
        assert srv.port == port
        still = await asyncio.to_thread(srv.approval, approval_id)
        assert still["status"] == "pending", still
        await asyncio.sleep(0.5)  # the agent re-attaches
        assert not task.done(), task.result()
        r = await asyncio.to_thread(srv.click, "greenlight_approve", approval_id, ts, channel)
        assert r.status_code == 200, r.text
        return approval_id, await asyncio.wait_for(task, 30)

    approval_id, out = asyncio.run(main())
    assert "approved-and-ran" in out, out
    assert (work / "marker.txt").read_text() == "ran"
    assert {a[0] for a in fake_slack.posted_approvals()} == {approval_id}


def test_plain_sync_client(greenlight: GreenlightServer, fake_slack: FakeSlack):
    clicked: dict = {}

    def reviewer():
        try:
            approval_id, ts, channel = fake_slack.wait_for_approval_message(timeout=15)
            clicked["response"] = greenlight.click("greenlight_approve", approval_id, ts, channel)
        except Exception as exc:  # surfaced by the asserts below
            clicked["error"] = exc

    t = threading.Thread(target=reviewer, daemon=True)
    t.start()
    decision = Client(greenlight.url, API_TOKEN, submit_retry_secs=5).request_approval(
        "terraform apply", language="sh", title="Apply infra", context=[{"role": "user", "content": "ship it"}],
        timeout_secs=60,
    )
    t.join(timeout=10)
    assert "error" not in clicked, clicked.get("error")
    assert decision.approved is True and decision.status == "approved", decision
    assert decision.id == fake_slack.posted_approvals()[0][0]
    assert REVIEWER in (decision.decided_by or "")
    info = greenlight.approval(decision.id)
    assert info["title"] == "Apply infra" and info["language"] == "sh"


def test_retried_submission_with_the_same_idempotency_key_is_one_request(greenlight: GreenlightServer,
                                                                         fake_slack: FakeSlack):
    """What the client's retry relies on: same key + same body -> same approval, one Slack message."""
    body = {"code": "echo hi", "language": "sh", "timeout_secs": 60}
    headers = {"Idempotency-Key": "python-client-retry-1"}
    first = greenlight.api("POST", "/v1/approvals", json=body, headers=dict(headers))
    second = greenlight.api("POST", "/v1/approvals", json=body, headers=dict(headers))
    assert first.status_code == 202 and second.status_code == 202, (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
