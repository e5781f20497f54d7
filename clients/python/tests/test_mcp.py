"""``greenlight mcp`` driven by the official MCP Python client (``mcp``) over stdio,
against the real greenlight binary and a fake Slack."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, Dict

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from greenlight_harness import API_TOKEN, REVIEWER, FakeSlack, GreenlightServer, free_port

pytestmark = pytest.mark.e2e


def params(binary: str, url: str, token: str = API_TOKEN) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENLIGHT_", "SLACK_"))}
    env.update({"GREENLIGHT_URL": url, "GREENLIGHT_API_TOKEN": token, "NO_PROXY": "127.0.0.1,localhost"})
    return StdioServerParameters(command=binary, args=["mcp", "--retry-secs", "1"], env=env)


def field(obj: Any, snake: str, camel: str) -> Any:
    """mcp 2.x names fields in snake_case, 1.x in camelCase: read either."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def result_of(call: Any) -> Dict[str, Any]:
    """The structured result, checked against the JSON text content."""
    structured = field(call, "structured_content", "structuredContent")
    assert structured is not None, call
    text = json.loads(call.content[0].text)
    assert text == structured, (text, structured)
    assert field(call, "is_error", "isError") is not True, call
    return structured


async def session_call(p: StdioServerParameters, arguments: Dict[str, Any], on_started=None) -> Dict[str, Any]:
    async with stdio_client(p) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            tool = next(t for t in tools.tools if t.name == "request_approval")
            inputs = field(tool, "input_schema", "inputSchema")
            outputs = field(tool, "output_schema", "outputSchema")
            assert "code" in inputs["properties"] and "code" in inputs["required"], inputs
            assert set(outputs["properties"]) >= {"approved", "reason", "status", "request_id"}, outputs
            call = asyncio.create_task(session.call_tool("request_approval", arguments))
            if on_started is not None:
                await on_started(call)
            return result_of(await asyncio.wait_for(call, 60))


def test_request_approval_waits_for_slack_and_answers_approved(
    greenlight: GreenlightServer, fake_slack: FakeSlack, greenlight_bin: str
):
    async def approve(call: asyncio.Task) -> None:
        deadline = time.monotonic() + 15
        while not fake_slack.posted_approvals():
            assert not call.done(), call
            assert time.monotonic() < deadline, "no Slack message"
            await asyncio.sleep(0.05)
        approval_id, ts, channel = fake_slack.posted_approvals()[-1]
        pending = await asyncio.to_thread(greenlight.approval, approval_id)
        assert pending["language"] == "sql" and pending["title"] == "Drop the staging table"
        r = await asyncio.to_thread(greenlight.click, "greenlight_approve", approval_id, ts, channel)
        assert r.status_code == 200, r.text

    arguments = {"action": "DROP TABLE staging_orders;", "language": "sql", "title": "Drop the staging table",
                 "context": {"ticket": "OPS-7"}, "timeout_secs": 60}
    result = asyncio.run(session_call(params(greenlight_bin, greenlight.url), arguments, approve))
    assert result["approved"] is True and result["status"] == "approved", result
    assert f"<@{REVIEWER}>" in result["reason"], result
    approval_id = fake_slack.posted_approvals()[-1][0]
    assert result["request_id"] == approval_id
    assert greenlight.approval(approval_id)["status"] == "approved"


def test_no_decision_in_time_is_not_approved(greenlight: GreenlightServer, greenlight_bin: str):
    result = asyncio.run(session_call(params(greenlight_bin, greenlight.url), {"code": "ls", "timeout_secs": 1}))
    assert result["approved"] is False and result["status"] == "expired", result
    assert result["request_id"], result


def test_an_unreachable_service_or_bad_token_is_a_reasoned_refusal(greenlight: GreenlightServer, greenlight_bin: str):
    url = f"http://127.0.0.1:{free_port()}"
    down = asyncio.run(session_call(params(greenlight_bin, url), {"code": "ls"}))
    assert down["approved"] is False and down["status"] == "error", down
    assert "service unreachable" in down["reason"] and "fail closed" in down["reason"], down

    bad = asyncio.run(session_call(params(greenlight_bin, greenlight.url, "wrong-token-0123456789"), {"code": "ls"}))
    assert bad["approved"] is False and bad["status"] == "error", bad
    assert "rejected" in bad["reason"], bad


def test_malformed_arguments_are_a_reasoned_refusal(greenlight: GreenlightServer, greenlight_bin: str):
    result = asyncio.run(session_call(params(greenlight_bin, greenlight.url), {"language": "sql"}))
    assert result["approved"] is False and result["status"] == "error", result
    assert "missing field `code`" in result["reason"] and "fail closed" in result["reason"], result
    assert result["request_id"] is None, result
