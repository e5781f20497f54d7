#!/usr/bin/env bash
# Python client tests: unit tests plus end-to-end tests against the real
# greenlight binary, real AutoGen 0.7 (MagenticOne included), real runs of Microsoft
# Agent Framework, the OpenAI Agents SDK, LangChain/LangGraph and Pydantic AI with
# test models, the Claude Agent SDK's result types, the MCP Python client, and a fake
# Slack (all on 127.0.0.1).
#
#   clients/python/run-tests.sh [pytest args...]
#
# Env: GREENLIGHT_BIN (default <repo>/target/debug/greenlight, built with
# `cargo build --quiet` if missing), PYTHON (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
export PYTHONDONTWRITEBYTECODE=1

if [ ! -x "$venv/bin/python" ]; then
    echo "run-tests.sh: creating $venv"
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"

echo "run-tests.sh: installing greenlight-client + test dependencies"
# claude-agent-sdk: its real PermissionResult types (its CLI is never started);
# mcp: the official MCP client that drives `greenlight mcp` over stdio;
# standardwebhooks: the independent verifier of greenlight's signed callbacks (also a
# dependency of the package itself, named here so the tests' use of it is explicit).
# The framework adapters' tests run against these exact versions (pyproject's `test`
# extra says the same). They add about 4 minutes to an install on a fresh machine (measured
# 2026-11: 230 s without a pip cache, 140 s with a warm one; the packages before them: 125 s / 49 s).
"$py" -m pip install --quiet --upgrade "$here" pytest "autogen-agentchat==0.7.5" "autogen-ext[magentic-one,openai]==0.7.5" \
    "claude-agent-sdk>=0.2" "mcp>=1.20" "standardwebhooks>=1.0,<2" \
    "agent-framework-core==1.23.0" "openai-agents==0.24.0" "langchain==1.5.0" "langgraph==1.2.22" \
    "pydantic-ai-slim==2.68.0"

export GREENLIGHT_BIN="${GREENLIGHT_BIN:-$repo/target/debug/greenlight}"
if [ ! -x "$GREENLIGHT_BIN" ]; then
    echo "run-tests.sh: $GREENLIGHT_BIN missing; cargo build --quiet in $repo"
    (cd "$repo" && cargo build --quiet)
fi

cd "$here"
exec "$py" -m pytest -q -p no:cacheprovider "$@"
