"""Microsoft Agent Framework integration: greenlight answers function approval requests.

A tool declared ``@tool(approval_mode="always_require")`` does not run: the agent run
returns ``result.user_input_requests`` (``Content`` of type
``function_approval_request``), and the next ``agent.run`` on the same session takes
the answers (``request.to_function_approval_response(approved=…)``). This module asks
greenlight for those answers::

    from greenlight_client import AsyncClient
    from greenlight_client.agent_framework import run_with_approvals

    result = await run_with_approvals(AsyncClient(url, token), agent, "clean up build/")

or step by step (``approval_messages`` returns what to pass to the next run)::

    session = agent.create_session()
    result = await agent.run("…", session=session)
    while result.user_input_requests:
        result = await agent.run(await approval_messages(gl, result), session=session)

Workflows: an ``AgentExecutor`` whose agent wants approval emits ``request_info``
events carrying the same request ``Content``; :func:`workflow_responses` maps them to
``{request_id: response}`` for ``workflow.run(responses=…)``.

MAF's approval response carries only ``approved``: on a rejection MAF itself gives
the model the tool result ``"Error: Tool call invocation was rejected by user."``. So
that the model also learns *why*, :func:`approval_messages` adds a user message with
the reviewer's reason (``"The tool call <name> was not approved. Reason: …"``). A
workflow response has no room for it; there the reason stays in greenlight.

Anything but an explicit approval is ``approved=False`` (fail closed); requests of
other kinds (OAuth consent, computer calls) are not answered. ``agent-framework-core``
(1.23) is imported when used.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ._core import Decision
from ._tools import ToolCall, decide

__all__ = [
    "approval_messages",
    "approval_responses",
    "run_with_approvals",
    "workflow_responses",
    "FRAMEWORK",
]

#: How requests read in Slack: "Agent Framework tool call: <tool>".
FRAMEWORK = "Agent Framework"
_APPROVAL = "function_approval_request"


def _requests(source: Any) -> List[Any]:
    """The function approval requests in an ``AgentResponse`` or a list of ``Content``."""
    items = source.user_input_requests if hasattr(source, "user_input_requests") else list(source)
    return [r for r in items if getattr(r, "type", None) == _APPROVAL]


def _call(request: Any) -> ToolCall:
    fc = request.function_call
    return ToolCall(str(getattr(fc, "name", None) or "tool"), getattr(fc, "arguments", None), getattr(fc, "call_id", None))


async def approval_responses(
    client: Any,
    source: Any,
    *,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
) -> "List[tuple[Any, Decision]]":
    """Ask greenlight about each function approval request in ``source`` (an
    ``AgentResponse`` or a list of request ``Content``) and wait; returns
    ``(response Content, Decision)`` pairs, one per request, in order."""
    requests = _requests(source)
    decisions = await decide(
        client, [_call(r) for r in requests], framework=FRAMEWORK, title=title, timeout_secs=timeout_secs
    )
    return [(r.to_function_approval_response(approved=bool(d.approved)), d) for r, d in zip(requests, decisions)]


async def approval_messages(
    client: Any,
    result: Any,
    *,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
) -> List[Any]:
    """The messages to pass to the next ``agent.run(…, session=session)``: one user
    message with the approval responses and, when something was denied, one with the
    reviewers' reasons for the model."""
    from agent_framework import Content, Message

    pairs = await approval_responses(client, result, title=title, timeout_secs=timeout_secs)
    messages = [Message("user", [response for response, _ in pairs])]
    reasons = [
        f"The tool call {response.function_call.name} was not approved. Reason: {d.reason or 'request ' + d.status}"
        for response, d in pairs
        if not d.approved
    ]
    if reasons:
        messages.append(Message("user", [Content.from_text("\n".join(reasons))]))
    return messages


async def run_with_approvals(
    client: Any,
    agent: Any,
    input: Any,
    *,
    session: Any = None,
    max_approval_rounds: int = 10,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
    **run_kwargs: Any,
) -> Any:
    """``agent.run`` that answers approval requests through greenlight until none are
    left (at most ``max_approval_rounds``; then the last response is returned with its
    requests still pending). Uses ``session`` or a new ``agent.create_session()``."""
    session = session if session is not None else agent.create_session()
    result = await agent.run(input, session=session, **run_kwargs)
    for _ in range(max_approval_rounds):
        if not _requests(result):
            break
        messages = await approval_messages(client, result, title=title, timeout_secs=timeout_secs)
        result = await agent.run(messages, session=session, **run_kwargs)
    return result


async def workflow_responses(
    client: Any,
    events: Any,
    *,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
) -> Dict[str, Any]:
    """``{request_id: response Content}`` for the function-approval ``request_info``
    events of a workflow run (its result, or any iterable of ``WorkflowEvent``), for
    ``workflow.run(responses=…)``. Other request-info events are left out."""
    pending = [
        e
        for e in events
        if getattr(e, "type", None) == "request_info" and getattr(getattr(e, "data", None), "type", None) == _APPROVAL
    ]
    pairs = await approval_responses(client, [e.data for e in pending], title=title, timeout_secs=timeout_secs)
    return {e.request_id: response for e, (response, _) in zip(pending, pairs)}
