"""Claude Agent SDK integration: a ``can_use_tool`` callback that asks greenlight.

>>> from claude_agent_sdk import ClaudeAgentOptions
>>> from greenlight_client.claude_agent_sdk import can_use_tool
>>> options = ClaudeAgentOptions(can_use_tool=can_use_tool("http://127.0.0.1:8080", token="…"))

Each tool call is sent to greenlight's Claude Code hook endpoint
(``POST /v1/hooks/claude-code``) as a ``PreToolUse`` hook input, so it reads in
Slack exactly as Claude Code's own hooks do (Bash as a command, Edit / MultiEdit /
Write as a diff, anything else as JSON), goes through the same policy rules
(``tool = "Read"``, ``command_prefix = ["ls"]`` auto-approve at once), and waits for a
person until greenlight's hook budget runs out (``GREENLIGHT_HOOK_BUDGET_SECS``), which
denies.

The callback returns the SDK's own types: ``PermissionResultAllow()`` or
``PermissionResultDeny(message=…)``. It never raises into the agent: an unreachable
service, a rejected token or an answer it cannot read is a deny whose message names
the problem (fail closed); ``interrupt=True`` when greenlight asked to stop.

``claude-agent-sdk`` is imported when the callback is made, so the rest of the client
works without it.
"""

from __future__ import annotations

import os
from typing import Any, Awaitable, Callable, Dict, Optional

import httpx

__all__ = ["can_use_tool", "hook_input", "to_permission_result", "DEFAULT_BUDGET_SECS"]

#: greenlight's default hook budget (``GREENLIGHT_HOOK_BUDGET_SECS``), in seconds.
DEFAULT_BUDGET_SECS = 540.0
#: Time allowed beyond the budget for greenlight's answer to arrive.
_ANSWER_SLACK_SECS = 30.0


def _sdk() -> Any:
    try:
        import claude_agent_sdk
    except ImportError as exc:  # pragma: no cover - exercised only without the SDK
        raise ImportError(
            "greenlight_client.claude_agent_sdk needs the claude-agent-sdk package: "
            "pip install 'greenlight-client[claude-agent-sdk]'"
        ) from exc
    return claude_agent_sdk


def hook_input(
    tool_name: str,
    tool_input: Dict[str, Any],
    tool_use_id: Optional[str] = None,
    session_id: Optional[str] = None,
    cwd: Optional[str] = None,
) -> Dict[str, Any]:
    """The ``PreToolUse`` hook input Claude Code would send for this tool call."""
    body: Dict[str, Any] = {
        "hook_event_name": "PreToolUse",
        "tool_name": tool_name,
        "tool_input": tool_input,
        "cwd": cwd if cwd is not None else os.getcwd(),
        "permission_mode": "default",
    }
    if session_id:
        body["session_id"] = session_id
    if tool_use_id:
        body["tool_use_id"] = tool_use_id
    return body


def _deny(message: str, interrupt: bool = False) -> Any:
    return _sdk().PermissionResultDeny(message=message, interrupt=interrupt)


def to_permission_result(answer: Any) -> Any:
    """Maps greenlight's Claude Code hook answer to the SDK's result type.

    Only ``{"hookSpecificOutput": {"permissionDecision": "allow"}}`` allows; a deny
    keeps its reason; ``{"continue": false}`` denies and interrupts; anything else is
    a deny naming the unreadable answer.
    """
    sdk = _sdk()
    if isinstance(answer, dict):
        output = answer.get("hookSpecificOutput")
        if isinstance(output, dict) and output.get("hookEventName") == "PreToolUse":
            decision = output.get("permissionDecision")
            reason = str(output.get("permissionDecisionReason") or "")
            if decision == "allow":
                return sdk.PermissionResultAllow()
            if decision == "deny":
                return _deny(reason or "greenlight: denied")
        if answer.get("continue") is False:
            return _deny(str(answer.get("stopReason") or "greenlight: stopped"), interrupt=True)
    return _deny(f"greenlight: unexpected answer {str(answer)[:200]!r}; denied (fail closed)")


def can_use_tool(
    base_url: str,
    token: str,
    *,
    session_id: Optional[str] = None,
    cwd: Optional[str] = None,
    budget_secs: float = DEFAULT_BUDGET_SECS,
    http_client: Optional[httpx.AsyncClient] = None,
) -> Callable[[str, Dict[str, Any], Any], Awaitable[Any]]:
    """A ``can_use_tool`` callback for ``ClaudeAgentOptions``.

    ``budget_secs`` is how long greenlight may hold a call (its
    ``GREENLIGHT_HOOK_BUDGET_SECS``); the HTTP call waits that long plus 30 s for the
    answer. ``session_id`` and ``cwd`` (default: the current directory) are shown to
    the reviewer. ``http_client`` lets tests or apps bring their own ``httpx`` client.
    """
    _sdk()  # fail at configuration time, not on the first tool call
    url = base_url.rstrip("/") + "/v1/hooks/claude-code"
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx.Timeout(budget_secs + _ANSWER_SLACK_SECS, connect=5.0)

    async def greenlight_can_use_tool(tool_name: str, tool_input: Dict[str, Any], context: Any) -> Any:
        body = hook_input(
            tool_name,
            tool_input,
            tool_use_id=getattr(context, "tool_use_id", None),
            session_id=session_id,
            cwd=cwd,
        )
        try:
            if http_client is not None:
                response = await http_client.post(url, json=body, headers=headers, timeout=timeout)
            else:
                async with httpx.AsyncClient(trust_env=False) as client:
                    response = await client.post(url, json=body, headers=headers, timeout=timeout)
            if response.status_code != 200:
                return _deny(
                    f"greenlight: HTTP {response.status_code} from {url}; denied (fail closed)"
                )
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            kind = "service unreachable at" if isinstance(exc, httpx.TransportError) else "bad answer from"
            return _deny(f"greenlight: {kind} {base_url}: {type(exc).__name__}; denied (fail closed)")
        return to_permission_result(answer)

    return greenlight_can_use_tool
