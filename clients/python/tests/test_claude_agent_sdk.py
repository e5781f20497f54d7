"""``can_use_tool`` for the Claude Agent SDK, with the SDK's real result types
(``PermissionResultAllow`` / ``PermissionResultDeny``; the Claude CLI is never
started), against the real greenlight binary and a fake Slack."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from claude_agent_sdk import PermissionResultAllow, PermissionResultDeny, ToolPermissionContext

from greenlight_client.claude_agent_sdk import can_use_tool, to_permission_result
from greenlight_harness import API_TOKEN, FakeSlack, GreenlightServer, free_port

pytestmark = pytest.mark.e2e

READ_ONLY_POLICY = """
[[rule]]
name = "read-only tools"
action = "auto_approve"
tool = ["Read", "Grep", "Glob"]
"""


def context(tool_use_id: str = "toolu_01TEST") -> ToolPermissionContext:
    return ToolPermissionContext(tool_use_id=tool_use_id)


async def wait_for_message(slack: FakeSlack, task: asyncio.Task, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not slack.posted_approvals():
        if task.done():
            raise AssertionError(f"the callback answered before any Slack message: {task.result()!r}")
        if time.monotonic() > deadline:
            raise AssertionError("no Slack message with greenlight buttons")
        await asyncio.sleep(0.05)
    return slack.posted_approvals()[-1]


def test_an_approved_bash_call_is_a_permission_result_allow(greenlight: GreenlightServer, fake_slack: FakeSlack):
    callback = can_use_tool(greenlight.url, API_TOKEN, session_id="sess-1", cwd="/repo")

    async def main():
        task = asyncio.create_task(callback("Bash", {"command": "make deploy", "description": "Deploy"}, context()))
        approval_id, ts, channel = await wait_for_message(fake_slack, task)
        pending = await asyncio.to_thread(greenlight.approval, approval_id)
        assert pending["language"] == "bash" and pending["status"] == "pending"
        assert pending["title"] == "Claude Code wants to run a command"
        r = await asyncio.to_thread(greenlight.click, "greenlight_approve", approval_id, ts, channel)
        assert r.status_code == 200, r.text
        return await asyncio.wait_for(task, 30)

    result = asyncio.run(main())
    assert isinstance(result, PermissionResultAllow), result
    assert result.behavior == "allow" and result.updated_input is None


def test_a_denied_edit_is_a_permission_result_deny_with_the_reason(greenlight: GreenlightServer, fake_slack: FakeSlack):
    callback = can_use_tool(greenlight.url, API_TOKEN)
    reason = "keep the old rounding"

    async def main():
        edit = {"file_path": "/repo/a.py", "old_string": "x = 1\ny = 2\n", "new_string": "x = 1\ny = 3\n"}
        task = asyncio.create_task(callback("Edit", edit, context("toolu_01EDIT")))
        approval_id, ts, channel = await wait_for_message(fake_slack, task)
        pending = await asyncio.to_thread(greenlight.approval, approval_id)
        assert pending["language"] == "diff", pending
        r = await asyncio.to_thread(greenlight.click, "greenlight_deny", approval_id, ts, channel)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while not fake_slack.calls_to("views.open"):
            assert time.monotonic() < deadline, "the deny-reason modal never opened"
            await asyncio.sleep(0.05)
        view = fake_slack.calls_to("views.open")[-1]["body"]["view"]
        r = await asyncio.to_thread(greenlight.submit_deny_reason, approval_id, reason, view)
        assert r.status_code == 200, r.text
        return await asyncio.wait_for(task, 30)

    result = asyncio.run(main())
    assert isinstance(result, PermissionResultDeny), result
    assert result.message.startswith(f"greenlight: denied: {reason} (request "), result.message
    assert result.interrupt is False


def test_policy_auto_approves_read_only_tools_without_slack(server_factory, fake_slack: FakeSlack, tmp_path: Path):
    policy = tmp_path / "policy.toml"
    policy.write_text(READ_ONLY_POLICY)
    server = server_factory(extra_env={"GREENLIGHT_POLICY": str(policy)}).start()
    callback = can_use_tool(server.url, API_TOKEN)
    result = asyncio.run(callback("Grep", {"pattern": "TODO"}, context()))
    assert isinstance(result, PermissionResultAllow), result
    assert fake_slack.posted_approvals() == []


def test_when_nobody_decides_in_the_budget_it_is_a_deny(server_factory, fake_slack: FakeSlack):
    server = server_factory(extra_env={"GREENLIGHT_HOOK_BUDGET_SECS": "1"}).start()
    callback = can_use_tool(server.url, API_TOKEN, budget_secs=1)
    result = asyncio.run(callback("Write", {"file_path": "/r/x", "content": "hi\n"}, context()))
    assert isinstance(result, PermissionResultDeny), result
    assert "nobody decided in time" in result.message, result.message


def test_an_unreachable_service_or_a_bad_token_is_a_deny_never_an_exception(greenlight: GreenlightServer):
    url = f"http://127.0.0.1:{free_port()}"
    down = asyncio.run(can_use_tool(url, API_TOKEN)("Bash", {"command": "ls"}, context()))
    assert isinstance(down, PermissionResultDeny), down
    assert down.message.startswith(f"greenlight: service unreachable at {url}"), down.message
    assert down.message.endswith("denied (fail closed)")

    bad = asyncio.run(can_use_tool(greenlight.url, "wrong-token-0123456789")("Bash", {"command": "ls"}, context()))
    assert isinstance(bad, PermissionResultDeny), bad
    assert "bearer token was not accepted" in bad.message, bad.message


def test_answers_map_to_the_sdk_types():
    allow = {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow",
                                    "permissionDecisionReason": "ok"}}
    assert isinstance(to_permission_result(allow), PermissionResultAllow)
    stop = to_permission_result({"continue": False, "stopReason": "greenlight: broken"})
    assert isinstance(stop, PermissionResultDeny) and stop.interrupt is True
    for odd in [None, [], {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "ask"}}]:
        result = to_permission_result(odd)
        assert isinstance(result, PermissionResultDeny) and "fail closed" in result.message, odd
