"""Rebuilding an unreadable state from its snapshots: the service and `autoplay_rebuild`, on both primaries."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command

from autoplay_storage.models import AuditEntry, QuarantinedState, SummaryRun
from autoplay_storage.support import rebuild
from autoplay_storage.user_adoption_state import UserAdoptionState
from tests.support.dashboard import PRODUCT, configure_primary, load_one, with_storage, write_raw

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["database", "redis"])
def primary(request: pytest.FixtureRequest, settings) -> str:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    configure_primary(request.param, settings, url)
    request.node.redis_url = url
    return request.param


def stored(user_id: str) -> dict | None:
    async def go(storage):
        return await storage.get_user_state(PRODUCT, user_id)

    return with_storage(go)


def raw_of(user_id: str) -> str | None:
    async def go(storage):
        return await storage.browser.get_raw_user_state(PRODUCT, user_id)

    return with_storage(go)


def test_the_command_replays_every_snapshot_and_keeps_the_unreadable_text(primary, request, capsys) -> None:
    plan = load_one(3)
    before = UserAdoptionState.from_dict(stored(plan.user_id))
    latest = SummaryRun.objects.exclude(applied_at=None).order_by("-applied_at").first()
    broken = '{"_v": 1, "user_id": "' + plan.user_id + '", "mastery": {"rating": 7,'
    write_raw(primary, request.node.redis_url, PRODUCT, plan.user_id, broken)
    call_command("autoplay_rebuild", PRODUCT, plan.user_id, "--yes")
    out = capsys.readouterr().out
    assert "rebuilt from 3 session(s)" in out and "Rebuilt 1, skipped 0, superseded 0." in out
    state = UserAdoptionState.from_dict(stored(plan.user_id))
    assert state.sessions.count == 3
    assert [e.session_id for e in state.sessions.index] == [s.session_id for s in plan.sessions]
    assert state.onboarding.summary == latest.new_summary == before.onboarding.summary
    assert state.mastery == before.mastery and state.journey_state == before.journey_state
    assert state.onboarding.workflow_progress.keys() == before.onboarding.workflow_progress.keys()
    (kept,) = QuarantinedState.objects.all()
    assert (kept.raw, kept.outcome, kept.sessions_replayed) == (broken, "rebuilt", 3)
    entry = AuditEntry.objects.get(action="state.rebuild")
    assert (entry.actor, entry.details["written"]) == ("manage.py autoplay_rebuild", True)


def test_the_command_asks_and_no_writes_nothing(primary, request, monkeypatch, capsys) -> None:
    plan = load_one(2)
    write_raw(primary, request.node.redis_url, PRODUCT, plan.user_id, "[1, 2]")
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    call_command("autoplay_rebuild", PRODUCT, plan.user_id)
    assert "Not written." in capsys.readouterr().out
    assert raw_of(plan.user_id) == "[1, 2]"
    assert not QuarantinedState.objects.exists()


def test_all_unreadable_rebuilds_each_and_salvages_a_newer_writers_metadata(primary, request, capsys) -> None:
    a, b = load_one(2, seed=21), load_one(1, seed=22)
    newer = json.dumps({"_v": 9, "user_id": b.user_id, "metadata": {"email": "b@x.io"}, "onboarding": {}})
    write_raw(primary, request.node.redis_url, PRODUCT, a.user_id, "not json")
    write_raw(primary, request.node.redis_url, PRODUCT, b.user_id, newer)
    call_command("autoplay_rebuild", "--all-unreadable", "--yes")
    out = capsys.readouterr().out
    assert "2 unreadable user states found." in out and "Rebuilt 2" in out
    assert UserAdoptionState.from_dict(stored(b.user_id)).metadata == {"email": "b@x.io"}
    assert UserAdoptionState.from_dict(stored(a.user_id)).sessions.count == 2
    call_command("autoplay_rebuild", "--all-unreadable", "--yes")
    assert "0 unreadable user states found." in capsys.readouterr().out


def test_a_repair_made_meanwhile_wins_and_nothing_is_lost(primary, request) -> None:
    plan = load_one(2)
    write_raw(primary, request.node.redis_url, PRODUCT, plan.user_id, "{truncated")
    made = async_to_sync(rebuild.plan_rebuild)(PRODUCT, plan.user_id)
    repaired = UserAdoptionState(user_id=plan.user_id, metadata={"fixed_by": "someone else"}).to_json()
    write_raw(primary, request.node.redis_url, PRODUCT, plan.user_id, repaired)
    outcome = async_to_sync(rebuild.rebuild)(made, actor="test")
    assert outcome.written is False
    assert stored(plan.user_id)["metadata"] == {"fixed_by": "someone else"}
    (kept,) = QuarantinedState.objects.all()
    assert (kept.raw, kept.outcome) == ("{truncated", "superseded")


def test_a_readable_state_is_left_alone(primary, capsys) -> None:
    plan = load_one(1)
    before = raw_of(plan.user_id)
    call_command("autoplay_rebuild", PRODUCT, plan.user_id, "--yes")
    assert "Nothing to rebuild" in capsys.readouterr().out
    assert raw_of(plan.user_id) == before
    with pytest.raises(CommandError, match="PRODUCT USER"):
        call_command("autoplay_rebuild", PRODUCT)
