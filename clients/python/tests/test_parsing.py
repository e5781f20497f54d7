"""Fence parsing and context summarising (with real autogen message types)."""

from __future__ import annotations

from autogen_agentchat.agents import ApprovalRequest
from autogen_core import FunctionCall
from autogen_core.code_executor import CodeBlock
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    SystemMessage,
    UserMessage,
)

from greenlight_client.autogen import code_languages, request_fields, split_code_blocks, summarize_context


def autogen_combined(blocks):
    """Exactly how CodeExecutorAgent 0.7 builds ApprovalRequest.code."""
    return "\n\n".join([f"```{b.language}\n{b.code}\n```" for b in blocks])


def test_single_python_block():
    code = autogen_combined([CodeBlock(code="print('hi')\n", language="python")])
    assert code_languages(code) == "python"
    blocks, outside = split_code_blocks(code)
    assert blocks == [("python", "print('hi')\n")]
    assert outside.strip() == ""
    fields = request_fields(ApprovalRequest(code=code, context=[]))
    assert fields["code"] == "print('hi')"
    assert fields["language"] == "python"
    assert fields["title"] == "AutoGen code execution (python)"
    assert fields["context"] is None


def test_several_languages_joined_in_order_and_code_kept_verbatim():
    code = autogen_combined(
        [
            CodeBlock(code="import os\nprint(os.getcwd())\n", language="python"),
            CodeBlock(code="echo hi\n", language="sh"),
            CodeBlock(code="print(2)\n", language="Python"),
        ]
    )
    assert code_languages(code) == "python, sh"
    assert len(split_code_blocks(code)[0]) == 3
    fields = request_fields(ApprovalRequest(code=code, context=[]))
    assert fields["code"] == code
    assert fields["language"] == "python, sh"


def test_no_fences_and_unlabelled_fences():
    assert code_languages("rm -rf /tmp/x") is None
    assert request_fields({"code": "rm -rf /tmp/x", "context": []})["code"] == "rm -rf /tmp/x"
    assert code_languages("```\nls\n```") is None
    assert code_languages("```bash\nls\n```\ntext\n```sh\nls\n```") == "bash, sh"


def test_code_containing_backticks_inline_and_unterminated_fence():
    code = "```python\nx = '``'\nprint(x)\n```"
    assert split_code_blocks(code)[0] == [("python", "x = '``'\nprint(x)")]
    assert split_code_blocks("```sh\necho open")[0] == [("sh", "echo open")]


def test_title_override_and_disable():
    req = {"code": "```sh\nls\n```", "context": []}
    assert request_fields(req, title="Deploy")["title"] == "Deploy"
    assert request_fields(req, title="")["title"] is None


def test_summarize_real_autogen_messages_keeps_last_five_and_roles():
    msgs = [
        SystemMessage(content="system prompt " * 100),
        UserMessage(content="old message 1", source="user"),
        UserMessage(content="please list files", source="user"),
        AssistantMessage(content=[FunctionCall(id="c1", name="list_dir", arguments='{"path": "."}')], source="coder"),
        FunctionExecutionResultMessage(
            content=[FunctionExecutionResult(content="a.txt b.txt", name="list_dir", call_id="c1", is_error=False)]
        ),
        AssistantMessage(content="I will now delete " + "x" * 1000, source="coder"),
        UserMessage(content=["look at this", "and this"], source="user"),
    ]
    out = summarize_context(msgs)
    assert len(out) == 5
    assert [m["role"] for m in out] == ["user", "assistant", "function", "assistant", "user"]
    assert all(set(m) == {"role", "content"} for m in out)
    assert out[0]["content"] == "please list files"
    assert "list_dir" in out[1]["content"] and '"path"' in out[1]["content"]
    assert "a.txt b.txt" in out[2]["content"]
    assert len(out[3]["content"]) == 500 and out[3]["content"].endswith("…")
    assert out[4]["content"] == "look at this\nand this"


def test_summarize_bounds_and_dicts():
    assert summarize_context([]) == []
    assert summarize_context(None) == []
    dumped = [UserMessage(content="hello", source="u").model_dump(), {"role": "tool", "content": "y" * 50}]
    out = summarize_context(dumped, max_messages=5, max_chars=10)
    assert out == [{"role": "user", "content": "hello"}, {"role": "tool", "content": "y" * 9 + "…"}]
    assert summarize_context([SystemMessage(content="s")] * 9, max_messages=2) == [
        {"role": "system", "content": "s"},
        {"role": "system", "content": "s"},
    ]


def test_request_fields_sends_context_summary():
    req = ApprovalRequest(
        code="```sh\necho hi\n```",
        context=[SystemMessage(content="sys"), UserMessage(content="run it", source="user")],
    )
    assert request_fields(req)["context"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "run it"},
    ]
