"""Data migrations write to the database being migrated (``migrate --database``), never to the default one.

A deployment may keep the primary on an alias of its own; migrating that
alias must leave it with its own roles and permissions. (Before, the data
migrations queried the default database: on a fresh one, migrating another
alias failed; on a migrated one, the roles were granted there instead.)
"""

from __future__ import annotations

import copy
from pathlib import Path

from django.core.management import call_command
from django.db import connections


def test_migrating_another_alias_grants_the_roles_there(tmp_path: Path, django_db_blocker) -> None:
    from django.contrib.auth.models import Group

    settings = copy.deepcopy(connections.settings["default"])  # every key Django expects, then a SQLite file
    if settings["ENGINE"] != "django.db.backends.sqlite3":
        settings.update(ENGINE="django.db.backends.sqlite3", OPTIONS={}, HOST="", PORT="", USER="", PASSWORD="")
    settings.update(NAME=str(tmp_path / "other.sqlite3"), TEST={"NAME": str(tmp_path / "other.sqlite3")})
    connections.settings["other"] = settings
    try:
        with django_db_blocker.unblock():
            call_command("migrate", database="other", verbosity=0)
            groups = {g.name: g.permissions.count() for g in Group.objects.using("other").all()}
            assert set(groups) == {"support", "lead", "admin"}, groups
            lead = Group.objects.using("other").get(name="lead")
            assert lead.permissions.filter(codename="view_recent_access").exists()  # 0009's grant, made there
            assert all(groups.values()), groups
    finally:
        connections["other"].close()
        del connections["other"]
        del connections.settings["other"]
