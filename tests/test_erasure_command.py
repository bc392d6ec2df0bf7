"""``manage.py autoplay_erase``: bulk erasure from arguments and a file, resumable, audited."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from autoplay_storage.models import AuditEntry, Erasure
from tests.support.dashboard import PRODUCT, configure_primary, load_demo, with_storage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def users(settings) -> list[str]:
    configure_primary("database", settings)
    return load_demo(4)


def held(user_id: str) -> bool:
    async def go(storage) -> bool:
        return await storage.primary.get_raw_user_state(PRODUCT, user_id) is not None

    return with_storage(go)


def test_erases_from_arguments_and_a_file_and_a_rerun_only_finishes_what_is_left(users, tmp_path: Path) -> None:
    listed = tmp_path / "requests.txt"
    listed.write_text(f"# tickets 17 and 18\n{users[1]}\n\n{users[2]}\n{users[0]}\n", encoding="utf-8")
    out = StringIO()
    call_command("autoplay_erase", PRODUCT, users[0], "--from-file", str(listed), stdout=out, stderr=StringIO())
    assert "Erased 3 user(s); 0 already erased" in out.getvalue()
    assert [held(u) for u in users] == [False, False, False, True]
    assert Erasure.objects.filter(requested_by="system:manage.py autoplay_erase").count() == 3
    entries = AuditEntry.objects.filter(action="user.erase", actor="manage.py autoplay_erase")
    assert sorted(entries.values_list("user_id", flat=True)) == sorted(users[:3])

    out = StringIO()  # interrupted and run again with one more: the done ones keep their receipts
    call_command("autoplay_erase", PRODUCT, *users, stdout=out, stderr=StringIO())
    assert "Erased 1 user(s); 3 already erased (same receipt)" in out.getvalue()
    assert Erasure.objects.count() == 4 and not held(users[3])


def test_bad_input_says_what_is_wrong(users, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="give a product id and at least one user id"):
        call_command("autoplay_erase", PRODUCT)
    with pytest.raises(CommandError, match="cannot read"):
        call_command("autoplay_erase", PRODUCT, "--from-file", str(tmp_path / "missing.txt"))
    assert not Erasure.objects.exists()
