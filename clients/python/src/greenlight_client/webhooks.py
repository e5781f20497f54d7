"""Verify greenlight's signed decision callbacks (``callback_url``).

greenlight signs callbacks as Standard Webhooks specifies (headers ``webhook-id``,
``webhook-timestamp``, ``webhook-signature``; HMAC-SHA256 keyed with the agent's
``whsec_…`` secret from the server's ``GREENLIGHT_CALLBACK_SECRETS``). The check is
the maintained ``standardwebhooks`` package's: constant-time comparison, and
timestamps more than five minutes off refused, so a captured callback cannot be
replayed later.

>>> from greenlight_client import webhooks
>>> payload = webhooks.verify(secret, request.headers, raw_body)   # doctest: +SKIP
>>> payload["type"], payload["data"]["status"]                     # doctest: +SKIP
('approval.decided', 'denied')

Verify the raw body bytes, before any JSON parsing. greenlight retries until it gets
a 2xx, so the same event may arrive more than once: deduplicate by ``webhook-id``.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Union

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["InvalidSignature", "verify"]


class InvalidSignature(Exception):
    """The callback is not signed with this secret, is stale, or is not greenlight's."""


def verify(secret: str, headers: Mapping[str, str], body: Union[bytes, str]) -> Dict[str, Any]:
    """Check a callback and return its parsed payload.

    ``secret`` is the ``whsec_…`` secret, ``headers`` the request's headers (any
    mapping; names are matched case-insensitively), ``body`` the raw body. Returns
    ``{"type": "approval.decided" | "batch.decided", "timestamp": …, "data": …}``
    where ``data`` is what ``GET /v1/approvals/{id}`` (or ``GET /v1/batches/{id}``)
    returns. Raises :class:`InvalidSignature` for anything else, a bad secret included.
    """
    lowered = {str(k).lower(): str(v) for k, v in dict(headers).items()}
    raw = body.encode() if isinstance(body, str) else bytes(body)
    try:
        Webhook(secret).verify(raw, lowered)
    except WebhookVerificationError as error:
        raise InvalidSignature(str(error)) from None
    except Exception as error:  # a secret that is not base64, a header of the wrong type
        raise InvalidSignature(f"cannot verify: {type(error).__name__}") from None
    try:
        payload = json.loads(raw)
    except ValueError:
        raise InvalidSignature("the signed body is not JSON") from None
    if not isinstance(payload, dict) or "type" not in payload or "data" not in payload:
        raise InvalidSignature("the signed body is not a greenlight callback")
    return payload
