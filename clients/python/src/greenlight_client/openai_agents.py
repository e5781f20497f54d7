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

Stopping and resuming later (the human may answer in an hour, after a deploy):
submit the interruptions as one greenlight batch with a ``callback_url``, store the
record (``RunState.to_json()`` plus the batch id), and resume when greenlight's signed
callback arrives::

    record = await save_interruptions(gl, result, callback_url="https://app.example.com/greenlight")
    db.put(record["greenlight_batch_id"], json.dumps(record))      # keep it on your server

    # in the callback receiver (any web framework):
    decided = read_callback(secret, request.headers, raw_body)    # greenlight_client.resume
    record = json.loads(db.get(decided.id))
    result = await Runner.run(agent, await resume_state(agent, record, decided))

Anything that is not an explicit approval (a denial, an expiry, an unreachable
service, a rejected token) rejects the call with a message that says why, which the
SDK returns to the model as the tool's output (fail closed). The SDK is imported
lazily (``openai-agents`` 0.24).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, List, Optional

from ._core import Decision, _describe_exc, _fail
from ._tools import MAX_BATCH_ACTIONS, ToolCall, batch_decisions, decide, denial_message, tool_action
from .resume import Decided

__all__ = [
    "answer_interruptions",
    "apply_decisions",
    "run_with_approvals",
    "save_interruptions",
    "resume_state",
    "tool_calls",
    "FRAMEWORK",
]

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


def _decision_json(decision: Decision) -> Dict[str, Any]:
    out = asdict(decision)
    out.pop("approval", None)
    return out


async def save_interruptions(
    client: Any,
    result_or_state: Any,
    *,
    callback_url: str,
    title: Optional[str] = None,
    timeout_secs: Optional[float] = None,
    context_serializer: Any = None,
) -> Dict[str, Any]:
    """Submit a run's interruptions to greenlight as one batch (first 20; an
    ``AsyncClient`` with ``request_batch``) without waiting, and return the JSON-able
    record to store until the callback comes::

        {"greenlight_batch_id": "<id>" or None, "call_ids": [...], "run_state": {...},
         "decided": None or [<decision>, ...]}

    ``decided`` is already set when nothing is left to wait for: greenlight decided
    every call at submission (policy), or the batch could not be submitted (then each
    call is a fail-closed denial saying why); :func:`resume_state` uses it when given
    no callback. ``context_serializer`` is passed to ``RunState.to_json``.
    """
    state, items = _state_and_items(result_or_state)
    calls = tool_calls(items)[:MAX_BATCH_ACTIONS]
    run_state = state.to_json(context_serializer=context_serializer) if context_serializer else state.to_json()
    record: Dict[str, Any] = {
        "greenlight_batch_id": None,
        "call_ids": [c.call_id for c in calls],
        "run_state": run_state,
        "decided": None,
    }
    try:
        actions = [tool_action(c, framework=FRAMEWORK, title=title, context=_input_context(state)) for c in calls]
        batch = await client.request_batch(actions, callback_url=callback_url, wait=False, timeout_secs=timeout_secs)
        record["greenlight_batch_id"] = getattr(batch, "id", None)
        if getattr(batch, "status", None) != "pending" or not record["greenlight_batch_id"]:
            record["decided"] = [_decision_json(d) for d in batch_decisions(batch, len(calls))]
    except Exception as exc:  # fail closed: every call denied, saying why
        reason = f"client error ({_describe_exc(exc)})"
        record["decided"] = [_decision_json(_fail(reason)) for _ in calls]
    return record


async def resume_state(
    agent: Any,
    record: Dict[str, Any],
    decided: Optional[Decided] = None,
    *,
    context_deserializer: Any = None,
) -> Any:
    """Rebuild the saved ``RunState`` (``RunState.from_json``) and approve or reject each
    interruption by greenlight's decision; returns the state for ``Runner.run(agent,
    state)``.

    ``decided`` is the callback as :func:`greenlight_client.resume.read_callback` read
    it; without it the record's own ``decided`` is used. Raises ``ValueError`` when the
    callback is for another batch or the record is not decided yet (nothing applied).
    An interruption without a decision (not submitted: more than 20 in one turn) is
    rejected.
    """
    from agents import RunState

    call_ids = list(record.get("call_ids") or [])
    if decided is not None:
        if decided.id != record.get("greenlight_batch_id"):
            raise ValueError(f"callback for {decided.id}, record for {record.get('greenlight_batch_id')}")
        decisions = list(decided.decisions)
    elif record.get("decided"):
        decisions = [Decision(**d) for d in record["decided"]]
    else:
        raise ValueError(f"greenlight batch {record.get('greenlight_batch_id')} is not decided yet")
    if len(decisions) != len(call_ids):
        decisions = [_fail("the callback does not hold one decision per tool call") for _ in call_ids]
    by_call = dict(zip(call_ids, decisions))
    kwargs = {"context_deserializer": context_deserializer} if context_deserializer else {}
    state = await RunState.from_json(agent, record["run_state"], **kwargs)
    items = list(state.get_interruptions())
    return apply_decisions(state, items, [by_call.get(item.call_id) or _not_submitted() for item in items])


def _not_submitted() -> Decision:
    return _fail("this tool call was not submitted (more than 20 in one turn)")
