"""End to end: a real LangChain v1 agent (``create_agent`` + ``HumanInTheLoopMiddleware``,
LangGraph's ``InMemorySaver``; a minimal fake chat model stands in for the LLM) stops
before a gated tool, greenlight (the real binary, a fake Slack) decides, and
``Command(resume={"decisions": …})`` resumes it: approved -> the tool ran; denied ->
it did not, and the reviewer's reason reaches the model."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from greenlight_client import AsyncClient, Client
from greenlight_client.langgraph import resume_command, resume_command_sync
from greenlight_harness import API_TOKEN, FakeSlack, GreenlightServer, free_port
from reviewer import Reviewer, card_text

pytestmark = pytest.mark.e2e


class FakeChatModel(BaseChatModel):
    """First turn: ``calls`` delete_file tool calls; then a text answer echoing the tool
    messages it was given. ``seen`` records each call's messages."""

    calls: int = 1
    seen: List[List[BaseMessage]] = []

    @property
    def _llm_type(self) -> str:
        return "greenlight-test-fake"

    def bind_tools(self, tools: Any, **kwargs: Any) -> "FakeChatModel":
        return self

    def _generate(self, messages: List[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            msg = AIMessage(
                content="",
                tool_calls=[
                    {"name": "delete_file", "args": {"path": f"build/{i}"}, "id": f"call-{i}", "type": "tool_call"}
                    for i in range(self.calls)
                ],
            )
        else:
            msg = AIMessage(content="results: " + " | ".join(str(m.content) for m in results))
        return ChatResult(generations=[ChatGeneration(message=msg)])


def make_agent(ran: List[str], calls: int = 1, **hitl: Any):
    @tool
    def delete_file(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return f"deleted {path}"

    model = FakeChatModel(calls=calls, seen=[])
    agent = create_agent(
        model,
        tools=[delete_file],
        middleware=[HumanInTheLoopMiddleware(interrupt_on={"delete_file": True}, **hitl)],
        checkpointer=InMemorySaver(),
    )
    return agent, model


CONFIG = {"configurable": {"thread_id": "t1"}}
ASK = {"messages": [{"role": "user", "content": "clean the build dir"}]}


def test_sync_approved_tool_runs(greenlight: GreenlightServer, fake_slack: FakeSlack):
    ran: List[str] = []
    agent, _ = make_agent(ran)
    result = agent.invoke(ASK, CONFIG)
    assert result.get("__interrupt__") and ran == []
    reviewer = Reviewer(greenlight, fake_slack, [(True, "")]).start()
    command = resume_command_sync(Client(greenlight.url, API_TOKEN), result["__interrupt__"], timeout_secs=60)
    (approval_id,) = reviewer.join()
    assert command.resume == {"decisions": [{"type": "approve"}]}
    result = agent.invoke(command, CONFIG)
    assert ran == ["build/0"]
    assert result["messages"][-1].content == "results: deleted build/0"
    assert greenlight.approval(approval_id)["title"] == "LangGraph tool call: delete_file"
    assert "build/0" in card_text(fake_slack, approval_id)


def test_async_denied_tool_does_not_run_and_the_model_reads_the_reason(greenlight: GreenlightServer, fake_slack: FakeSlack):
    ran: List[str] = []
    agent, model = make_agent(ran, calls=2)

    async def main():
        result = await agent.ainvoke(ASK, CONFIG)
        (interrupt,) = result["__interrupt__"]
        assert len(interrupt.value["action_requests"]) == 2
        reviewer = Reviewer(greenlight, fake_slack, [(False, "keep it"), (False, "keep that too")]).start()
        command = await resume_command(AsyncClient(greenlight.url, API_TOKEN), result["__interrupt__"])
        await asyncio.to_thread(reviewer.join)
        assert [d["type"] for d in command.resume["decisions"]] == ["reject", "reject"]
        return await agent.ainvoke(command, CONFIG)

    result = asyncio.run(main())
    assert ran == []
    tool_messages = [m.content for m in model.seen[-1] if isinstance(m, ToolMessage)]
    assert sorted(tool_messages) == [
        "User rejected the tool call for `delete_file` with reason: keep it",
        "User rejected the tool call for `delete_file` with reason: keep that too",
    ]
    assert result["messages"][-1].content.startswith("results: User rejected")


def test_per_call_mode_one_decision_per_interrupt(greenlight: GreenlightServer, fake_slack: FakeSlack):
    ran: List[str] = []
    agent, model = make_agent(ran, calls=1, interrupt_mode="per_call")
    result = agent.invoke(ASK, CONFIG)
    (interrupt,) = result["__interrupt__"]
    assert interrupt.value["type"] == "tool_approval"
    reviewer = Reviewer(greenlight, fake_slack, [(False, "no")]).start()
    command = resume_command_sync(Client(greenlight.url, API_TOKEN), result)
    reviewer.join()
    assert command.resume == {"type": "reject", "message": "no"}
    agent.invoke(command, CONFIG)
    assert ran == []
    assert [m.content for m in model.seen[-1] if isinstance(m, ToolMessage)] == [
        "User rejected the tool call for `delete_file` with reason: no"
    ]


def test_unreachable_service_rejects():
    ran: List[str] = []
    agent, model = make_agent(ran)
    result = agent.invoke(ASK, CONFIG)
    gl = Client(f"http://127.0.0.1:{free_port()}", API_TOKEN, submit_retry_secs=0.5)
    command = resume_command_sync(gl, result["__interrupt__"])
    (decision,) = command.resume["decisions"]
    assert decision["type"] == "reject" and "service unreachable" in decision["message"], decision
    agent.invoke(command, CONFIG)
    assert ran == []
