"""Stop and resume: read greenlight's decision callback into decisions.

greenlight POSTs a signed callback when a request (``approval.decided``) or a batch
(``batch.decided``) is decided; its ``data`` is exactly what ``GET /v1/approvals/{id}``
or ``GET /v1/batches/{id}`` returns. :func:`read_callback` verifies the signature
(:func:`greenlight_client.webhooks.verify`, Standard Webhooks) and turns the payload
into a :class:`Decided`: the request or batch id and one :class:`Decision` per action.
The framework adapters' ``resume_*`` functions take a :class:`Decided` to answer a
saved run.

A receiver must deduplicate by the ``webhook-id`` header (greenlight retries until it
gets a 2xx, so the same event can arrive twice) and answer 2xx only once it has
stored or applied the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping

from ._core import FINAL_STATUSES, Decision, _fail, to_decision

__all__ = ["Decided", "decided_from_payload", "read_callback"]


@dataclass(frozen=True)
class Decided:
    """A decided request or batch: ``kind`` is ``"approval"`` or ``"batch"``, ``id`` its
    greenlight id, ``decisions`` one per action in submission order."""

    kind: str
    id: str
    decisions: List[Decision]


def _decision(item: Any) -> Decision:
    """A final approval JSON as a Decision; anything else denies (fail closed)."""
    if not isinstance(item, dict) or item.get("status") not in FINAL_STATUSES or not isinstance(item.get("id"), str):
        return _fail(f"unreadable or undecided item in the callback ({str(item)[:120]!r})")
    return to_decision(item)


def decided_from_payload(payload: Mapping[str, Any]) -> Decided:
    """Read a verified callback payload (``{"type", "timestamp", "data"}``).

    Raises ``ValueError`` for a payload that is neither ``approval.decided`` nor
    ``batch.decided`` or has no id: there is nothing to resume then. Items that are
    not final decisions become denials.
    """
    kind = payload.get("type") if isinstance(payload, Mapping) else None
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ValueError("greenlight callback without data.id")
    if kind == "approval.decided":
        return Decided("approval", data["id"], [_decision(data)])
    if kind == "batch.decided":
        items = data.get("approvals")
        if not isinstance(items, list) or not items:
            raise ValueError(f"greenlight batch callback {data['id']} without approvals")
        return Decided("batch", data["id"], [_decision(i) for i in items])
    raise ValueError(f"unknown greenlight callback type {kind!r}")


def read_callback(secret: str, headers: Mapping[str, str], body: bytes) -> Decided:
    """Verify a callback request (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature`` headers; the raw body) with the agent's ``whsec_…`` secret
    and read it. Raises ``greenlight_client.webhooks.InvalidSignature`` for a bad or
    stale signature and ``ValueError`` for an unreadable payload: answer those 4xx and
    resume nothing."""
    from .webhooks import verify

    return decided_from_payload(verify(secret, headers, body))
