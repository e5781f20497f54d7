"""AutoGen (autogen-agentchat 0.7.x) integration.

``slack_approval(...)`` returns a real ``async def`` usable as
``CodeExecutorAgent(approval_func=...)`` or ``MagenticOne(approval_func=...)``.
``slack_approval_sync(...)`` returns a plain function for sync-only callers.

autogen is imported lazily: this module (and the rest of the client) works
without autogen installed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from ._core import Decision, _describe_exc, _fail
from .client import AsyncClient, Client

__all__ = [
    "slack_approval",
    "slack_approval_sync",
    "split_code_blocks",
    "code_languages",
    "summarize_context",
    "request_fields",
]

DEFAULT_CONTEXT_MESSAGES = 5
DEFAULT_CONTEXT_CHARS = 500

_OPEN_FENCE = re.compile(r"^[ \t]{0,3}(`{3,})[ \t]*([^\s`]*)[^`]*$")


def split_code_blocks(code: str) -> Tuple[List[Tuple[str, str]], str]:
    """Split markdown text into fenced blocks.

    Returns ``([(language, body), ...], outside_text)`` where ``outside_text`` is
    everything not inside a fence. An unterminated fence runs to the end.
    """
    blocks: List[Tuple[str, str]] = []
    outside: List[str] = []
    lines = code.split("\n")
    i = 0
    while i < len(lines):
        m = _OPEN_FENCE.match(lines[i])
        if not m:
            outside.append(lines[i])
            i += 1
            continue
        fence, language = m.group(1), m.group(2)
        body: List[str] = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence) and set(stripped) == {"`"}:
                i += 1
                break
            body.append(lines[i])
            i += 1
        blocks.append((language, "\n".join(body)))
    return blocks, "\n".join(outside)


def code_languages(code: str) -> Optional[str]:
    """Languages of the fenced blocks in ``code``, in order, deduplicated, joined by ", "."""
    seen: List[str] = []
    for language, _ in split_code_blocks(code)[0]:
        lang = language.strip().lower()
        if lang and lang not in seen:
            seen.append(lang)
    return ", ".join(seen) if seen else None


_ROLES = {
    "SystemMessage": "system",
    "UserMessage": "user",
    "AssistantMessage": "assistant",
    "FunctionExecutionResultMessage": "function",
}


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if _get(part, "call_id") is not None and _get(part, "content") is not None:  # FunctionExecutionResult
        name = _get(part, "name") or "function"
        err = " (error)" if _get(part, "is_error") else ""
        return f"[result of {name}{err}: {_get(part, 'content')}]"
    if _get(part, "name") is not None and _get(part, "arguments") is not None:  # FunctionCall
        return f"[call {_get(part, 'name')}({_get(part, 'arguments')})]"
    if type(part).__name__ == "Image":
        return "[image]"
    if isinstance(part, dict):
        try:
            return json.dumps(part, default=str)
        except Exception:
            return str(part)
    return f"[{type(part).__name__}]"


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "\n".join(_part_text(p) for p in content)
    return _part_text(content)


def _truncate(text: str, limit: int) -> str:
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def summarize_context(
    messages: Optional[Sequence[Any]],
    max_messages: int = DEFAULT_CONTEXT_MESSAGES,
    max_chars: int = DEFAULT_CONTEXT_CHARS,
) -> List[Dict[str, str]]:
    """Summarise AutoGen LLM messages for a reviewer.

    Keeps the last ``max_messages`` messages as ``{"role": ..., "content": ...}``
    with content cut to ``max_chars`` characters. Accepts AutoGen message models
    (SystemMessage, UserMessage, AssistantMessage, FunctionExecutionResultMessage),
    their ``model_dump()`` dicts, or OpenAI-style ``{"role", "content"}`` dicts.
    """
    if not messages or max_messages <= 0:
        return []
    out: List[Dict[str, str]] = []
    for msg in list(messages)[-max_messages:]:
        kind = _get(msg, "type") or type(msg).__name__
        role = _get(msg, "role") or _ROLES.get(str(kind), str(kind))
        out.append({"role": str(role), "content": _truncate(_content_text(_get(msg, "content")), max_chars)})
    return out


def request_fields(
    request: Any,
    *,
    title: Optional[str] = None,
    context_messages: int = DEFAULT_CONTEXT_MESSAGES,
    context_chars: int = DEFAULT_CONTEXT_CHARS,
) -> Dict[str, Any]:
    """Map an AutoGen ``ApprovalRequest(code, context)`` to greenlight fields.

    ``code``: the body of the block when there is exactly one fenced block,
    otherwise AutoGen's text verbatim (fences included, so block boundaries stay
    visible). ``language``: the fence languages, e.g. ``"python, sh"``.
    """
    code = _get(request, "code")
    if not isinstance(code, str):
        code = "" if code is None else str(code)
    blocks, outside = split_code_blocks(code)
    language = code_languages(code)
    send = code
    if len(blocks) == 1 and not outside.strip() and blocks[0][1].strip():
        send = blocks[0][1].rstrip("\n")
    context = summarize_context(_get(request, "context"), context_messages, context_chars)
    if title is None:
        title = "AutoGen code execution" + (f" ({language})" if language else "")
    return {
        "code": send,
        "language": language,
        "title": title or None,
        "context": context or None,
    }


@dataclass
class _FallbackApprovalResponse:
    approved: bool
    reason: str


def _approval_response(approved: bool, reason: str) -> Any:
    try:
        from autogen_agentchat.agents import ApprovalResponse
    except Exception:  # autogen not installed / moved: still answer something sensible
        return _FallbackApprovalResponse(approved=approved, reason=reason)
    return ApprovalResponse(approved=approved, reason=reason)


def _to_response(decision: Decision) -> Any:
    return _approval_response(bool(decision.approved), decision.reason or decision.status)


_CLIENT_OPTIONS = (
    "submit_retry_secs",
    "grace_secs",
    "poll_wait_secs",
    "initial_backoff_secs",
    "max_backoff_secs",
    "request_timeout_secs",
    "connect_timeout_secs",
    "trust_env",
    "transport",
)


def slack_approval(
    base_url: str,
    token: str,
    *,
    timeout: Optional[float] = None,
    title: Optional[str] = None,
    requester_slack_id: Optional[str] = None,
    required_approvals: Optional[int] = None,
    context_messages: int = DEFAULT_CONTEXT_MESSAGES,
    context_chars: int = DEFAULT_CONTEXT_CHARS,
    **client_options: Any,
) -> Callable[[Any], Awaitable[Any]]:
    """Build an async AutoGen ``approval_func`` that asks a human in Slack.

    Args:
        base_url: greenlight's URL. token: an API token for it.
        timeout: seconds the reviewer has (``timeout_secs``); None = server default.
        title: Slack message title; default ``"AutoGen code execution (<languages>)"``.
        requester_slack_id / required_approvals: passed through to greenlight.
        context_messages / context_chars: how much model context the reviewer sees.
        **client_options: ``AsyncClient`` options (``submit_retry_secs``, ``grace_secs``, …).

    The returned coroutine function never raises (cancellation aside): any
    failure answers ``ApprovalResponse(approved=False, reason=<what went wrong>)``.
    """
    client, call_args = _prepare(
        AsyncClient,
        base_url,
        token,
        client_options,
        title=title,
        timeout=timeout,
        requester_slack_id=requester_slack_id,
        required_approvals=required_approvals,
        context_messages=context_messages,
        context_chars=context_chars,
    )

    async def greenlight_slack_approval(request: Any) -> Any:
        try:
            decision = await client.request_approval(**call_args(request))
        except Exception as exc:
            decision = _fail(f"client error ({_describe_exc(exc)})")
        return _to_response(decision)

    greenlight_slack_approval.client = client  # type: ignore[attr-defined]
    return greenlight_slack_approval


def _prepare(
    client_cls: Any,
    base_url: str,
    token: str,
    client_options: Dict[str, Any],
    **mapping: Any,
) -> Tuple[Any, Callable[[Any], Dict[str, Any]]]:
    """Checks the client options and builds the client and the request mapping: the
    one setup shared by the async and sync approval functions."""
    unknown = set(client_options) - set(_CLIENT_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return client_cls(base_url, token, **client_options), _call_args(**mapping)


def _call_args(
    *,
    title: Optional[str],
    timeout: Optional[float],
    requester_slack_id: Optional[str],
    required_approvals: Optional[int],
    context_messages: int,
    context_chars: int,
) -> Callable[[Any], Dict[str, Any]]:
    """Maps an AutoGen ``ApprovalRequest`` to ``request_approval`` keyword arguments;
    shared by the async and sync approval functions so they cannot drift apart."""

    def call_args(request: Any) -> Dict[str, Any]:
        fields = request_fields(
            request, title=title, context_messages=context_messages, context_chars=context_chars
        )
        return {
            "code": fields["code"],
            "language": fields["language"],
            "title": fields["title"],
            "context": fields["context"],
            "timeout_secs": timeout,
            "requester_slack_id": requester_slack_id,
            "required_approvals": required_approvals,
        }

    return call_args


def slack_approval_sync(
    base_url: str,
    token: str,
    *,
    timeout: Optional[float] = None,
    title: Optional[str] = None,
    requester_slack_id: Optional[str] = None,
    required_approvals: Optional[int] = None,
    context_messages: int = DEFAULT_CONTEXT_MESSAGES,
    context_chars: int = DEFAULT_CONTEXT_CHARS,
    **client_options: Any,
) -> Callable[[Any], Any]:
    """Like :func:`slack_approval` but returns a plain (blocking) function.

    Note: AutoGen runs a sync ``approval_func`` on its event loop, blocking it
    while the human decides; prefer :func:`slack_approval` with AutoGen.
    """
    client, call_args = _prepare(
        Client,
        base_url,
        token,
        client_options,
        title=title,
        timeout=timeout,
        requester_slack_id=requester_slack_id,
        required_approvals=required_approvals,
        context_messages=context_messages,
        context_chars=context_chars,
    )

    def greenlight_slack_approval_sync(request: Any) -> Any:
        try:
            decision = client.request_approval(**call_args(request))
        except Exception as exc:
            decision = _fail(f"client error ({_describe_exc(exc)})")
        return _to_response(decision)

    greenlight_slack_approval_sync.client = client  # type: ignore[attr-defined]
    return greenlight_slack_approval_sync
