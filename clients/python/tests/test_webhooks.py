"""greenlight_client.webhooks.verify, and greenlight's real signed callbacks checked
with the standardwebhooks package directly (an independent verifier)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List

import pytest
from standardwebhooks.webhooks import Webhook

from greenlight_client import webhooks
from greenlight_harness import wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = json.dumps({"type": "approval.decided", "timestamp": "2026-11-30T12:00:00.000Z",
                   "data": {"id": "x", "status": "denied", "approved": False, "reason": "no"}})


def signed_headers(body: str, *, secret: str = SECRET, when: datetime | None = None) -> Dict[str, str]:
    when = when or datetime.now(tz=timezone.utc)
    signature = Webhook(secret).sign("msg_1", when, body)
    return {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(int(when.timestamp())), "Webhook-Signature": signature}


def test_verify_returns_the_payload_of_a_valid_callback():
    payload = webhooks.verify(SECRET, signed_headers(BODY), BODY.encode())
    assert payload["type"] == "approval.decided"
    assert payload["data"]["reason"] == "no"


@pytest.mark.parametrize(
    "secret, headers, body",
    [
        (SECRET, signed_headers(BODY), BODY.replace("denied", "approved")),  # tampered
        ("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", signed_headers(BODY), BODY),  # other secret
        (SECRET, signed_headers(BODY, when=datetime.fromtimestamp(time.time() - 3600, tz=timezone.utc)), BODY),
        (SECRET, {"webhook-id": "msg_1"}, BODY),  # headers missing
        ("not base64 !!", signed_headers(BODY), BODY),
    ],
)
def test_verify_refuses_what_is_not_a_fresh_valid_signature(secret, headers, body):
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify(secret, headers, body.encode())


class Receiver:
    """Records POSTs on 127.0.0.1 and answers 200."""

    def __init__(self) -> None:
        self.received: List[Dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.received.append({"headers": dict(self.headers.items()), "body": raw})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.e2e
def test_greenlights_real_callbacks_verify_with_standardwebhooks(server_factory):
    receiver = Receiver()
    try:
        srv = server_factory(
            extra_env={
                "GREENLIGHT_CALLBACK_HOSTS": receiver.host,
                "GREENLIGHT_CALLBACK_SECRETS": f"python-test:{SECRET}",
            }
        ).start()
        r = srv.api("POST", "/v1/approvals", json={"code": "make deploy", "language": "sh",
                                                  "callback_url": f"http://{receiver.host}/cb"})
        assert r.status_code == 202, r.text
        approval_id = r.json()["id"]
        # The callback carries the request as it was decided; a Slack post still in
        # flight at the cancel would record its message_ts after that, and the read
        # below would differ from the payload by it. Cancel once the post is recorded.
        wait_until(lambda: srv.approval(approval_id)["message_ts"], 20, what="the Slack post")
        assert srv.api("POST", f"/v1/approvals/{approval_id}/cancel").status_code == 200
        wait_until(lambda: receiver.received, 20, what="the callback")
        got = receiver.received[0]
        # The independent verifier, used directly: raises if greenlight's signature is wrong.
        Webhook(SECRET).verify(got["body"], {k.lower(): v for k, v in got["headers"].items()})
        payload = webhooks.verify(SECRET, got["headers"], got["body"])
        assert payload["type"] == "approval.decided"
        assert payload["data"] == srv.approval(approval_id)
        assert payload["data"]["status"] == "cancelled"
        refused = r.json()
        assert refused["status"] == "pending"
        bad = srv.api("POST", "/v1/approvals", json={"code": "ls", "callback_url": "http://example.com/cb"})
        assert bad.status_code == 422
        assert bad.json()["error"]["message"].startswith("callback_url: ")
    finally:
        receiver.close()
