"""Pydantic AI integration: greenlight answers deferred tool approvals.

Tools registered with ``requires_approval=True`` (or raising ``ApprovalRequired``)
defer their calls. Two ways to answer them:

Inline, the run waits while a person decides::

    from pydantic_ai import Agent
    from greenlight_client import AsyncClient
    from greenlight_client.pydantic_ai import greenlight_approvals

    agent = Agent(model, capabilities=[greenlight_approvals(AsyncClient(url, token))])

Stop and resume, the run ends with ``DeferredToolRequests`` and a later run gets
the answers::

    result = await agent.run("…", output_type=[str, DeferredToolRequests])
    if isinstance(result.output, DeferredToolRequests):
        answers = await deferred_tool_results(gl, result.output)
        result = await agent.run(message_history=result.all_messages(), deferred_tool_results=answers)

An approval is ``ToolApproved()``; anything else (a denial, an expiry, an unreachable
service, a bad token) is ``ToolDenied(message=…)`` carrying the reviewer's reason or
the failure, which Pydantic AI returns to the model as the tool's result (fail
closed). Calls deferred for external execution (``requests.calls``) are not
approvals and are left for the application. Types are Pydantic AI's own
(``pydantic_ai.tools``, ``pydantic-ai-slim`` 2.x), imported when used.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from ._tools import ToolCall, decide, denial_message

__all__ = ["deferred_tool_results", "deferred_tool_handler", "greenlight_approvals", "FRAMEWORK"]

#: How requests read in Slack: "Pydantic AI tool call: <tool>".
FRAMEWORK = "Pydantic AI"


def _calls(requests: Any) -> List[ToolCall]:
    return [ToolCall(p.tool_name, p.args, p.tool_call_id) for p in requests.approvals]


def _prompt_context(ctx: Any) -> Optional[List[Dict[str, str]]]:
    prompt = getattr(ctx, "prompt", None)
    return [{"role": "user", "content": prompt[:500]}] if isinstance(prompt, str) and prompt else None


async def deferred_tool_results(
    client: Any,
    requests: Any,
    *,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
    context: Any = None,
) -> Any:
    """Ask greenlight about every call in ``requests.approvals`` (a
    ``DeferredToolRequests``) and wait; returns ``DeferredToolResults`` with one
    ``ToolApproved()`` / ``ToolDenied(message)`` per call. Never raises (cancellation
    aside): a failure denies every call with the reason."""
    from pydantic_ai.tools import DeferredToolResults, ToolApproved, ToolDenied

    try:
        calls = _calls(requests)
    except Exception as exc:  # not a DeferredToolRequests: nothing can be approved
        raise TypeError(f"expected pydantic_ai DeferredToolRequests, got {type(requests).__name__}") from exc
    decisions = await decide(
        client, calls, framework=FRAMEWORK, title=title, context=context, timeout_secs=timeout_secs
    )
    approvals: Dict[str, Any] = {}
    answered_by: Dict[str, str] = {}
    for call, decision in zip(calls, decisions):
        approvals[str(call.call_id)] = ToolApproved() if decision.approved else ToolDenied(denial_message(decision))
        answered_by[str(call.call_id)] = decision.decided_by or "greenlight"
    return DeferredToolResults(approvals=approvals, answered_by=answered_by)


def deferred_tool_handler(
    client: Any,
    *,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
) -> Callable[[Any, Any], Any]:
    """A handler for Pydantic AI's ``HandleDeferredToolCalls(handler=…)``: answers
    the approval calls through greenlight (the run's prompt is shown to the
    reviewer); returns None when there are none, so external calls bubble up."""

    async def greenlight_deferred_tool_handler(ctx: Any, requests: Any) -> Any:
        if not requests.approvals:
            return None
        return await deferred_tool_results(
            client, requests, title=title, timeout_secs=timeout_secs, context=_prompt_context(ctx)
        )

    return greenlight_deferred_tool_handler


def greenlight_approvals(
    client: Any,
    *,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
) -> Any:
    """The capability to put in ``Agent(capabilities=[…])``: Pydantic AI's
    ``HandleDeferredToolCalls`` with :func:`deferred_tool_handler`."""
    from pydantic_ai.capabilities import HandleDeferredToolCalls

    return HandleDeferredToolCalls(handler=deferred_tool_handler(client, title=title, timeout_secs=timeout_secs))
