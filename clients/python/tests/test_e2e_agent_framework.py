"""End to end: a real Microsoft Agent Framework ``Agent`` (a minimal fake chat client
built on MAF's own ``BaseChatClient`` + ``FunctionInvocationLayer`` stands in for the
LLM) stops on an ``approval_mode="always_require"`` tool, greenlight (the real binary,
a fake Slack) decides, and the run resumes: approved -> the tool ran; denied -> it
did not, and the reviewer's reason reaches the model. The same for a workflow's
request-info events (``WorkflowBuilder`` with the agent as start executor)."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from agent_framework import Agent, BaseChatClient, ChatResponse, Content, FunctionInvocationLayer, Message, WorkflowBuilder, tool

from greenlight_client import AsyncClient
from greenlight_client.agent_framework import approval_messages, run_with_approvals, workflow_responses
from greenlight_harness import API_TOKEN, FakeSlack, GreenlightServer, free_port
from reviewer import Reviewer, card_text

pytestmark = pytest.mark.e2e

REJECTED = "Error: Tool call invocation was rejected by user."  # MAF's own rejection result


class FakeChatClient(FunctionInvocationLayer, BaseChatClient):
    """First turn: one delete_file call; then a text answer echoing the tool results.
    ``seen`` records the messages of every model call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: List[List[Message]] = []

    async def _inner_get_response(self, *, messages: Any, stream: bool, options: Any, **kwargs: Any) -> ChatResponse:
        self.seen.append(list(messages))
        results = [c for m in messages for c in m.contents if c.type == "function_result"]
        if not results:
            call = Content.from_function_call(call_id="call-1", name="delete_file", arguments={"path": "build/"})
            return ChatResponse(messages=[Message("assistant", [call])])
        return ChatResponse(messages=[Message("assistant", ["results: " + " | ".join(str(r.result) for r in results)])])

    def texts(self) -> List[str]:
        """The text contents of the last model call's messages."""
        return [c.text for m in self.seen[-1] for c in m.contents if c.type == "text"]


def make_agent(ran: List[str]):
    @tool(approval_mode="always_require")
    def delete_file(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return f"deleted {path}"

    client = FakeChatClient()
    return Agent(client=client, name="cleaner", tools=[delete_file]), client


def test_approved_tool_runs(greenlight: GreenlightServer, fake_slack: FakeSlack):
    ran: List[str] = []
    agent, _ = make_agent(ran)
    reviewer = Reviewer(greenlight, fake_slack, [(True, "")]).start()
    result = asyncio.run(run_with_approvals(AsyncClient(greenlight.url, API_TOKEN), agent, "clean the build dir", timeout_secs=60))
    (approval_id,) = reviewer.join()
    assert ran == ["build/"]
    assert result.text == "results: deleted build/"
    assert greenlight.approval(approval_id)["title"] == "Agent Framework tool call: delete_file"
    assert "build/" in card_text(fake_slack, approval_id)


def test_denied_tool_does_not_run_and_the_model_reads_the_reason(greenlight: GreenlightServer, fake_slack: FakeSlack):
    ran: List[str] = []
    agent, client = make_agent(ran)

    async def main():
        session = agent.create_session()
        result = await agent.run("clean the build dir", session=session)
        assert [r.type for r in result.user_input_requests] == ["function_approval_request"]
        reviewer = Reviewer(greenlight, fake_slack, [(False, "build/ is shared")]).start()
        messages = await approval_messages(AsyncClient(greenlight.url, API_TOKEN), result)
        await asyncio.to_thread(reviewer.join)
        return await agent.run(messages, session=session)

    result = asyncio.run(main())
    assert ran == []
    assert result.text == f"results: {REJECTED}"
    assert "The tool call delete_file was not approved. Reason: build/ is shared" in client.texts()


def test_unreachable_service_denies():
    ran: List[str] = []
    agent, client = make_agent(ran)
    gl = AsyncClient(f"http://127.0.0.1:{free_port()}", API_TOKEN, submit_retry_secs=0.5)
    result = asyncio.run(run_with_approvals(gl, agent, "clean the build dir"))
    assert ran == [] and result.text == f"results: {REJECTED}"
    assert any("greenlight: service unreachable" in t and "fail closed" in t for t in client.texts()), client.texts()


@pytest.mark.parametrize("approve", [True, False])
def test_workflow_request_info_events(greenlight: GreenlightServer, fake_slack: FakeSlack, approve: bool):
    ran: List[str] = []
    agent, _ = make_agent(ran)
    workflow = WorkflowBuilder(start_executor=agent).build()

    async def main():
        events = await workflow.run("clean the build dir")
        requests = events.get_request_info_events()
        assert len(requests) == 1 and requests[0].data.type == "function_approval_request"
        reviewer = Reviewer(greenlight, fake_slack, [(approve, "not today")]).start()
        responses = await workflow_responses(AsyncClient(greenlight.url, API_TOKEN), events)
        await asyncio.to_thread(reviewer.join)
        assert list(responses) == [requests[0].request_id]
        assert responses[requests[0].request_id].approved is approve
        return await workflow.run(responses=responses)

    final = asyncio.run(main())
    outputs = [str(o) for o in final.get_outputs()]
    if approve:
        assert ran == ["build/"] and outputs == ["results: deleted build/"], outputs
    else:
        assert ran == [] and outputs == [f"results: {REJECTED}"], outputs
