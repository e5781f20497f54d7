"""Sync and async greenlight clients (thin drivers around ``_core.approval_flow``)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, Dict, List, Optional

from urllib.parse import quote

import httpx

from . import __version__
from ._batch import Batch, batch_flow
from ._manage import (
    Grant,
    GreenlightError,
    batch_wait,
    csrf_of,
    parse_batch,
    parse_grants,
    parse_revoked,
    signed_in,
    unreachable,
)
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

__all__ = ["Client", "AsyncClient", "Decision", "Batch", "Grant", "GreenlightError"]

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

    def _reviewer_kwargs(self) -> Dict[str, Any]:
        """An HTTP client for a reviewer's calls: no bearer token (the server refuses any
        ``Authorization`` header on a person's call), redirects seen, not followed."""
        kwargs = self._client_kwargs()
        kwargs["headers"] = {"User-Agent": _USER_AGENT}
        return kwargs

    def _timeout(self, extra: float = 0.0) -> httpx.Timeout:
        return httpx.Timeout(self.settings.request_timeout_secs + extra, connect=self.settings.connect_timeout_secs)

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


def _reply(r: httpx.Response) -> Reply:
    return Reply(r.status_code, r.headers, r.content)


def _grant_path(grant_id: str) -> str:
    return f"/v1/grants/{quote(str(grant_id), safe='')}"


def _batch_path(batch_id: str) -> str:
    return f"/v1/batches/{quote(str(batch_id), safe='')}"


def _batch_action(action: Dict[str, Any]) -> Dict[str, Any]:
    """One action as ``POST /v1/batches`` takes it: a submission body without the
    batch-level ``timeout_secs`` / ``callback_url``, empty fields left out."""
    return {k: v for k, v in action.items() if v is not None and k not in ("timeout_secs", "callback_url")}


def _batch_failed(actions: List[Any], exc: BaseException) -> Batch:
    reason = f"client error ({_describe_exc(exc)})"
    return Batch(id=None, status="error", approvals=[_fail(reason) for _ in actions])


class Client(_Base):
    """Blocking client. ``request_approval`` never raises: failures are denials."""

    def _drive(self, flow: Any) -> Any:
        """Runs a protocol flow (``_core``'s generators: they yield an ``HttpCall`` or
        a ``Sleep`` and are sent the ``Reply`` or the exception) to its return value.
        Errors other than HTTP/OS ones propagate."""
        with httpx.Client(**self._client_kwargs()) as http:
            try:
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
            return self._drive(flow)
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
            return self._drive(flow)
        except Exception as exc:
            return _batch_failed(actions, exc)

    def get_batch(self, batch_id: str, *, wait: float = 0) -> Batch:
        """``GET /v1/batches/{id}``: the batch as it is now or, with ``wait`` (seconds, at
        most 60), as soon as every item is decided within that time. One call: its
        ``status`` is ``"pending"`` or ``"decided"``. Raises :class:`GreenlightError` when
        refused (404 for another agent's or an unknown batch) or unreachable."""
        seconds = batch_wait(wait)
        try:
            with httpx.Client(**self._client_kwargs()) as http:
                r = http.get(_batch_path(batch_id), params={"wait": seconds}, timeout=self._timeout(seconds))
        except (httpx.HTTPError, OSError) as exc:
            raise unreachable(self.settings.base_url, exc) from exc
        return parse_batch(_reply(r))

    def list_grants(self, *, all: bool = False) -> List[Grant]:
        """``GET /v1/grants``: this agent's standing grants, newest first; live ones only
        unless ``all`` (then revoked and expired ones too). Raises
        :class:`GreenlightError`."""
        try:
            with httpx.Client(**self._client_kwargs()) as http:
                r = http.get("/v1/grants", params={"all": "true" if all else "false"}, timeout=self._timeout())
        except (httpx.HTTPError, OSError) as exc:
            raise unreachable(self.settings.base_url, exc) from exc
        return parse_grants(_reply(r))

    def revoke_grant(self, grant_id: str, reviewer_secret: str) -> Grant:
        """``DELETE /v1/grants/{id}`` as a person: signs in to the review page with
        ``reviewer_secret`` (a reviewer's secret from ``GREENLIGHT_REVIEWERS``, who made
        the grant or is an approver of its rule) and revokes the grant with that session.
        The agent's token is never sent (agents cannot revoke grants). Returns the
        revoked grant (also when it was revoked before). Raises :class:`GreenlightError`:
        401 for a wrong secret, 403 for a reviewer without a say, 404 for an unknown id."""
        try:
            with httpx.Client(**self._reviewer_kwargs()) as http:
                csrf = csrf_of(_reply(http.get("/web/signin", timeout=self._timeout())))
                signed_in(_reply(http.post("/web/signin", data={"csrf": csrf, "secret": reviewer_secret}, timeout=self._timeout())))
                session = http.cookies.get("gl_session")
                r = http.delete(_grant_path(grant_id), headers={"Cookie": f"gl_session={session}"}, timeout=self._timeout())
        except (httpx.HTTPError, OSError) as exc:
            raise unreachable(self.settings.base_url, exc) from exc
        return parse_revoked(_reply(r))


class AsyncClient(_Base):
    """asyncio client with the same API; ``request_approval`` is a coroutine and never raises."""

    async def _drive(self, flow: Any) -> Any:
        """Runs a protocol flow (``_core``'s generators: they yield an ``HttpCall`` or
        a ``Sleep`` and are sent the ``Reply`` or the exception) to its return value,
        without blocking the loop. Errors other than HTTP/OS ones propagate."""
        async with httpx.AsyncClient(**self._client_kwargs()) as http:
            try:
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
            return await self._drive(flow)
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
            return await self._drive(flow)
        except Exception as exc:
            return _batch_failed(actions, exc)

    async def get_batch(self, batch_id: str, *, wait: float = 0) -> Batch:
        """Async twin of :meth:`Client.get_batch`."""
        seconds = batch_wait(wait)
        try:
            async with httpx.AsyncClient(**self._client_kwargs()) as http:
                r = await http.get(_batch_path(batch_id), params={"wait": seconds}, timeout=self._timeout(seconds))
        except (httpx.HTTPError, OSError) as exc:
            raise unreachable(self.settings.base_url, exc) from exc
        return parse_batch(_reply(r))

    async def list_grants(self, *, all: bool = False) -> List[Grant]:
        """Async twin of :meth:`Client.list_grants`."""
        try:
            async with httpx.AsyncClient(**self._client_kwargs()) as http:
                r = await http.get("/v1/grants", params={"all": "true" if all else "false"}, timeout=self._timeout())
        except (httpx.HTTPError, OSError) as exc:
            raise unreachable(self.settings.base_url, exc) from exc
        return parse_grants(_reply(r))

    async def revoke_grant(self, grant_id: str, reviewer_secret: str) -> Grant:
        """Async twin of :meth:`Client.revoke_grant`."""
        try:
            async with httpx.AsyncClient(**self._reviewer_kwargs()) as http:
                csrf = csrf_of(_reply(await http.get("/web/signin", timeout=self._timeout())))
                signed_in(_reply(await http.post("/web/signin", data={"csrf": csrf, "secret": reviewer_secret}, timeout=self._timeout())))
                session = http.cookies.get("gl_session")
                r = await http.delete(_grant_path(grant_id), headers={"Cookie": f"gl_session={session}"}, timeout=self._timeout())
        except (httpx.HTTPError, OSError) as exc:
            raise unreachable(self.settings.base_url, exc) from exc
        return parse_revoked(_reply(r))
