"""LangGraph / LangChain v1 integration: greenlight answers ``HumanInTheLoopMiddleware``
interrupts with the middleware's own decisions.

An agent built with ``create_agent(..., middleware=[HumanInTheLoopMiddleware(
interrupt_on={"delete_file": True})], checkpointer=…)`` stops before a gated tool
runs; the run's output carries the interrupts (``result["__interrupt__"]``, or
``.interrupts`` of ``invoke(..., version="v2")`` / ``get_state(config)``). This
module turns them into the ``Command`` that resumes the run::

    from greenlight_client import Client
    from greenlight_client.langgraph import resume_command_sync

    result = agent.invoke({"messages": [("user", "clean up build/")]}, config)
    while result.get("__interrupt__"):
        result = agent.invoke(resume_command_sync(Client(url, token), result["__interrupt__"]), config)

(``resume_command`` is the async twin, for ``ainvoke`` and an ``AsyncClient``.)

The decisions follow the middleware's format (``langchain.agents.middleware.
human_in_the_loop``, langchain 1.5): ``{"type": "approve"}`` or ``{"type": "reject",
"message": <reviewer's reason>}`` (``"respond"`` with the reason when the tool allows
only that). The default ``batched`` mode's ``HITLRequest`` (``action_requests``) is
answered with ``{"decisions": [...]}``, one per action, in order; ``per_call`` mode's
``ToolApprovalRequest`` (``type: "tool_approval"``) with one decision. Several pending
interrupts are answered by id (``Command(resume={interrupt_id: …})``). Anything but an
explicit approval rejects (fail closed), and so does an interrupt this module does not
recognise: it is answered with a rejection, never left to approve.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._core import Decision
from ._tools import ToolCall, decide, decide_sync

__all__ = ["resume_command", "resume_command_sync", "resume_value", "interrupts_of", "FRAMEWORK"]

#: How requests read in Slack: "LangGraph tool call: <tool>".
FRAMEWORK = "LangGraph"


def interrupts_of(source: Any) -> List[Any]:
    """The pending ``Interrupt``\\ s in an ``invoke`` result dict (``"__interrupt__"``),
    a v2 ``GraphOutput`` or ``StateSnapshot`` (``.interrupts``), a list of them, or one."""
    if isinstance(source, dict):
        source = source.get("__interrupt__") or []
    elif hasattr(source, "interrupts"):  # GraphOutput (v2 invoke) or StateSnapshot
        source = source.interrupts
    if isinstance(source, (list, tuple)):
        return list(source)
    return [source]


def _kind(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("action_requests"), list):
        return "batched"
    if isinstance(value, dict) and value.get("type") == "tool_approval":
        return "per_call"
    return "unknown"


def _allowed(value: Any, name: str) -> Sequence[str]:
    if _kind(value) == "batched":
        for config in value.get("review_configs") or []:
            if isinstance(config, dict) and config.get("action_name") == name:
                return list(config.get("allowed_decisions") or [])
    return ()


def _plan(interrupts: List[Any]) -> List[Tuple[Any, List[ToolCall]]]:
    """Each interrupt with the tool calls it asks about (none for an unknown one)."""
    plan = []
    for it in interrupts:
        value = getattr(it, "value", None)
        kind = _kind(value)
        if kind == "batched":
            calls = [ToolCall(str(a.get("name")), a.get("args")) for a in value["action_requests"]]
        elif kind == "per_call":
            calls = [ToolCall(str(value.get("name")), value.get("args"), value.get("tool_call_id"))]
        else:
            calls = []
        plan.append((it, calls))
    return plan


def _decision(decision: Optional[Decision], allowed: Sequence[str]) -> Dict[str, Any]:
    """One middleware decision: approve only on an explicit approval it allows."""
    if decision is not None and decision.approved and (not allowed or "approve" in allowed):
        return {"type": "approve"}
    if decision is None:
        reason = "greenlight gave no decision (fail closed)"
    elif decision.approved:
        reason = "approved in greenlight, but this tool does not allow an approve decision (fail closed)"
    else:
        reason = decision.reason or f"request {decision.status}"
    if allowed and "reject" not in allowed and "respond" in allowed:
        return {"type": "respond", "message": f"The tool call was not approved. Reason: {reason}"}
    # A reject the tool does not allow makes the middleware raise: the run stops, the tool does not run.
    return {"type": "reject", "message": reason}


def resume_value(interrupt_value: Any, decisions: List[Decision]) -> Any:
    """The resume value for one interrupt's value given greenlight's decisions, one per
    tool call: ``{"decisions": [...]}`` (batched) or a single decision (per_call)."""
    kind = _kind(interrupt_value)
    if kind == "batched":
        actions = interrupt_value["action_requests"]
        return {
            "decisions": [
                _decision(decisions[i] if i < len(decisions) else None, _allowed(interrupt_value, str(a.get("name"))))
                for i, a in enumerate(actions)
            ]
        }
    if kind == "per_call":
        return _decision(decisions[0] if decisions else None, ())
    return {"type": "reject", "message": "greenlight: not a HumanInTheLoopMiddleware request (fail closed)"}


def _command(plan: List[Tuple[Any, List[ToolCall]]], decisions: List[Decision]) -> Any:
    from langgraph.types import Command

    values = []
    at = 0
    for it, calls in plan:
        values.append((it, resume_value(getattr(it, "value", None), decisions[at : at + len(calls)])))
        at += len(calls)
    if len(values) == 1:
        return Command(resume=values[0][1])
    return Command(resume={it.id: value for it, value in values})


async def resume_command(
    client: Any,
    interrupts: Any,
    *,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
) -> Any:
    """Ask greenlight (an ``AsyncClient``) about every tool call in ``interrupts`` and
    wait; returns the ``Command(resume=…)`` to pass to ``ainvoke``/``invoke``."""
    plan = _plan(interrupts_of(interrupts))
    calls = [c for _, cs in plan for c in cs]
    decisions = await decide(client, calls, framework=FRAMEWORK, title=title, timeout_secs=timeout_secs)
    return _command(plan, decisions)


def resume_command_sync(
    client: Any,
    interrupts: Any,
    *,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
) -> Any:
    """Blocking twin of :func:`resume_command`, for a ``Client``."""
    plan = _plan(interrupts_of(interrupts))
    calls = [c for _, cs in plan for c in cs]
    decisions = decide_sync(client, calls, framework=FRAMEWORK, title=title, timeout_secs=timeout_secs)
    return _command(plan, decisions)
