"""End to end: a real OpenAI Agents SDK run (the SDK's own ``agents.testing.ScriptedModel``
stands in for the LLM) stops on a ``needs_approval=True`` tool, greenlight (the real
binary, a fake Slack) decides, and the run resumes: approved -> the tool ran; denied
-> it did not, and the reviewer's reason is the tool output the model reads."""

from __future__ import annotations

import asyncio
from typing import Any, List, Tuple

import pytest
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.testing import ModelCall, ScriptedModel, assistant_message, function_call

from greenlight_client import AsyncClient
from greenlight_client.openai_agents import answer_interruptions, run_with_approvals
from greenlight_harness import API_TOKEN, FakeSlack, GreenlightServer, free_port
from reviewer import Reviewer, card_text

pytestmark = pytest.mark.e2e

set_tracing_disabled(True)


def tool_outputs(call: ModelCall) -> List[str]:
    """The function_call_output items the model was given."""
    items = call.input if isinstance(call.input, list) else []
    return [str(i.get("output")) for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]


def make_agent(ran: List[str], calls: int = 1) -> Tuple[Agent, ScriptedModel]:
    """The model asks for ``calls`` delete_file calls in one turn, then echoes the tool outputs."""

    def final(call: ModelCall) -> Any:
        return [assistant_message("outputs: " + " | ".join(tool_outputs(call)))]

    first = [function_call("delete_file", {"path": f"build/{i}"}, call_id=f"call-{i}") for i in range(calls)]
    model = ScriptedModel([first, {"responder": final}])

    @function_tool(needs_approval=True)
    def delete_file(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return f"deleted {path}"

    return Agent(name="cleaner", model=model, tools=[delete_file]), model


def test_in_process_approved_tool_runs(greenlight: GreenlightServer, fake_slack: FakeSlack):
    ran: List[str] = []
    agent, model = make_agent(ran)
    reviewer = Reviewer(greenlight, fake_slack, [(True, "")]).start()
    gl = AsyncClient(greenlight.url, API_TOKEN, submit_retry_secs=5)
    result = asyncio.run(run_with_approvals(gl, agent, "clean the build dir", timeout_secs=60))
    (approval_id,) = reviewer.join()
    assert ran == ["build/0"]
    assert result.final_output == "outputs: deleted build/0"
    assert not result.interruptions
    card = greenlight.approval(approval_id)
    assert card["status"] == "approved" and card["title"] == "OpenAI Agents tool call: delete_file"
    text = card_text(fake_slack, approval_id)
    assert "build/0" in text and "clean the build dir" in text
    model.assert_complete()


def test_in_process_denied_tool_does_not_run_and_the_model_reads_the_reason(greenlight: GreenlightServer, fake_slack: FakeSlack):
    ran: List[str] = []
    agent, model = make_agent(ran, calls=2)

    async def main():
        result = await Runner.run(agent, "clean the build dir")
        assert [i.call_id for i in result.interruptions] == ["call-0", "call-1"]
        reviewer = Reviewer(greenlight, fake_slack, [(True, ""), (False, "keep build/1")]).start()
        state = await answer_interruptions(AsyncClient(greenlight.url, API_TOKEN), result)
        await asyncio.to_thread(reviewer.join)
        return await Runner.run(agent, state)

    result = asyncio.run(main())
    assert len(fake_slack.posted_approvals()) == 1  # one batch: one card for both calls
    assert len(ran) == 1
    denied = "build/1" if ran == ["build/0"] else "build/0"
    outputs = tool_outputs(model.last_call)
    assert sorted(outputs) == sorted([f"deleted {ran[0]}", "The tool call was not approved. Reason: keep build/1"])
    assert denied not in ran
    assert result.final_output.startswith("outputs: ")


def test_unreachable_service_rejects_with_the_reason():
    ran: List[str] = []
    agent, model = make_agent(ran)
    gl = AsyncClient(f"http://127.0.0.1:{free_port()}", API_TOKEN, submit_retry_secs=0.5)
    asyncio.run(run_with_approvals(gl, agent, "clean the build dir"))
    assert ran == []
    (output,) = tool_outputs(model.last_call)
    assert output.startswith("The tool call was not approved. Reason: greenlight: service unreachable"), output
    assert "fail closed" in output


def test_save_when_greenlight_cannot_take_the_batch_resumes_with_rejections(tmp_path):
    """Stop-and-resume, failing closed: a client whose batch submission fails gives a
    record that is already decided (every call rejected, saying why); resuming from the
    stored JSON runs nothing."""
    import json

    from greenlight_client.openai_agents import resume_state, save_interruptions

    class Down:
        async def request_batch(self, actions, **kwargs):
            raise ConnectionError("greenlight is down")

    ran: List[str] = []
    agent, model = make_agent(ran)

    async def main():
        result = await Runner.run(agent, "clean the build dir")
        record = await save_interruptions(Down(), result, callback_url="http://127.0.0.1:9/cb")
        stored = json.loads(json.dumps(record))  # what an application keeps
        assert stored["greenlight_batch_id"] is None and stored["call_ids"] == ["call-0"]
        return await Runner.run(agent, await resume_state(agent, stored))

    asyncio.run(main())
    assert ran == []
    (output,) = tool_outputs(model.last_call)
    assert output.startswith("The tool call was not approved. Reason: greenlight: client error (ConnectionError: greenlight is down); denied by default (fail closed)")
