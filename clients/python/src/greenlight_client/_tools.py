"""Shared by the framework adapters: a framework's pending tool call -> a greenlight
request, and a turn's tool calls -> one decision each, failing closed.

Every framework adapter (``agent_framework``, ``openai_agents``, ``langgraph``,
``pydantic_ai``) reduces its own pending-approval type to :class:`ToolCall` and asks
through :func:`decide` / :func:`decide_sync`. Those never raise (cancellation aside):
a call they could not get an explicit approval for is a denied :class:`Decision`
whose reason says why, so an adapter only maps decisions back to the framework's
approve / reject types.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from ._core import Decision, _describe_exc, _fail

__all__ = ["ToolCall", "tool_action", "decide", "decide_sync", "deny_all", "denial_message", "batch_decisions"]

#: greenlight's limit of actions per batch (the batch contract allows 1..=20).
MAX_BATCH_ACTIONS = 20


@dataclass(frozen=True)
class ToolCall:
    """One tool call waiting for approval, framework-neutral.

    ``name``: the tool's name. ``arguments``: the call's arguments (a dict, or the
    JSON text the model produced). ``call_id``: the framework's id for the call,
    used only to map the answer back.
    """

    name: str
    arguments: Any = None
    call_id: Optional[str] = None


def _arguments_text(arguments: Any) -> str:
    """Arguments as pretty JSON for the reviewer; JSON text is re-indented, other
    text is shown as it is."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments
    try:
        return json.dumps(arguments, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(arguments)


def tool_action(
    call: ToolCall,
    *,
    framework: str,
    title: Optional[str] = None,
    context: Any = None,
    timeout_secs: Optional[float] = None,
) -> Dict[str, Any]:
    """The submission body (``POST /v1/approvals`` fields) for one tool call.

    ``code`` is ``<tool name>`` and the arguments as indented JSON, language
    ``json``, title ``"<framework> tool call: <tool name>"`` unless ``title`` is given.
    """
    body: Dict[str, Any] = {
        "code": f"{call.name}\n{_arguments_text(call.arguments)}",
        "language": "json",
        "title": title or f"{framework} tool call: {call.name}",
    }
    if context is not None:
        body["context"] = context
    if timeout_secs is not None:
        body["timeout_secs"] = timeout_secs
    return body


def deny_all(calls: Sequence[ToolCall], reason: str) -> List[Decision]:
    """One fail-closed denial per call, all with ``reason``."""
    return [_fail(reason) for _ in calls]


def _request_kwargs(action: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "code": action["code"],
        "language": action.get("language"),
        "title": action.get("title"),
        "context": action.get("context"),
        "timeout_secs": action.get("timeout_secs"),
    }


def _use_batch(client: Any, calls: Sequence[ToolCall]) -> bool:
    return len(calls) > 1 and callable(getattr(client, "request_batch", None))


def _chunks(calls: Sequence[ToolCall]) -> List[Sequence[ToolCall]]:
    return [calls[i : i + MAX_BATCH_ACTIONS] for i in range(0, len(calls), MAX_BATCH_ACTIONS)]


def batch_decisions(batch: Any, expected: int) -> List[Decision]:
    """One final :class:`Decision` per action of a ``Batch`` (``.approvals``, in the
    order of the actions); fails closed on a wrong count or an undecided item."""
    approvals = getattr(batch, "approvals", None)
    if not isinstance(approvals, list) or len(approvals) != expected:
        return [_fail("the batch answer does not hold one decision per tool call") for _ in range(expected)]
    out: List[Decision] = []
    for d in approvals:
        if not isinstance(d, Decision):
            out.append(_fail("unreadable decision in the batch answer"))
        elif d.status == "pending":
            out.append(_fail(f"no decision for {d.id} yet", d.id))
        else:
            out.append(d)
    return out


def _checked(decisions: Any, calls: Sequence[ToolCall]) -> List[Decision]:
    """Fail closed on an answer that is not one Decision per call."""
    if not isinstance(decisions, list) or len(decisions) != len(calls):
        return deny_all(calls, "answer does not hold one decision per tool call")
    return [d if isinstance(d, Decision) else _fail("unreadable decision") for d in decisions]


async def decide(
    client: Any,
    calls: Sequence[ToolCall],
    *,
    framework: str,
    title: Optional[str] = None,
    context: Any = None,
    timeout_secs: Optional[float] = None,
) -> List[Decision]:
    """Ask greenlight about each call (an :class:`~greenlight_client.AsyncClient`) and
    wait; returns one :class:`Decision` per call, in order. Never raises.

    Several calls go as one batch (``request_batch``: one card, one decision per call,
    at most 20 per batch) when the client has it; otherwise (one call, or an older
    client) each call is its own request, asked concurrently.
    """
    if not calls:
        return []
    try:
        if _use_batch(client, calls):
            decisions: List[Decision] = []
            for chunk in _chunks(calls):
                actions = [tool_action(c, framework=framework, title=title, context=context) for c in chunk]
                batch = await client.request_batch(actions, wait=True, timeout_secs=timeout_secs)
                decisions.extend(batch_decisions(batch, len(chunk)))
            return _checked(decisions, calls)
        actions = [tool_action(c, framework=framework, title=title, context=context, timeout_secs=timeout_secs) for c in calls]
        decisions = list(await asyncio.gather(*(client.request_approval(**_request_kwargs(a)) for a in actions)))
        return _checked(decisions, calls)
    except Exception as exc:  # fail closed; CancelledError (BaseException) still propagates
        return deny_all(calls, f"client error ({_describe_exc(exc)})")


def decide_sync(
    client: Any,
    calls: Sequence[ToolCall],
    *,
    framework: str,
    title: Optional[str] = None,
    context: Any = None,
    timeout_secs: Optional[float] = None,
) -> List[Decision]:
    """Blocking twin of :func:`decide` for a :class:`~greenlight_client.Client`: one
    batch per 20 calls when the client has ``request_batch``, else the calls are asked
    one after the other."""
    if not calls:
        return []
    try:
        if _use_batch(client, calls):
            decisions: List[Decision] = []
            for chunk in _chunks(calls):
                actions = [tool_action(c, framework=framework, title=title, context=context) for c in chunk]
                batch = client.request_batch(actions, wait=True, timeout_secs=timeout_secs)
                decisions.extend(batch_decisions(batch, len(chunk)))
            return _checked(decisions, calls)
        actions = [tool_action(c, framework=framework, title=title, context=context, timeout_secs=timeout_secs) for c in calls]
        return _checked([client.request_approval(**_request_kwargs(a)) for a in actions], calls)
    except Exception as exc:
        return deny_all(calls, f"client error ({_describe_exc(exc)})")


def denial_message(decision: Decision) -> str:
    """The text a model reads for a denied call, shaped like AutoGen's own denial:
    ``"The tool call was not approved. Reason: <reviewer's reason>"`` (or the
    client's explanation of why it failed closed)."""
    return f"The tool call was not approved. Reason: {decision.reason or 'request ' + decision.status}"
