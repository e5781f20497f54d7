"""OpenAI Agents SDK integration: greenlight answers a run's ``interruptions``.

Tools declared with ``@function_tool(needs_approval=True)`` (or a callable) stop the
run: ``result.interruptions`` lists ``ToolApprovalItem``\\ s and ``result.to_state()``
is the ``RunState`` to resume. This module answers them with the SDK's own
``state.approve(item)`` / ``state.reject(item, rejection_message=<reviewer's reason>)``.

Waiting in process::

    from greenlight_client import AsyncClient
    from greenlight_client.openai_agents import run_with_approvals

    result = await run_with_approvals(AsyncClient(url, token), agent, "clean up build/")

or step by step::

    result = await Runner.run(agent, "…")
    while result.interruptions:
        state = await answer_interruptions(gl, result)
        result = await Runner.run(agent, state)

Anything that is not an explicit approval (a denial, an expiry, an unreachable
service, a rejected token) rejects the call with a message that says why, which the
SDK returns to the model as the tool's output (fail closed). The SDK is imported
lazily (``openai-agents`` 0.24).
"""

from __future__ import annotations

from typing import Any, List, Optional

from ._core import Decision
from ._tools import ToolCall, decide, denial_message

__all__ = ["answer_interruptions", "apply_decisions", "run_with_approvals", "tool_calls", "FRAMEWORK"]

#: How requests read in Slack: "OpenAI Agents tool call: <tool>".
FRAMEWORK = "OpenAI Agents"


def _state_and_items(result_or_state: Any) -> "tuple[Any, List[Any]]":
    """The ``RunState`` to answer, and its pending ``ToolApprovalItem``\\ s."""
    if hasattr(result_or_state, "get_interruptions"):  # a RunState
        return result_or_state, list(result_or_state.get_interruptions())
    return result_or_state.to_state(), list(result_or_state.interruptions)


def tool_calls(items: List[Any]) -> List[ToolCall]:
    """``ToolApprovalItem``\\ s as greenlight tool calls (name, JSON arguments, call id)."""
    return [ToolCall(item.qualified_name or item.name or "tool", item.arguments, item.call_id) for item in items]


def apply_decisions(state: Any, items: List[Any], decisions: List[Decision]) -> Any:
    """Approve or reject each item on ``state`` by its decision; a missing decision
    rejects. Returns ``state``."""
    for i, item in enumerate(items):
        decision = decisions[i] if i < len(decisions) else None
        if decision is not None and decision.approved:
            state.approve(item)
        else:
            message = (
                denial_message(decision)
                if decision is not None
                else "The tool call was not approved. Reason: greenlight gave no decision (fail closed)"
            )
            state.reject(item, rejection_message=message)
    return state


def _input_context(state: Any) -> Optional[List[dict]]:
    text = getattr(state, "_original_input", None)
    return [{"role": "user", "content": text[:500]}] if isinstance(text, str) and text else None


async def answer_interruptions(
    client: Any,
    result_or_state: Any,
    *,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
) -> Any:
    """Ask greenlight about every interruption of a run result (or a ``RunState``) and
    wait; returns the ``RunState`` with each item approved or rejected, ready for
    ``Runner.run(agent, state)``. Decisions never raise (a failure rejects)."""
    state, items = _state_and_items(result_or_state)
    decisions = await decide(
        client,
        tool_calls(items),
        framework=FRAMEWORK,
        title=title,
        context=_input_context(state),
        timeout_secs=timeout_secs,
    )
    return apply_decisions(state, items, decisions)


async def run_with_approvals(
    client: Any,
    agent: Any,
    input: Any,
    *,
    max_approval_rounds: int = 10,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
    **run_kwargs: Any,
) -> Any:
    """``Runner.run`` that answers interruptions through greenlight until the run
    finishes (at most ``max_approval_rounds`` rounds; after that the last result is
    returned with its interruptions still pending)."""
    from agents import Runner

    result = await Runner.run(agent, input, **run_kwargs)
    for _ in range(max_approval_rounds):
        if not result.interruptions:
            break
        state = await answer_interruptions(client, result, title=title, timeout_secs=timeout_secs)
        result = await Runner.run(agent, state, **run_kwargs)
    return result
