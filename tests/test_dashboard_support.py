"""The support tooling's console pages on both primaries: edit, conflicts, errors, permissions, compare, summaries."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client
from django.urls import reverse

from autoplay_storage.models import AuditEntry, StaffEdit, SummaryRun
from autoplay_storage.user_adoption_state import UserAdoptionState
from tests.support.dashboard import (
    PRODUCT,
    configure_primary,
    grant_products,
    load_one,
    make_person,
    with_storage,
    write_raw,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["database", "redis"])
def primary(request: pytest.FixtureRequest, settings) -> str:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    configure_primary(request.param, settings, url)
    request.node.redis_url = url
    return request.param


def signed_in(name: str, role: str, *products: str) -> Client:
    client = Client()
    client.force_login(grant_products(make_person(name, role), *products))
    return client


def state_of(user_id: str) -> UserAdoptionState:
    async def go(storage):
        return await storage.get_user_state(PRODUCT, user_id)

    return UserAdoptionState.from_dict(with_storage(go))


def patch(user_id: str, edit) -> None:
    """An agent's write in between (through the engine, as the API's PATCH does)."""

    async def go(storage):
        def mutate(doc):
            state = UserAdoptionState.from_dict(doc)
            edit(state)
            return state.to_dict()

        await storage.update_user_state(PRODUCT, user_id, mutate)

    with_storage(go)


def form_of(body: str) -> dict[str, str]:
    """The edit form's fields as the page renders them (inputs, selected options, textareas)."""
    fields = dict(
        re.findall(r'<input type="(?:hidden|text|number)" name="([^"]+)"(?: id="[^"]*")? value="([^"]*)"', body)
    )
    for name, options in re.findall(r'<select name="([^"]+)"[^>]*>(.*?)</select>', body, re.S):
        chosen = re.search(r'<option value="([^"]+)" selected>', options)
        fields[name] = chosen.group(1) if chosen else re.search(r'<option value="([^"]+)"', options).group(1)
    description = re.search(r'id="mastery_description"[^>]*>(.*?)</textarea>', body, re.S).group(1)
    fields["mastery_description"] = html.unescape(description)
    return fields


def test_a_lead_edits_a_state_and_the_page_marks_what_staff_set(primary) -> None:
    plan = load_one(2)
    lead = signed_in("lee", "lead")
    url = reverse("dashboard:edit_state", args=[PRODUCT, plan.user_id])
    body = lead.get(url).content.decode()
    fields = form_of(body)
    workflow = next(k for k, v in fields.items() if re.fullmatch(r"wf-\d+-id", k))
    prefix = workflow[: -len("-id")]
    fields.update(
        {
            "mastery_rating": "9",
            "mastery_level": "power_user",
            f"{prefix}-status": "completed",
            f"{prefix}-evidence": "confirmed on a support call",
            f"st-{prefix[3:]}-new-id": "export_first_report",
            f"st-{prefix[3:]}-new-status": "completed",
            "features_add": "exports, api",
            "md-new-0-key": "plan",
            "md-new-0-value": "enterprise",
            "onboarding_complete": "1",
        }
    )
    before = state_of(plan.user_id)
    response = lead.post(url, fields, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "State updated by hand" in page and 'id="staff-edits"' in page
    state = state_of(plan.user_id)
    wid = fields[workflow]
    assert (state.mastery.rating, state.mastery.level.value) == (9, "power_user")
    assert state.onboarding.workflow_progress[wid].status.value == "completed"
    assert state.onboarding.workflow_progress[wid].source == "manual"
    assert state.onboarding.workflow_progress[wid].steps["export_first_report"].status.value == "completed"
    assert {"exports", "api"} <= set(state.discovered_features)
    assert state.metadata["plan"] == "enterprise" and state.is_onboarded
    entry = AuditEntry.objects.get(action="state.edit")
    assert entry.actor == "lee" and entry.user_id == plan.user_id
    assert entry.details["before"]['["mastery", "rating"]'] == before.mastery.rating
    assert entry.details["after"]['["mastery", "rating"]'] == 9
    assert StaffEdit.objects.filter(user_id=plan.user_id).count() >= 6
    assert "metadata · plan" in page and "enterprise" in page
    # A later write by the agent ends the mark on that value.
    patch(plan.user_id, lambda s: s.set_mastery(4, "beginner"))
    page = lead.get(reverse("dashboard:user", args=[PRODUCT, plan.user_id])).content.decode()
    assert "mastery · rating" not in page and "metadata · plan" in page


def test_an_agent_write_in_between_is_a_conflict_and_nothing_is_written(primary) -> None:
    plan = load_one(2)
    lead = signed_in("lee", "lead")
    url = reverse("dashboard:edit_state", args=[PRODUCT, plan.user_id])
    fields = form_of(lead.get(url).content.decode())
    patch(plan.user_id, lambda s: s.merge_metadata({"agent": "wrote"}))
    fields["mastery_rating"] = "10"
    response = lead.post(url, fields)
    assert response.status_code == 409
    body = response.content.decode()
    assert "The state changed since you opened this form" in body and "mastery · rating" in body
    assert "mastery · level" not in body and "metadata · " not in body  # only what the editor changed
    assert state_of(plan.user_id).mastery.rating != 10
    assert state_of(plan.user_id).metadata["agent"] == "wrote"
    assert not AuditEntry.objects.filter(action="state.edit").exists()
    fresh = form_of(body)
    assert fresh["etag"] != fields["etag"]  # the form now carries the current version: saving again works
    fresh["mastery_rating"] = "10"
    assert lead.post(url, fresh).status_code == 302
    assert state_of(plan.user_id).mastery.rating == 10


def test_bad_fields_are_named_and_nothing_is_written(primary) -> None:
    plan = load_one(1)
    lead = signed_in("lee", "lead")
    url = reverse("dashboard:edit_state", args=[PRODUCT, plan.user_id])
    fields = form_of(lead.get(url).content.decode())
    before = state_of(plan.user_id).to_dict()
    fields.update({"mastery_rating": "eleven", "journey": "lost", "wf-new-id": "w", "wf-new-confidence": "2"})
    key = next(k for k in fields if re.fullmatch(r"md-\d+-key", k))
    fields[key.replace("-key", "-json")] = "1"
    fields[key.replace("-key", "-value")] = "{not json"
    response = lead.post(url, fields)
    assert response.status_code == 400
    body = response.content.decode()
    assert "A whole number from 0 to 10." in body and "Choose one of onboarding, onboarded." in body
    assert "A number from 0 to 1" in body and "Not valid JSON" in body
    assert 'value="eleven"' in body and 'value="{not json"' in body  # what was typed is kept to correct
    assert state_of(plan.user_id).to_dict() == before


def test_permissions_csrf_and_grants(primary) -> None:
    plan = load_one(1)
    url = reverse("dashboard:edit_state", args=[PRODUCT, plan.user_id])
    assert signed_in("sam", "support").get(url).status_code == 403
    elsewhere = signed_in("lia", "lead", "another-product")
    assert elsewhere.get(url).status_code == 404
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(grant_products(make_person("lee", "lead")))
    fields = form_of(strict.get(url).content.decode())
    token = fields.pop("csrfmiddlewaretoken")
    assert strict.post(url, {**fields, "mastery_rating": "1"}).status_code == 403
    assert strict.post(url, {**fields, "mastery_rating": "1", "csrfmiddlewaretoken": token}).status_code == 302
    lead = signed_in("lou", "lead")
    assert lead.get(reverse("dashboard:rebuild_state", args=[PRODUCT, plan.user_id])).status_code == 403
    page = lead.get(reverse("dashboard:user", args=[PRODUCT, plan.user_id])).content.decode()
    assert 'id="edit-state"' in page and 'id="rebuild-state"' not in page


def test_snapshot_page_shows_the_changes_in_this_session_and_compare_any_two(primary) -> None:
    plan = load_one(3)
    sam = signed_in("sam", "support")
    first, second, third = (s.session_id for s in plan.sessions)
    page = sam.get(reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, second])).content.decode()
    assert "Changes in this session" in page and f"session {first}</b> → <b>session {second}" in page
    page = sam.get(reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, first])).content.decode()
    assert "This is the user's first session" in page
    compare = reverse("dashboard:compare", args=[PRODUCT, plan.user_id])
    page = sam.get(compare, {"a": third, "b": first}).content.decode()
    assert f"session {first}</b> → <b>session {third}" in page  # earlier first
    page = sam.get(compare, {"a": first, "b": "state"}).content.decode()
    assert "the live state" in page and 'class="diff"' in page
    assert sam.get(compare, {"a": "nope", "b": "state"}).status_code == 400


