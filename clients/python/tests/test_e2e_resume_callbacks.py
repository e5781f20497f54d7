"""End to end, stop and resume on greenlight's signed decision callbacks.

``read_callback`` reads a real callback (verified with ``greenlight_client.webhooks``)
into decisions. With the OpenAI Agents SDK: a run stops on two
``needs_approval`` tool calls; ``save_interruptions`` submits them to greenlight (the
real binary, a fake Slack) as one batch with a ``callback_url`` and the application
keeps only the JSON record (``RunState.to_json()`` + the batch id). The reviewer
decides later; greenlight's signed callback reaches a receiver on 127.0.0.1, which
verifies it (``greenlight_client.webhooks.verify``), loads the record, and resumes the
run with a fresh agent: the approved call ran, the denied one did not and its reason
is the tool output the model reads."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List

import pytest
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.testing import ModelCall, ScriptedModel, assistant_message, function_call

from greenlight_client import AsyncClient
from greenlight_client.openai_agents import resume_state, save_interruptions
from greenlight_client.resume import read_callback
from greenlight_client.webhooks import InvalidSignature
from greenlight_harness import API_TOKEN, FakeSlack, wait_until
from reviewer import decide_item

pytestmark = pytest.mark.e2e
set_tracing_disabled(True)

SECRET = "whsec_" + base64.b64encode(b"adapters-test-callback-secret-32b").decode()


class Receiver:
    """Records every POST (headers, raw body) and answers 200."""

    def __init__(self) -> None:
        self.posts: List[Dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tool_outputs(call: ModelCall) -> List[str]:
    items = call.input if isinstance(call.input, list) else []
    return [str(i.get("output")) for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]


def make_agent(ran: List[str], steps: List[Any]) -> Agent:
    @function_tool(needs_approval=True)
    def delete_file(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return f"deleted {path}"

    return Agent(name="cleaner", model=ScriptedModel(steps), tools=[delete_file])


def callback_server(server_factory, receiver: Receiver):
    return server_factory(
        extra_env={
            "GREENLIGHT_CALLBACK_HOSTS": receiver.hostport,
            "GREENLIGHT_CALLBACK_SECRETS": f"python-test:{SECRET}",
        }
    ).start()


def test_read_callback_of_a_real_decision(server_factory, fake_slack: FakeSlack):
    receiver = Receiver()
    try:
        greenlight = callback_server(server_factory, receiver)
        r = greenlight.api(
            "POST",
            "/v1/approvals",
            json={"code": "rm -rf build/", "language": "sh", "callback_url": f"http://{receiver.hostport}/cb"},
            headers={"Idempotency-Key": "resume-1"},
        )
        assert r.status_code in (200, 202), r.text
        approval_id = r.json()["id"]
        decide_item(greenlight, fake_slack, approval_id, approve=False, reason="not in prod")
        wait_until(lambda: receiver.posts, 20, what="greenlight's callback")
        post = receiver.posts[0]
        decided = read_callback(SECRET, post["headers"], post["body"])
        assert (decided.kind, decided.id) == ("approval", approval_id)
        (decision,) = decided.decisions
        assert (decision.approved, decision.status, decision.reason) == (False, "denied", "not in prod")
        with pytest.raises(InvalidSignature):
            read_callback("whsec_" + base64.b64encode(b"another-secret-another-secret-32").decode(), post["headers"], post["body"])
    finally:
        receiver.close()


def test_save_run_state_and_resume_on_the_signed_callback(server_factory, fake_slack: FakeSlack):
    receiver = Receiver()
    try:
        greenlight = callback_server(server_factory, receiver)
        ran: List[str] = []
        first = [function_call("delete_file", {"path": f"build/{i}"}, call_id=f"call-{i}") for i in range(2)]
        agent = make_agent(ran, [first])

        async def stop():
            result = await Runner.run(agent, "clean the build dir")
            assert len(result.interruptions) == 2
            return await save_interruptions(
                AsyncClient(greenlight.url, API_TOKEN), result, callback_url=f"http://{receiver.hostport}/greenlight", timeout_secs=60
            )

        stored = json.dumps(asyncio.run(stop()))  # all the application keeps
        record = json.loads(stored)
        assert record["greenlight_batch_id"] and record["decided"] is None
        assert ran == [] and receiver.posts == []

        # Later: a reviewer decides each item of the batch's one card.
        batch = greenlight.api("GET", f"/v1/batches/{record['greenlight_batch_id']}").json()
        first_id, second_id = [a["id"] for a in batch["approvals"]]
        decide_item(greenlight, fake_slack, first_id, approve=True)
        assert receiver.posts == []  # one callback for the batch, when its last item is decided
        decide_item(greenlight, fake_slack, second_id, approve=False, reason="keep build/1")
        wait_until(lambda: receiver.posts, 20, what="greenlight's callback")

        # The receiver: verify, look the record up, resume with a fresh agent and model.
        post = receiver.posts[0]
        with pytest.raises(InvalidSignature):
            read_callback(SECRET, post["headers"], post["body"] + b" ")
        decided = read_callback(SECRET, post["headers"], post["body"])
        assert decided.kind == "batch" and decided.id == record["greenlight_batch_id"]
        model_seen: List[ModelCall] = []

        def final(call: ModelCall) -> Any:
            model_seen.append(call)
            return [assistant_message("outputs: " + " | ".join(tool_outputs(call)))]

        fresh = make_agent(ran, [{"responder": final}])
        result = asyncio.run(_resume(fresh, record, decided))
        assert ran == ["build/0"]
        assert tool_outputs(model_seen[-1]) == ["deleted build/0", "The tool call was not approved. Reason: keep build/1"]
        assert result.final_output.startswith("outputs: deleted build/0")
    finally:
        receiver.close()


async def _resume(agent: Agent, record: Dict[str, Any], decided: Any) -> Any:
    return await Runner.run(agent, await resume_state(agent, record, decided))
