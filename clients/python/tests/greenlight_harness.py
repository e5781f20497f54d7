"""Test harness: a fake Slack Web API, the real greenlight binary, signed clicks.

Everything listens on / talks to 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import httpx

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
CHANNEL = "C0TEST"
API_TOKEN = "tok-python-client-test"
REVIEWER = "U123"

LISTEN_RE = re.compile(r"greenlight listening on (http://127\.0\.0\.1:(\d+))")


def free_port() -> int:
    """A port that was free a moment ago (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- fake Slack


class FakeSlack:
    """Records every Web API call; answers per the contract."""

    def __init__(self) -> None:
        self.calls: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ts = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _answer(self, obj: Dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                method = urllib.parse.urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
                body = fake._parse_body(self.headers.get("Content-Type", ""), raw)
                call = {
                    "method": method,
                    "http_method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                    "raw": raw,
                    "at": time.monotonic(),
                }
                with fake._lock:
                    fake.calls.append(call)
                    if method == "chat.postMessage":
                        fake._ts += 1
                        ts = f"{1700000000 + fake._ts}.{fake._ts:06d}"
                        channel = body.get("channel") if isinstance(body, dict) else None
                        answer = {"ok": True, "channel": channel or CHANNEL, "ts": ts}
                    else:
                        answer = {"ok": True}
                    call["answer"] = answer
                self._answer(answer)

            do_POST = _handle
            do_GET = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @staticmethod
    def _parse_body(content_type: str, raw: bytes) -> Any:
        if not raw:
            return {}
        if "json" in content_type:
            try:
                return json.loads(raw)
            except ValueError:
                return {"_unparsed": raw.decode("utf-8", "replace")}
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace")).items()}
        for k in ("blocks", "view", "attachments"):
            if isinstance(form.get(k), str):
                try:
                    form[k] = json.loads(form[k])
                except ValueError:
                    pass
        return form

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def calls_to(self, method: str) -> List[Dict[str, Any]]:
        with self._lock:
            return [c for c in self.calls if c["method"] == method]

    def posted_approvals(self) -> List[Tuple[str, str, str]]:
        """(approval id, message ts, channel) for each chat.postMessage carrying our buttons."""
        out = []
        with self._lock:
            for c in self.calls:
                if c["method"] != "chat.postMessage":
                    continue
                for el in _walk(c["body"]):
                    if el.get("action_id") == "greenlight_approve" and el.get("value"):
                        answer = c.get("answer") or {}
                        out.append((el["value"], answer.get("ts", ""), answer.get("channel", CHANNEL)))
                        break
        return out

    def wait_for_approval_message(self, timeout: float = 15.0, index: int = 0) -> Tuple[str, str, str]:
        return wait_until(
            lambda: (self.posted_approvals()[index] if len(self.posted_approvals()) > index else None),
            timeout,
            what="a chat.postMessage with a greenlight_approve button",
        )


def _walk(obj: Any):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


# --------------------------------------------------------------------------- greenlight binary


class GreenlightServer:
    def __init__(
        self,
        binary: str,
        workdir: Path,
        slack_url: str,
        *,
        port: int = 0,
        db_path: Optional[Path] = None,
        default_timeout_secs: int = 60,
        api_tokens: str = f"python-test:{API_TOKEN}",
        extra_env: Optional[Dict[str, str]] = None,
    ) -> None:
        self.extra_env = dict(extra_env or {})
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.slack_url = slack_url
        self.port = port
        self.db_path = db_path or (self.workdir / "gl.db")
        self.default_timeout_secs = default_timeout_secs
        self.api_tokens = api_tokens
        self.proc: Optional[subprocess.Popen] = None
        self.url: Optional[str] = None
        self.stderr_path = self.workdir / "greenlight.stderr.log"
        self.stdout_lines: "queue.Queue[str]" = queue.Queue()
        self.starts = 0

    def env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENLIGHT_", "SLACK_"))}
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.pop(k, None)
        env.update(
            {
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_CHANNEL_ID": CHANNEL,
                "SLACK_API_BASE_URL": self.slack_url,
                "GREENLIGHT_LISTEN": f"127.0.0.1:{self.port}",
                "GREENLIGHT_API_TOKENS": self.api_tokens,
                "GREENLIGHT_DATABASE_URL": f"sqlite://{self.db_path.resolve()}",
                "GREENLIGHT_DEFAULT_TIMEOUT_SECS": str(self.default_timeout_secs),
                "NO_PROXY": "127.0.0.1,localhost",
            }
        )
        env.update(self.extra_env)
        env.setdefault("RUST_LOG", "info")
        return env

    def start(self, timeout: float = 30.0) -> "GreenlightServer":
        self.starts += 1
        stderr = open(self.stderr_path, "ab")
        stderr.write(f"\n===== start #{self.starts} =====\n".encode())
        stderr.flush()
        self.proc = subprocess.Popen(
            [self.binary, "serve"],
            cwd=str(self.workdir),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        stderr.close()
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.stdout_lines.put(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise RuntimeError(f"greenlight did not print its listening line in {timeout}s\n{self.log_tail()}")
            try:
                line = lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = proc.wait(timeout=5)
                raise RuntimeError(
                    f"greenlight exited (code {code}) before listening: {self.binary} serve\n{self.log_tail()}"
                )
            m = LISTEN_RE.search(line)
            if m:
                self.url = m.group(1)
                got = int(m.group(2))
                if self.port and got != self.port:
                    raise RuntimeError(f"asked to listen on {self.port}, server says {got}")
                self.port = got
                return self

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 4000) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            text = ""
        return f"--- greenlight stderr (tail) ---\n{text[-n:]}"

    # ---- direct API helpers (for assertions) ----
    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self.url
        headers = kwargs.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {API_TOKEN}")
        with httpx.Client(base_url=self.url, trust_env=False, timeout=10) as c:
            return c.request(method, path, headers=headers, **kwargs)

    def approval(self, approval_id: str) -> Dict[str, Any]:
        r = self.api("GET", f"/v1/approvals/{approval_id}")
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    # ---- Slack clicks ----
    def interact(self, payload: Dict[str, Any], secret: str = SIGNING_SECRET) -> httpx.Response:
        assert self.url
        body = "payload=" + urllib.parse.quote(json.dumps(payload), safe="")
        ts = str(int(time.time()))
        sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
        with httpx.Client(trust_env=False, timeout=10) as c:
            return c.post(
                f"{self.url}/slack/interactions",
                content=body.encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Slack-Request-Timestamp": ts,
                    "X-Slack-Signature": sig,
                },
            )

    def click(self, action_id: str, approval_id: str, message_ts: str, channel: str = CHANNEL) -> httpx.Response:
        payload = {
            "type": "block_actions",
            "user": {"id": REVIEWER, "username": "alice"},
            "channel": {"id": channel},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
            "trigger_id": "1.2.abc",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "greenlight_decision",
                    "value": approval_id,
                    "type": "button",
                    "action_ts": "1.2",
                }
            ],
        }
        return self.interact(payload)

    def submit_deny_reason(self, approval_id: str, reason: str, view: Optional[Dict[str, Any]] = None) -> httpx.Response:
        view = view or {}
        payload = {
            "type": "view_submission",
            "user": {"id": REVIEWER},
            "view": {
                "id": view.get("id") or "V1",
                "callback_id": view.get("callback_id") or "greenlight_deny_reason",
                "private_metadata": view.get("private_metadata") or approval_id,
                "state": {
                    "values": {"reason": {"reason_input": {"type": "plain_text_input", "value": reason}}}
                },
            },
        }
        return self.interact(payload)
