"""End to end: a real MagenticOne team (autogen-ext 0.7.5: orchestrator, FileSurfer,
WebSurfer, Coder, ComputerTerminal) with AutoGen's ``ReplayChatCompletionClient``
scripted so the orchestrator hands the ComputerTerminal a python block, and
greenlight's AutoGen ``approval_func`` (the real binary, a fake Slack) deciding
whether it runs: approved -> the code ran (the file it writes exists); denied -> it
did not, and the reviewer's reason is the terminal's message that the orchestrator's
model reads next.

No browser is needed: the WebSurfer starts Playwright only when it is asked to
browse, and the script never picks it. autogen-ext's ``magentic-one`` extra lacks
``aiofiles``, which the WebSurfer module imports (it comes with the ``openai`` extra),
so the tests install ``autogen-ext[magentic-one,openai]``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, List

import pytest
from autogen_ext.code_executors.local import LocalCommandLineCodeExecutor
from autogen_ext.models.replay import ReplayChatCompletionClient
from autogen_ext.teams.magentic_one import MagenticOne

from greenlight_client.autogen import slack_approval
from greenlight_harness import API_TOKEN, FakeSlack, GreenlightServer
from reviewer import Reviewer, card_text

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::UserWarning"),  # "MagenticOne performs best with OpenAI GPT-4o…"
]

CODE = "open('marker.txt', 'w').write('ran')\nprint('marker-written')"


def ledger(satisfied: bool, instruction: str = "") -> str:
    """A progress ledger as the orchestrator's prompt asks for it."""
    return json.dumps(
        {
            "is_request_satisfied": {"reason": "done" if satisfied else "not yet", "answer": satisfied},
            "is_in_loop": {"reason": "no", "answer": False},
            "is_progress_being_made": {"reason": "yes", "answer": True},
            "next_speaker": {"reason": "it runs code", "answer": "ComputerTerminal"},
            "instruction_or_question": {"reason": "write the file", "answer": instruction},
        }
    )


class RecordingReplay(ReplayChatCompletionClient):
    """AutoGen's replay client, also recording the messages of every call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: List[List[Any]] = []

    async def create(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return await super().create(messages, *args, **kwargs)


def script() -> RecordingReplay:
    return RecordingReplay(
        [
            "FACTS: the user wants a marker file.",  # task ledger: facts
            "PLAN: ComputerTerminal writes marker.txt.",  # task ledger: plan
            ledger(False, f"Run this:\n```python\n{CODE}\n```"),  # -> ComputerTerminal
            ledger(True),  # after the terminal spoke
            "FINAL: done.",  # final answer
        ],
        model_info={"vision": True, "function_calling": True, "json_output": True, "family": "unknown", "structured_output": False},
    )


async def run_team(url: str, work: Path) -> Any:
    work.mkdir(parents=True, exist_ok=True)
    executor = LocalCommandLineCodeExecutor(work_dir=work, timeout=30)
    model = script()
    approve = slack_approval(url, API_TOKEN, timeout=60, submit_retry_secs=5)
    team = MagenticOne(model, code_executor=executor, approval_func=approve)
    result = await team.run(task="Write the marker file")
    return result, model


def terminal_messages(result: Any) -> List[str]:
    return [str(m.content) for m in result.messages if m.source == "ComputerTerminal"]


def test_magentic_one_runs_the_code_once_approved(greenlight: GreenlightServer, fake_slack: FakeSlack, tmp_path: Path):
    work = tmp_path / "work"
    reviewer = Reviewer(greenlight, fake_slack, [(True, "")]).start()
    result, _ = asyncio.run(run_team(greenlight.url, work))
    (approval_id,) = reviewer.join()
    assert (work / "marker.txt").read_text() == "ran"
    assert terminal_messages(result) == ["marker-written\n"]
    card = greenlight.approval(approval_id)
    assert card["status"] == "approved" and card["title"] == "AutoGen code execution (python)"
    assert "marker.txt" in card_text(fake_slack, approval_id)


def test_magentic_one_does_not_run_denied_code_and_the_orchestrator_reads_the_reason(
    greenlight: GreenlightServer, fake_slack: FakeSlack, tmp_path: Path
):
    work = tmp_path / "work"
    reviewer = Reviewer(greenlight, fake_slack, [(False, "no writes today")]).start()
    result, model = asyncio.run(run_team(greenlight.url, work))
    reviewer.join()
    assert not (work / "marker.txt").exists()
    denial = "Code execution was not approved. Reason: no writes today"
    assert terminal_messages(result) == [denial]
    # The orchestrator's next model call (the progress ledger after the terminal spoke) carries it.
    assert any(denial in str(m.content) for m in model.seen[3]), [str(m.content)[:80] for m in model.seen[3]]
