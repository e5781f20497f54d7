from __future__ import annotations

import os
from pathlib import Path

import pytest

from greenlight_harness import FakeSlack, GreenlightServer

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything here talks to 127.0.0.1 only: never route it through a proxy."""
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def greenlight_bin() -> str:
    path = os.environ.get("GREENLIGHT_BIN") or str(REPO_ROOT / "target" / "debug" / "greenlight")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"greenlight binary not found at {path}: run `cargo build` in {REPO_ROOT} "
            "(run-tests.sh does) or set GREENLIGHT_BIN"
        )
    return path


@pytest.fixture
def fake_slack():
    slack = FakeSlack()
    yield slack
    slack.close()


@pytest.fixture
def server_factory(greenlight_bin: str, fake_slack: FakeSlack, tmp_path: Path):
    started = []

    def make(**kwargs) -> GreenlightServer:
        srv = GreenlightServer(greenlight_bin, tmp_path / f"srv{len(started)}", fake_slack.url, **kwargs)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
        print(srv.log_tail())  # shown by pytest only when the test failed


@pytest.fixture
def greenlight(server_factory) -> GreenlightServer:
    return server_factory().start()
