"""End to end, stop and resume on greenlight's signed decision callbacks:
``read_callback`` reads a real callback (verified with ``greenlight_client.webhooks``)
into decisions.

Still to come once greenlight has batches (the callbacks branch): with the OpenAI Agents SDK, a run stops on two
``needs_approval`` tool calls; ``save_interruptions`` submits them to greenlight (the
real binary, a fake Slack) as one batch with a ``callback_url`` and the application
keeps only the JSON record (``RunState.to_json()`` + the batch id). The reviewer
decides later; greenlight's signed callback reaches a receiver on 127.0.0.1, which
verifies it (``greenlight_client.webhooks.verify``), loads the record, and resumes the
run with a fresh agent: the approved call ran, the denied one did not and its reason
is the tool output the model reads."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List

import pytest

from greenlight_client.resume import read_callback
from greenlight_client.webhooks import InvalidSignature
from greenlight_harness import FakeSlack, wait_until
from reviewer import decide_item

pytestmark = pytest.mark.e2e

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