def test_summaries_written_by_hand_are_kept_and_an_earlier_version_restored(primary) -> None:
    plan = load_one(2)
    lead = signed_in("lee", "lead")
    user_url = reverse("dashboard:user", args=[PRODUCT, plan.user_id])
    write_url = reverse("dashboard:summary_write", args=[PRODUCT, plan.user_id])
    etag = re.search(r'name="etag" value="([0-9a-f]+)"', lead.get(write_url).content.decode()).group(1)
    assert lead.post(write_url, {"etag": etag, "text": "   "}).status_code == 400
    response = lead.post(write_url, {"etag": etag, "text": "Call them about invites."}, follow=True)
    assert state_of(plan.user_id).onboarding.summary == "Call them about invites."
    page = response.content.decode()
    assert "Summary history" in page and "Written by hand" in page
    assert lead.post(write_url, {"etag": etag, "text": "stale"}).status_code == 409  # the etag moved on
    first = SummaryRun.objects.filter(session_id=plan.sessions[0].session_id).exclude(applied_at=None).get()
    etag = re.search(r'name="etag" value="([0-9a-f]+)"', lead.get(user_url).content.decode()).group(1)
    restore = reverse("dashboard:summary_restore", args=[PRODUCT, plan.user_id])
    page = lead.post(restore, {"run_id": first.pk, "etag": etag}, follow=True).content.decode()
    assert state_of(plan.user_id).onboarding.summary == first.new_summary
    assert f"restored from version {first.pk}" in page
    assert AuditEntry.objects.filter(action="summary.write").count() == 2


def test_the_rebuild_page_previews_and_the_admin_downloads_the_kept_text(primary, request) -> None:
    plan = load_one(2)
    write_raw(primary, request.node.redis_url, PRODUCT, plan.user_id, "{broken")
    admin = signed_in("ada", "admin")
    url = reverse("dashboard:rebuild_state", args=[PRODUCT, plan.user_id])
    body = admin.get(url).content.decode()
    assert "{broken" in body and 'id="rebuild-count">2<' in body
    sha = re.search(r'name="raw_sha" value="([0-9a-f]+)"', body).group(1)
    assert admin.post(url, {"raw_sha": "0" * 64}).status_code == 409  # not what the preview was made from
    page = admin.post(url, {"raw_sha": sha}, follow=True).content.decode()
    assert "State rebuilt from 2 sessions" in page
    assert state_of(plan.user_id).sessions.count == 2
    link = re.search(r'href="([^"]+/quarantine/\d+\.txt)"', page).group(1)
    download = admin.get(link)
    assert download.content == b"{broken" and "attachment" in download["Content-Disposition"]
