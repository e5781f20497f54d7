"""I/O-free core of the greenlight client.

The whole submit / re-attach / long-poll protocol lives in one generator,
``approval_flow``. It yields :class:`HttpCall` and :class:`Sleep` actions and is
driven by a sync driver (``Client``) or an async driver (``AsyncClient``), so
both behave identically. Every failure ends in a denied :class:`Decision`
(fail closed); the flow itself never raises.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, Generator, Mapping, Optional, Union

log = logging.getLogger("greenlight_client")

#: Longest long-poll the client asks for (the server allows up to 60 s; staying
#: well below common proxy idle timeouts keeps connections healthy).
MAX_WAIT_SECS = 25

FINAL_STATUSES = ("approved", "denied", "expired", "cancelled")


@dataclass(frozen=True)
class Decision:
    """The outcome of an approval request.

    ``approved`` is True only when the server said ``status == "approved"``.
    ``status`` is the server's status, or ``"error"`` when the client had to
    give up (unreachable service, bad token, malformed answer, …); ``reason``
    then says what went wrong.
    """

    approved: bool
    reason: str
    status: str
    id: Optional[str] = None
    decided_by: Optional[str] = None
    approval: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Settings:
    base_url: str
    token: str
    agent_name: Optional[str] = None
    #: How long to keep retrying the initial submission while the service is
    #: unreachable or answers 5xx/429.
    submit_retry_secs: float = 15.0
    #: Extra time after the request's ``expires_at`` before the client gives up.
    grace_secs: float = 5.0
    #: Longest long-poll per GET (capped at MAX_WAIT_SECS).
    poll_wait_secs: int = MAX_WAIT_SECS
    initial_backoff_secs: float = 0.25
    max_backoff_secs: float = 4.0
    #: Timeout for one non-long-poll HTTP exchange.
    request_timeout_secs: float = 30.0
    connect_timeout_secs: float = 5.0


@dataclass(frozen=True)
class HttpCall:
    method: str
    path: str
    params: Optional[Dict[str, Any]] = None
    json_body: Any = None
    headers: Optional[Dict[str, str]] = None
    timeout: float = 30.0


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


Action = Union[HttpCall, Sleep]
Outcome = Union[Reply, BaseException, None]
Flow = Generator[Action, Outcome, Decision]


class _Malformed(Exception):
    pass


def _fail(reason: str, approval_id: Optional[str] = None) -> Decision:
    text = f"greenlight: {reason}; denied by default (fail closed)"
    log.warning("%s", text)
    return Decision(approved=False, reason=text, status="error", id=approval_id)


def _describe_exc(exc: BaseException) -> str:
    msg = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


def _error_text(reply: Reply) -> str:
    """Render a server error body (``{"error": {"code", "message"}}``) for a reason."""
    try:
        data = json.loads(reply.body.decode("utf-8"))
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            code = err.get("code")
            message = err.get("message")
            parts = [str(p) for p in (code, message) if p]
            if parts:
                return f"HTTP {reply.status} " + ": ".join(parts)
    except Exception:
        pass
    snippet = reply.body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {reply.status}" + (f" {snippet!r}" if snippet else "")


def _time_to_live(approval: Dict[str, Any], body: Dict[str, Any]) -> float:
    """Seconds the request lives, on the server's own clock (``expires_at -
    created_at``), so a skewed local clock cannot cut the wait short or stretch it.
    Falls back to the requested ``timeout_secs``, then to an hour."""
    created = _parse_time(approval.get("created_at"))
    expires = _parse_time(approval.get("expires_at"))
    if created is not None and expires is not None and expires >= created:
        return expires - created
    if expires is not None:
        return max(0.0, expires - time.time())
    if "timeout_secs" in body:
        return float(body["timeout_secs"])
    return 3600.0


def _parse_time(value: Any) -> Optional[float]:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python < 3.11 only accepts 0, 3 or 6 fractional digits.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = f"{head}.{(digits + '000000')[:6]}{rest[i:]}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.timestamp()


def parse_approval(reply: Reply, expected_id: Optional[str] = None) -> Dict[str, Any]:
    """Parse and validate an approval object; raise ``_Malformed`` if it is not one."""
    try:
        data = json.loads(reply.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        snippet = reply.body[:120].decode("utf-8", "replace")
        raise _Malformed(f"HTTP {reply.status} body is not JSON: {snippet!r}") from None
    if not isinstance(data, dict):
        raise _Malformed(f"HTTP {reply.status} body is not a JSON object")
    approval_id = data.get("id")
    status = data.get("status")
    if not isinstance(approval_id, str) or not approval_id:
        raise _Malformed(f"HTTP {reply.status} approval object has no string 'id'")
    if status not in ("pending",) + FINAL_STATUSES:
        raise _Malformed(f"HTTP {reply.status} approval object has unknown status {status!r}")
    if expected_id is not None and approval_id != expected_id:
        raise _Malformed(f"asked for approval {expected_id} but got {approval_id}")
    return data


def to_decision(data: Dict[str, Any]) -> Decision:
    status = data["status"]
    approved = status == "approved" and data.get("approved") is True
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        reason = f"request {status}"
    decided_by = data.get("decided_by")
    if decided_by is not None and not isinstance(decided_by, str):
        decided_by = str(decided_by)
    if status == "approved" and not approved:
        # Inconsistent answer: never treat it as an approval.
        return Decision(
            approved=False,
            reason=f"greenlight: inconsistent answer (status approved but approved={data.get('approved')!r}); "
            "denied by default (fail closed)",
            status="error",
            id=data.get("id"),
            decided_by=decided_by,
            approval=data,
        )
    return Decision(
        approved=approved,
        reason=reason,
        status=status,
        id=data.get("id"),
        decided_by=decided_by,
        approval=data,
    )


def _is_transient(status: int) -> bool:
    return status == 429 or status == 408 or 500 <= status <= 599


def _retry_after(reply: Reply) -> Optional[float]:
    for key, value in reply.headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def build_body(
    code: str,
    language: Optional[str],
    title: Optional[str],
    context: Any,
    timeout_secs: Optional[float],
    requester_slack_id: Optional[str] = None,
    required_approvals: Optional[int] = None,
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"code": code}
    if language:
        body["language"] = language
    if title:
        body["title"] = title
    if context is not None:
        body["context"] = context
    if timeout_secs is not None:
        body["timeout_secs"] = max(1, int(math.ceil(float(timeout_secs))))
    if requester_slack_id:
        body["requester_slack_id"] = requester_slack_id
    if required_approvals is not None:
        body["required_approvals"] = int(required_approvals)
    return body


def approval_flow(
    settings: Settings,
    body: Dict[str, Any],
    *,
    clock=time.monotonic,
    idempotency_key: Optional[str] = None,
) -> Flow:
    """Submit an approval request and wait for its decision.

    Yields actions for a driver; returns a :class:`Decision`. Never raises
    (except GeneratorExit / cancellation from the driver).
    """
    key = idempotency_key or str(uuid.uuid4())
    start = clock()
    auth_problem = "the API token was rejected"

    # ---- 1. submit (retried with the same Idempotency-Key) -------------------
    submit_deadline = start + max(0.0, settings.submit_retry_secs)
    backoff = settings.initial_backoff_secs
    attempts = 0
    approval: Optional[Dict[str, Any]] = None
    while approval is None:
        attempts += 1
        outcome = yield HttpCall(
            "POST",
            "/v1/approvals",
            json_body=body,
            headers={"Idempotency-Key": key},
            timeout=settings.request_timeout_secs,
        )
        problem: Optional[str] = None
        delay = backoff
        if isinstance(outcome, Reply):
            if outcome.status in (200, 201, 202):
                try:
                    approval = parse_approval(outcome)
                except _Malformed as exc:
                    return _fail(f"malformed answer to the submission ({exc})")
                break
            if outcome.status in (401, 403):
                return _fail(f"{auth_problem} ({_error_text(outcome)})")
            if _is_transient(outcome.status):
                problem = f"service error ({_error_text(outcome)})"
                ra = _retry_after(outcome)
                if ra is not None:
                    delay = max(delay, ra)
            else:
                return _fail(f"request rejected ({_error_text(outcome)})")
        elif isinstance(outcome, BaseException):
            problem = _describe_exc(outcome)
        else:  # pragma: no cover - driver bug
            problem = "no answer"
        now = clock()
        if now + delay > submit_deadline:
            return _fail(
                f"service unreachable at {settings.base_url} ({problem}; "
                f"gave up after {attempts} attempt(s) in {now - start:.1f}s)"
            )
        log.info("greenlight: submission failed (%s); retrying in %.2fs", problem, delay)
        yield Sleep(delay)
        backoff = min(backoff * 2, settings.max_backoff_secs)

    approval_id = approval["id"]
    if approval["status"] != "pending":
        return to_decision(approval)

    # ---- 2. deadline from the server's expiry (clock-skew free) --------------
    ttl = _time_to_live(approval, body)
    deadline = start + ttl + max(0.0, settings.grace_secs)
    expires_seen = approval.get("expires_at")
    expires_text = expires_seen or f"{ttl:.0f}s after submission"

    # ---- 3. re-attach by id with long-polls ----------------------------------
    backoff = settings.initial_backoff_secs
    last_problem: Optional[str] = None
    max_wait = max(1, min(MAX_WAIT_SECS, int(settings.poll_wait_secs)))
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            extra = f"; last problem: {last_problem}" if last_problem else ""
            return _fail(
                f"no decision for approval {approval_id} before it expired at {expires_text}{extra}",
                approval_id,
            )
        wait = max(1, min(max_wait, int(remaining)))
        asked_at = clock()
        outcome = yield HttpCall(
            "GET",
            f"/v1/approvals/{approval_id}",
            params={"wait": wait},
            timeout=wait + settings.request_timeout_secs,
        )
        problem = None
        delay = backoff
        if isinstance(outcome, Reply):
            if outcome.status == 200:
                try:
                    data = parse_approval(outcome, expected_id=approval_id)
                except _Malformed as exc:
                    return _fail(f"malformed answer while waiting ({exc})", approval_id)
                if data["status"] != "pending":
                    return to_decision(data)
                if data.get("expires_at") and data.get("expires_at") != expires_seen:
                    # An escalation moved the deadline: wait as long as it lives.
                    expires_seen = expires_text = data["expires_at"]
                    deadline = start + _time_to_live(data, body) + max(0.0, settings.grace_secs)
                backoff = settings.initial_backoff_secs
                last_problem = None
                if clock() - asked_at < 0.5:
                    # The server answered "pending" at once; don't hammer it.
                    yield Sleep(min(0.5, max(0.0, deadline - clock())))
                continue
            if outcome.status in (401, 403):
                return _fail(f"{auth_problem} while waiting ({_error_text(outcome)})", approval_id)
            if outcome.status == 404:
                return _fail(f"approval {approval_id} is unknown to the service ({_error_text(outcome)})", approval_id)
            if _is_transient(outcome.status):
                problem = f"service error ({_error_text(outcome)})"
                ra = _retry_after(outcome)
                if ra is not None:
                    delay = max(delay, ra)
            else:
                return _fail(f"unexpected answer while waiting ({_error_text(outcome)})", approval_id)
        elif isinstance(outcome, BaseException):
            problem = _describe_exc(outcome)
        else:  # pragma: no cover - driver bug
            problem = "no answer"
        last_problem = problem
        log.info("greenlight: waiting for %s failed (%s); retrying in %.2fs", approval_id, problem, delay)
        yield Sleep(max(0.0, min(delay, deadline - clock())))
        backoff = min(backoff * 2, settings.max_backoff_secs)
