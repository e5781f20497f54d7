"""I/O-free pieces of the calls that read or manage state rather than ask for a
decision: ``GET /v1/batches/{id}``, ``GET /v1/grants`` and ``DELETE /v1/grants/{id}``.

Unlike ``request_approval`` (which never raises, because its answer gates an action),
these raise :class:`GreenlightError` when the service refuses or cannot be reached:
their caller asked a question, and an empty answer would read as "nothing there".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ._batch import Batch, _parse as _parse_batch
from ._core import Reply, _error_text

__all__ = ["Grant", "GreenlightError"]

# The most one ``GET /v1/batches/{id}?wait=N`` may hold (the server's limit).
SERVER_MAX_WAIT_SECS = 60

_CSRF = re.compile(r'name="csrf"\s+value="([^"]+)"')


class GreenlightError(Exception):
    """The service refused a call (``status``, ``code`` and ``message`` from its
    ``{"error": {"code", "message"}}`` body), or could not be reached (``status`` 0,
    ``code`` ``"unreachable"``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Grant:
    """A standing grant ("Approve for 30 min"), as ``GET /v1/grants`` shows it.

    ``action_key`` is the normalised code (``match_kind == "exact"``) or the command
    prefix (``"command_prefix"``) it covers; times are RFC 3339 strings, UTC;
    ``revoked_at`` / ``revoked_by`` are set once it was revoked."""

    id: str
    agent: str
    rule: str
    match_kind: str
    action_key: str
    granted_by: str
    approval_id: str
    created_at: str
    expires_at: str
    language: Optional[str] = None
    revoked_at: Optional[str] = None
    revoked_by: Optional[str] = None
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)


def error_from(reply: Reply) -> GreenlightError:
    """The :class:`GreenlightError` for a non-2xx ``reply``."""
    code, message = "http_error", _error_text(reply)
    try:
        err = json.loads(reply.body.decode("utf-8")).get("error")
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            code, message = err["code"], str(err.get("message") or "")
    except Exception:
        pass
    return GreenlightError(reply.status, code, message)


def unreachable(base_url: str, exc: BaseException) -> GreenlightError:
    return GreenlightError(0, "unreachable", f"greenlight at {base_url} could not be reached ({type(exc).__name__}: {exc})")


def batch_wait(wait: float) -> int:
    """``wait`` seconds as the query parameter: a whole number from 0 to 60."""
    return max(0, min(SERVER_MAX_WAIT_SECS, int(wait)))


def parse_batch(reply: Reply) -> Batch:
    """A ``GET /v1/batches/{id}`` answer (200) as a :class:`Batch`."""
    if reply.status != 200:
        raise error_from(reply)
    try:
        data = json.loads(reply.body.decode("utf-8"))
        count = len(data.get("approvals") or []) if isinstance(data, dict) else 0
        return _parse_batch(reply, count)
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise GreenlightError(reply.status, "malformed_answer", f"not a batch: {exc}") from exc


def _grant(obj: Any) -> Grant:
    if not isinstance(obj, dict):
        raise ValueError("a grant is not an object")
    text = {k: obj.get(k) for k in ("id", "agent", "rule", "match_kind", "action_key", "granted_by", "approval_id", "created_at", "expires_at")}
    missing = [k for k, v in text.items() if not isinstance(v, str)]
    if missing:
        raise ValueError(f"a grant lacks {', '.join(missing)}")
    optional = {k: obj.get(k) if isinstance(obj.get(k), str) else None for k in ("language", "revoked_at", "revoked_by")}
    return Grant(**text, **optional, raw=obj)


def parse_grants(reply: Reply) -> List[Grant]:
    """A ``GET /v1/grants`` answer (200) as a list of :class:`Grant`."""
    if reply.status != 200:
        raise error_from(reply)
    try:
        items = json.loads(reply.body.decode("utf-8")).get("grants")
        if not isinstance(items, list):
            raise ValueError("no grants list")
        return [_grant(item) for item in items]
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise GreenlightError(reply.status, "malformed_answer", f"not a grant list: {exc}") from exc


def parse_revoked(reply: Reply) -> Grant:
    """A ``DELETE /v1/grants/{id}`` answer (200) as the revoked :class:`Grant`."""
    if reply.status != 200:
        raise error_from(reply)
    try:
        return _grant(json.loads(reply.body.decode("utf-8")).get("grant"))
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise GreenlightError(reply.status, "malformed_answer", f"not a grant: {exc}") from exc


def csrf_of(page: Reply) -> str:
    """The sign-in form's CSRF token, from ``GET /web/signin``."""
    if page.status != 200:
        raise error_from(page)
    match = _CSRF.search(page.body.decode("utf-8", "replace"))
    if not match:
        raise GreenlightError(page.status, "malformed_answer", "the sign-in page has no csrf field")
    return match.group(1)


def signed_in(reply: Reply) -> None:
    """Checks the answer to ``POST /web/signin``: a redirect (303) on success."""
    if reply.status in (302, 303):
        return
    if reply.status == 401:
        raise GreenlightError(401, "unauthorized", "that secret is not a reviewer's secret (GREENLIGHT_REVIEWERS)")
    raise GreenlightError(reply.status, "sign_in_failed", f"signing in to the review page failed ({_error_text(reply)})")

