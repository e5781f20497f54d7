"""Sync and async greenlight clients (thin drivers around ``_core.approval_flow``)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, Dict, List, Optional

import httpx

from . import __version__
from ._batch import Batch, batch_flow
from ._core import (
    Decision,
    Flow,
    HttpCall,
    Reply,
    Settings,
    Sleep,
    _describe_exc,
    _fail,
    approval_flow,
    build_body,
)

__all__ = ["Client", "AsyncClient", "Decision", "Batch"]

_USER_AGENT = f"greenlight-client-python/{__version__}"


class _Base:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        submit_retry_secs: float = 15.0,
        grace_secs: float = 5.0,
        poll_wait_secs: int = 25,
        initial_backoff_secs: float = 0.25,
        max_backoff_secs: float = 4.0,
        request_timeout_secs: float = 30.0,
        connect_timeout_secs: float = 5.0,
        trust_env: bool = True,
        transport: Any = None,
    ) -> None:
        """
        Args:
            base_url: where greenlight listens, e.g. ``https://greenlight.example.com``.
            token: an API token from the server's ``GREENLIGHT_API_TOKENS``.
            submit_retry_secs: how long to keep retrying the first submission while
                the service is unreachable (then: denied).
            grace_secs: how long past the request's ``expires_at`` to keep trying
                to learn the decision (then: denied).
            poll_wait_secs: long-poll length per GET (at most 25).
            initial_backoff_secs / max_backoff_secs: backoff on connection errors.
            request_timeout_secs / connect_timeout_secs: per-exchange HTTP timeouts.
            trust_env: let httpx read proxy settings from the environment.
            transport: an httpx transport (for tests).
        """
        self.settings = Settings(
            base_url=str(base_url).rstrip("/"),
            token=token,
            submit_retry_secs=submit_retry_secs,
            grace_secs=grace_secs,
            poll_wait_secs=poll_wait_secs,
            initial_backoff_secs=initial_backoff_secs,
            max_backoff_secs=max_backoff_secs,
            request_timeout_secs=request_timeout_secs,
            connect_timeout_secs=connect_timeout_secs,
        )
        self._trust_env = trust_env
        self._transport = transport

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}({self.settings.base_url!r})"

    def _client_kwargs(self) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = {
            "base_url": self.settings.base_url,
            "headers": {
                "Authorization": f"Bearer {self.settings.token}",
                "User-Agent": _USER_AGENT,
                "Accept": "application/json",
            },
            "trust_env": self._trust_env,
            "follow_redirects": False,
        }
        if self._transport is not None:
            kwargs["transport"] = self._transport
        return kwargs

    def _request_kwargs(self, call: HttpCall) -> Dict[str, Any]:
        headers = dict(call.headers or {})
        kwargs: Dict[str, Any] = {
            "params": call.params,
            "headers": headers,
            "timeout": httpx.Timeout(call.timeout, connect=self.settings.connect_timeout_secs),
        }
        if call.json_body is not None:
            headers["Content-Type"] = "application/json"
            kwargs["content"] = json.dumps(call.json_body, default=str).encode("utf-8")
        return kwargs

    def _flow(
        self,
        code: str,
        language: Optional[str],
        title: Optional[str],
        context: Any,
        timeout_secs: Optional[float],
        requester_slack_id: Optional[str],
        required_approvals: Optional[int],
        idempotency_key: Optional[str],
    ) -> Flow:
        body = build_body(code, language, title, context, timeout_secs, requester_slack_id, required_approvals)
        # Validate serializability up front so a bad context can't raise later.
        json.dumps(body, default=str)
        return approval_flow(self.settings, body, idempotency_key=idempotency_key)

    def _batch_flow(
        self,
        actions: List[Dict[str, Any]],
        callback_url: Optional[str],
        wait: bool,
        timeout_secs: Optional[float],
        title: Optional[str],
        idempotency_key: Optional[str],
    ) -> Flow:
        body: Dict[str, Any] = {"actions": [_batch_action(a) for a in actions]}
        if title:
            body["title"] = title
        if timeout_secs is not None:
            body["timeout_secs"] = max(1, int(math.ceil(float(timeout_secs))))
        if callback_url:
            body["callback_url"] = callback_url
        json.dumps(body, default=str)
        return batch_flow(self.settings, body, wait=wait, idempotency_key=idempotency_key)


def _batch_action(action: Dict[str, Any]) -> Dict[str, Any]:
    """One action as ``POST /v1/batches`` takes it: a submission body without the
    batch-level ``timeout_secs`` / ``callback_url``, empty fields left out."""
    return {k: v for k, v in action.items() if v is not None and k not in ("timeout_secs", "callback_url")}


def _batch_failed(actions: List[Any], exc: BaseException) -> Batch:
    reason = f"client error ({_describe_exc(exc)})"
    return Batch(id=None, status="error", approvals=[_fail(reason) for _ in actions])


class Client(_Base):
    """Blocking client. ``request_approval`` never raises: failures are denials."""

    def request_approval(
        self,
        code: str,
        language: Optional[str] = None,
        title: Optional[str] = None,
        context: Any = None,
        timeout_secs: Optional[float] = None,
        *,
        requester_slack_id: Optional[str] = None,
        required_approvals: Optional[int] = None,
        idempotency_key: Optional[str] = None,
    ) -> Decision:
        """Ask a human in Slack; block until approved, denied or expired."""
        try:
            flow = self._flow(
                code, language, title, context, timeout_secs, requester_slack_id, required_approvals, idempotency_key
            )
            with httpx.Client(**self._client_kwargs()) as http:
                action = next(flow)
                while True:
                    if isinstance(action, Sleep):
                        time.sleep(action.seconds)
                        action = flow.send(None)
                        continue
                    try:
                        r = http.request(action.method, action.path, **self._request_kwargs(action))
                        outcome: Any = Reply(r.status_code, r.headers, r.content)
                    except (httpx.HTTPError, OSError) as exc:
                        outcome = exc
                    action = flow.send(outcome)
        except StopIteration as stop:
            return stop.value
        except Exception as exc:  # fail closed, never raise into the caller
            return _fail(f"client error ({_describe_exc(exc)})")


    def request_batch(
        self,
        actions: List[Dict[str, Any]],
        *,
        callback_url: Optional[str] = None,
        wait: bool = True,
        timeout_secs: Optional[float] = None,
        title: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Batch:
        """Submit 1..=20 actions (``{"code", "language"?, "title"?, "context"?}``) as one
        batch: one card, one decision per action. With ``wait``, block until every item
        is decided. Never raises: a failure is a ``Batch`` with ``status == "error"``
        whose items are denials saying why."""
        try:
            flow = self._batch_flow(actions, callback_url, wait, timeout_secs, title, idempotency_key)
            with httpx.Client(**self._client_kwargs()) as http:
                action = next(flow)
                while True:
                    if isinstance(action, Sleep):
                        time.sleep(action.seconds)
                        action = flow.send(None)
                        continue
                    try:
                        r = http.request(action.method, action.path, **self._request_kwargs(action))
                        outcome: Any = Reply(r.status_code, r.headers, r.content)
                    except (httpx.HTTPError, OSError) as exc:
                        outcome = exc
                    action = flow.send(outcome)
        except StopIteration as stop:
            return stop.value
        except Exception as exc:
            return _batch_failed(actions, exc)


class AsyncClient(_Base):
    """asyncio client with the same API; ``request_approval`` is a coroutine and never raises."""

    async def request_approval(
        self,
        code: str,
        language: Optional[str] = None,
        title: Optional[str] = None,
        context: Any = None,
        timeout_secs: Optional[float] = None,
        *,
        requester_slack_id: Optional[str] = None,
        required_approvals: Optional[int] = None,
        idempotency_key: Optional[str] = None,
    ) -> Decision:
        """Ask a human in Slack; wait (without blocking the loop) for the decision."""
        try:
            flow = self._flow(
                code, language, title, context, timeout_secs, requester_slack_id, required_approvals, idempotency_key
            )
            async with httpx.AsyncClient(**self._client_kwargs()) as http:
                action = next(flow)
                while True:
                    if isinstance(action, Sleep):
                        await asyncio.sleep(action.seconds)
                        action = flow.send(None)
                        continue
                    try:
                        r = await http.request(action.method, action.path, **self._request_kwargs(action))
                        outcome: Any = Reply(r.status_code, r.headers, r.content)
                    except (httpx.HTTPError, OSError) as exc:
                        outcome = exc
                    action = flow.send(outcome)
        except StopIteration as stop:
            return stop.value
        except Exception as exc:  # fail closed; CancelledError (BaseException) still propagates
            return _fail(f"client error ({_describe_exc(exc)})")

    async def request_batch(
        self,
        actions: List[Dict[str, Any]],
        *,
        callback_url: Optional[str] = None,
        wait: bool = True,
        timeout_secs: Optional[float] = None,
        title: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Batch:
        """Async twin of :meth:`Client.request_batch`; never raises (cancellation aside)."""
        try:
            flow = self._batch_flow(actions, callback_url, wait, timeout_secs, title, idempotency_key)
            async with httpx.AsyncClient(**self._client_kwargs()) as http:
                action = next(flow)
                while True:
                    if isinstance(action, Sleep):
                        await asyncio.sleep(action.seconds)
                        action = flow.send(None)
                        continue
                    try:
                        r = await http.request(action.method, action.path, **self._request_kwargs(action))
                        outcome: Any = Reply(r.status_code, r.headers, r.content)
                    except (httpx.HTTPError, OSError) as exc:
                        outcome = exc
                    action = flow.send(outcome)
        except StopIteration as stop:
            return stop.value
        except Exception as exc:
            return _batch_failed(actions, exc)
