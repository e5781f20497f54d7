"""get_batch, list_grants and revoke_grant against the real greenlight: a batch read
back (and waited on) by id, a grant made with Slack's "Approve for 30 min" button,
listed by the agent and revoked by a reviewer's review-page session."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from greenlight_client import AsyncClient, Client, GreenlightError
from greenlight_harness import API_TOKEN, REVIEWER, FakeSlack, GreenlightServer, free_port, wait_until
from reviewer import decide

pytestmark = pytest.mark.e2e

POLICY = """
[[rule]]
name = "tests"
code = '^cargo test'
approvers = ["U123"]
grant_max_secs = 3600
grant_durations_secs = [1800]
"""
SECRET = "alice-secret-0123456789"
OTHER_SECRET = "carol-secret-0123456789"


def test_get_batch_reads_and_waits(greenlight: GreenlightServer, fake_slack: FakeSlack):
    client = Client(greenlight.url, API_TOKEN)
    submitted = client.request_batch([{"code": "ls"}, {"code": "pwd"}], wait=False)
    assert submitted.status == "pending" and submitted.id
    now = client.get_batch(submitted.id)
    assert now.id == submitted.id and now.status == "pending"
    assert [d.id for d in now.approvals] == [d.id for d in submitted.approvals]
    decide(greenlight, fake_slack, approve=True, index=0)
    decide(greenlight, fake_slack, approve=False, reason="no", index=1)
    done = asyncio.run(AsyncClient(greenlight.url, API_TOKEN).get_batch(submitted.id, wait=10))
    assert done.status == "decided"
    assert [(d.approved, d.reason) for d in done.approvals][1] == (False, "no")
    assert done.approvals[0].approved is True
    with pytest.raises(GreenlightError) as missing:
        client.get_batch("00000000-0000-4000-8000-000000000000")
    assert missing.value.status == 404 and missing.value.code == "not_found"


def test_get_batch_unreachable_raises():
    with pytest.raises(GreenlightError) as down:
        Client(f"http://127.0.0.1:{free_port()}", API_TOKEN).get_batch("x")
    assert down.value.code == "unreachable"


def test_grants_are_listed_and_revoked_by_a_reviewer(server_factory, fake_slack: FakeSlack, tmp_path: Path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    greenlight = server_factory(
        extra_env={
            "GREENLIGHT_POLICY": str(policy),
            "GREENLIGHT_REVIEWERS": f"alice:{REVIEWER}:{SECRET},carol:{OTHER_SECRET}",
        }
    ).start()
    client = Client(greenlight.url, API_TOKEN)
    assert client.list_grants() == []
    r = greenlight.api("POST", "/v1/approvals", json={"code": "cargo test", "language": "sh"})
    assert r.status_code == 202, r.text
    approval_id, ts, channel = fake_slack.wait_for_approval_message()
    assert approval_id == r.json()["id"]
    click = greenlight.click("greenlight_grant_1800", approval_id, ts, channel)
    assert click.status_code == 200, click.text
    wait_until(lambda: greenlight.approval(approval_id)["status"] == "approved", 10, what="the grant's approval")

    grants = client.list_grants()
    assert len(grants) == 1
    grant = grants[0]
    assert (grant.rule, grant.agent, grant.granted_by, grant.match_kind) == ("tests", "python-test", REVIEWER, "exact")
    assert grant.action_key == "cargo test" and grant.revoked_at is None
    assert grant.approval_id == approval_id

    # Carol may not revoke it; a wrong secret is no reviewer; an unknown id is 404.
    with pytest.raises(GreenlightError) as refused:
        client.revoke_grant(grant.id, OTHER_SECRET)
    assert refused.value.status == 403 and "not_approver" not in refused.value.message
    with pytest.raises(GreenlightError) as wrong:
        client.revoke_grant(grant.id, "not-a-secret-of-anyone")
    assert wrong.value.status == 401
    with pytest.raises(GreenlightError) as unknown:
        client.revoke_grant("no-such-grant", SECRET)
    assert unknown.value.status == 404

    revoked = asyncio.run(AsyncClient(greenlight.url, API_TOKEN).revoke_grant(grant.id, SECRET))
    assert revoked.id == grant.id and revoked.revoked_by == REVIEWER and revoked.revoked_at
    assert client.list_grants() == []
    assert [g.id for g in asyncio.run(AsyncClient(greenlight.url, API_TOKEN).list_grants(all=True))] == [grant.id]
