"""End to end: a real Pydantic AI agent run (``FunctionModel`` stands in for the
LLM) stops on a ``requires_approval=True`` tool, greenlight (the real binary, a fake
Slack) decides, and the run resumes: approved -> the tool ran; denied -> it did not,
and the reviewer's reason is the tool result the model reads."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import DeferredToolRequests, ToolApproved, ToolDenied

from greenlight_client import AsyncClient
from greenlight_client.pydantic_ai import deferred_tool_results, greenlight_approvals
from greenlight_harness import API_TOKEN, FakeSlack, GreenlightServer, free_port
from reviewer import Reviewer, card_text

pytestmark = pytest.mark.e2e


class Script:
    """The fake model: first asks for ``delete_file``, then answers with what the tool
    call returned; records every message list it was given."""

    def __init__(self) -> None:
        self.seen: List[List[ModelMessage]] = []

    def __call__(self, messages: List[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.seen.append(list(messages))
        returns = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(parts=[ToolCallPart("delete_file", {"path": "build/"}, tool_call_id="call-1")])
        return ModelResponse(parts=[TextPart(f"tool said: {returns[-1].content}")])


def make_agent(script: Script, ran: List[str], **kwargs: Any) -> Agent:
    agent = Agent(FunctionModel(script), **kwargs)

    @agent.tool_plain(requires_approval=True)
    def delete_file(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return f"deleted {path}"

    return agent


def run_inline(greenlight: GreenlightServer, slack: FakeSlack, approve: bool, reason: str = ""):
    script, ran = Script(), []
    gl = AsyncClient(greenlight.url, API_TOKEN, submit_retry_secs=5)
    agent = make_agent(script, ran, capabilities=[greenlight_approvals(gl, timeout_secs=60)])
    reviewer = Reviewer(greenlight, slack, [(approve, reason)]).start()
    result = asyncio.run(agent.run("clean the build dir"))
    ids = reviewer.join()
    return result.output, ran, script, ids


def test_inline_approved_tool_runs(greenlight: GreenlightServer, fake_slack: FakeSlack):
    output, ran, _, ids = run_inline(greenlight, fake_slack, approve=True)
    assert ran == ["build/"]
    assert output == "tool said: deleted build/"
    card = greenlight.approval(ids[0])
    assert card["status"] == "approved"
    assert card["title"] == "Pydantic AI tool call: delete_file"
    assert card["language"] == "json"
    text = card_text(fake_slack, ids[0])
    assert "delete_file" in text and "build/" in text and "clean the build dir" in text, text


def test_inline_denied_tool_does_not_run_and_the_model_reads_the_reason(greenlight: GreenlightServer, fake_slack: FakeSlack):
    output, ran, script, _ = run_inline(greenlight, fake_slack, approve=False, reason="not on a Friday")
    assert ran == []
    # The model's second request carries the denial as the tool's result.
    returns = [p for m in script.seen[-1] for p in m.parts if isinstance(p, ToolReturnPart)]
    assert [r.content for r in returns] == ["The tool call was not approved. Reason: not on a Friday"]
    assert output == "tool said: The tool call was not approved. Reason: not on a Friday"


def test_stop_and_resume_with_deferred_tool_results(greenlight: GreenlightServer, fake_slack: FakeSlack):
    """The run ends with DeferredToolRequests; a second run gets greenlight's answers."""
    script, ran = Script(), []
    agent = make_agent(script, ran, output_type=[str, DeferredToolRequests])
    first = asyncio.run(agent.run("clean the build dir"))
    assert isinstance(first.output, DeferredToolRequests) and ran == []
    reviewer = Reviewer(greenlight, fake_slack, [(True, "")]).start()
    answers = asyncio.run(deferred_tool_results(AsyncClient(greenlight.url, API_TOKEN), first.output))
    reviewer.join()
    assert isinstance(answers.approvals["call-1"], ToolApproved)
    second = asyncio.run(agent.run(message_history=first.all_messages(), deferred_tool_results=answers))
    assert ran == ["build/"] and second.output == "tool said: deleted build/"


def test_unreachable_service_denies(tmp_path):
    script, ran = Script(), []
    gl = AsyncClient(f"http://127.0.0.1:{free_port()}", API_TOKEN, submit_retry_secs=0.5)
    agent = make_agent(script, ran, capabilities=[greenlight_approvals(gl)])
    result = asyncio.run(agent.run("clean the build dir"))
    assert ran == []
    assert result.output.startswith("tool said: The tool call was not approved. Reason: greenlight: service unreachable")
    assert "fail closed" in result.output


def test_denial_type_is_pydantic_ais_own(greenlight: GreenlightServer, fake_slack: FakeSlack):
    script, ran = Script(), []
    agent = make_agent(script, ran, output_type=[str, DeferredToolRequests])
    first = asyncio.run(agent.run("clean the build dir"))
    answers = asyncio.run(deferred_tool_results(AsyncClient(greenlight.url, "wrong-token"), first.output))
    denied = answers.approvals["call-1"]
    assert isinstance(denied, ToolDenied) and "API token was rejected" in denied.message
    assert fake_slack.posted_approvals() == []
