"""I/O-free batch protocol: ``POST /v1/batches`` then long-polls of
``GET /v1/batches/{id}?wait=N`` until every item is decided.

Like ``_core.approval_flow`` it yields :class:`HttpCall` / :class:`Sleep` actions for
the sync and async drivers in ``client.py`` and never raises: a failure is a
:class:`Batch` with ``status == "error"`` whose items are fail-closed denials saying why.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ._core import (
    MAX_WAIT_SECS,
    Decision,
    Flow,
    HttpCall,
    Reply,
    Settings,
    Sleep,
    _describe_exc,
    _error_text,
    _fail,
    _is_transient,
    _parse_time,
    to_decision,
)

__all__ = ["Batch", "batch_flow"]

_ITEM_STATUSES = ("pending", "approved", "denied", "expired", "cancelled")


@dataclass(frozen=True)
class Batch:
    """A batch of requests: ``id`` (None when it could not be submitted), ``status``
    (``"pending"``, ``"decided"``, or ``"error"`` for a client-side failure) and one
    :class:`Decision` per action, in the order of the actions (a pending item's
    decision has ``status == "pending"`` and ``approved == False``)."""

    id: Optional[str]
    status: str
    approvals: List[Decision]
    title: Optional[str] = None
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)


def _failed(reason: str, count: int, batch_id: Optional[str] = None) -> Batch:
    return Batch(id=batch_id, status="error", approvals=[_fail(reason) for _ in range(count)])


def _parse(reply: Reply, count: int) -> Batch:
    data = json.loads(reply.body.decode("utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or data.get("status") not in ("pending", "decided"):
        raise ValueError("not a batch object")
    items = data.get("approvals")
    if not isinstance(items, list) or len(items) != count:
        raise ValueError(f"batch holds {len(items) if isinstance(items, list) else 'no'} items, expected {count}")
    decisions = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or item.get("status") not in _ITEM_STATUSES:
            raise ValueError("batch item is not an approval object")
        decisions.append(to_decision(item))
    title = data.get("title") if isinstance(data.get("title"), str) else None
    return Batch(id=data["id"], status=data["status"], approvals=decisions, title=title, raw=data)


def _deadline(start: float, batch: Batch, settings: Settings, body: Dict[str, Any]) -> float:
    raw = (batch.raw or {}).get("approvals") or [{}]
    created, expires = _parse_time(raw[0].get("created_at")), _parse_time(raw[0].get("expires_at"))
    if created is not None and expires is not None and expires >= created:
        ttl = expires - created
    else:
        ttl = float(body.get("timeout_secs") or 3600)
    return start + ttl + max(0.0, settings.grace_secs)


def batch_flow(
    settings: Settings,
    body: Dict[str, Any],
    *,
    wait: bool,
    clock=time.monotonic,
    idempotency_key: Optional[str] = None,
) -> Flow:
    """Submit a batch (``body``: ``{"actions": [...], ...}``) and, with ``wait``,
    long-poll until every item is decided or the items' expiry (plus grace) passes."""
    count = len(body.get("actions") or [])
    key = idempotency_key or str(uuid.uuid4())
    start = clock()
    backoff = settings.initial_backoff_secs
    batch: Optional[Batch] = None
    while batch is None:
        outcome = yield HttpCall("POST", "/v1/batches", json_body=body, headers={"Idempotency-Key": key}, timeout=settings.request_timeout_secs)
        if isinstance(outcome, Reply):
            if outcome.status in (200, 201, 202):
                try:
                    batch = _parse(outcome, count)
                except (ValueError, UnicodeDecodeError) as exc:
                    return _failed(f"malformed answer to the batch submission ({exc})", count)
                break
            if not _is_transient(outcome.status):
                what = "the API token was rejected" if outcome.status in (401, 403) else "batch rejected"
                return _failed(f"{what} ({_error_text(outcome)})", count)
            problem = f"service error ({_error_text(outcome)})"
        else:
            problem = _describe_exc(outcome) if isinstance(outcome, BaseException) else "no answer"
        if clock() + backoff > start + settings.submit_retry_secs:
            return _failed(f"service unreachable at {settings.base_url} ({problem})", count)
        yield Sleep(backoff)
        backoff = min(backoff * 2, settings.max_backoff_secs)

    if not wait or batch.status == "decided":
        return batch
    deadline = _deadline(start, batch, settings, body)
    backoff = settings.initial_backoff_secs
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return Batch(
                id=batch.id,
                status="error",
                approvals=[d if d.status != "pending" else _fail(f"no decision for {d.id} before it expired", d.id) for d in batch.approvals],
                title=batch.title,
            )
        poll = max(1, min(MAX_WAIT_SECS, int(settings.poll_wait_secs), int(remaining)))
        outcome = yield HttpCall("GET", f"/v1/batches/{batch.id}", params={"wait": poll}, timeout=poll + settings.request_timeout_secs)
        if isinstance(outcome, Reply) and outcome.status == 200:
            try:
                batch = _parse(outcome, count)
            except (ValueError, UnicodeDecodeError) as exc:
                return _failed(f"malformed answer while waiting for batch {batch.id} ({exc})", count, batch.id)
            if batch.status == "decided":
                return batch
            backoff = settings.initial_backoff_secs
            continue
        if isinstance(outcome, Reply) and not _is_transient(outcome.status):
            return _failed(f"unexpected answer while waiting for batch {batch.id} ({_error_text(outcome)})", count, batch.id)
        yield Sleep(max(0.0, min(backoff, deadline - clock())))
        backoff = min(backoff * 2, settings.max_backoff_secs)
