"""Client.request_batch against the real greenlight: one card for the batch, one
decision per action, and failures as denials (never an exception)."""

from __future__ import annotations

import asyncio

import pytest

from greenlight_client import AsyncClient, Client
from greenlight_harness import API_TOKEN, FakeSlack, GreenlightServer, free_port
from reviewer import Reviewer

pytestmark = pytest.mark.e2e

ACTIONS = [{"code": "rm -rf build/", "language": "sh"}, {"code": "git push --force", "language": "sh", "context": None}]


def test_batch_waits_for_every_item(greenlight: GreenlightServer, fake_slack: FakeSlack):
    reviewer = Reviewer(greenlight, fake_slack, [(True, ""), (False, "not --force")]).start()
    batch = Client(greenlight.url, API_TOKEN).request_batch(ACTIONS, timeout_secs=60, title="Cleanup")
    ids = reviewer.join()
    assert batch.status == "decided" and batch.title == "Cleanup"
    assert [d.id for d in batch.approvals] == ids
    assert [(d.approved, d.reason) for d in batch.approvals][1] == (False, "not --force")
    assert batch.approvals[0].approved is True
    assert len(fake_slack.posted_approvals()) == 1  # one card


def test_batch_without_waiting_is_pending(greenlight: GreenlightServer):
    batch = asyncio.run(AsyncClient(greenlight.url, API_TOKEN).request_batch(ACTIONS, wait=False))
    assert batch.status == "pending" and batch.id and [d.status for d in batch.approvals] == ["pending", "pending"]
    assert not any(d.approved for d in batch.approvals)


def test_rejected_and_unreachable_batches_are_denials(greenlight: GreenlightServer):
    rejected = Client(greenlight.url, API_TOKEN).request_batch([{"code": ""}])
    assert rejected.status == "error" and rejected.id is None
    assert "batch rejected (HTTP 422" in rejected.approvals[0].reason, rejected
    down = asyncio.run(AsyncClient(f"http://127.0.0.1:{free_port()}", API_TOKEN, submit_retry_secs=0.3).request_batch(ACTIONS))
    assert down.status == "error" and [d.approved for d in down.approvals] == [False, False]
    assert "service unreachable" in down.approvals[0].reason
