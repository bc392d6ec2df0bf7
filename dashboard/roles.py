"""Roles are Django groups: support (view), lead (view, re-run summary, edit a state, export a user, who
accessed a user), admin (everything).

The audit page (``autoplay_storage.view_auditentry``), every product
(``autoplay_storage.access_all_products``), erasure and rebuilds are the admin role's alone;
support and lead see the products granted to them.

Shared by the data migration (historical models) and ``autoplay_bootstrap``
(run on every ``make run``), so permissions added later by other apps, such as
API keys or sinks, reach the admin role without a new migration.
"""

from __future__ import annotations

from typing import Any

VIEW_CONSOLE = "dashboard.view_console"
RERUN_SUMMARY = "autoplay_storage.rerun_summary"
VIEW_RECENT_ACCESS = "autoplay_storage.view_recent_access"
VIEW_AUDIT = "autoplay_storage.view_auditentry"
EXPORT_USER = "autoplay_storage.export_user"
ERASE_USER = "autoplay_storage.erase_user"  # admins only: the admin role holds every permission
EDIT_STATE = "autoplay_storage.edit_state"
REBUILD_STATE = "autoplay_storage.rebuild_state"  # admins only (the admin role holds every permission)

SUPPORT = "support"
LEAD = "lead"
ADMIN = "admin"

ROLE_PERMISSIONS: dict[str, list[str]] = {
    SUPPORT: [VIEW_CONSOLE, "autoplay_storage.view_summaryrun"],
    LEAD: [
        VIEW_CONSOLE, "autoplay_storage.view_summaryrun", RERUN_SUMMARY, EDIT_STATE, EXPORT_USER, VIEW_RECENT_ACCESS
    ],
}


def sync_roles(
    group_model: Any, permission_model: Any, *, strict: bool = True, using: str = "default"
) -> dict[str, int]:
    """Create or refresh the three groups; returns how many permissions each holds.

    Takes the model classes so a migration can pass its historical ones, and
    the database it migrates (``using``). ``strict=False`` (the first roles
    migration) grants what exists so far: a permission whose model a later
    migration adds is granted by that one.
    """
    counts: dict[str, int] = {}
    groups, permissions = group_model.objects.using(using), permission_model.objects.using(using)
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = groups.get_or_create(name=role)
        perms = []
        for name in names:
            app_label, codename = name.split(".", 1)
            perm = permissions.filter(content_type__app_label=app_label, codename=codename).first()
            if perm is None and not strict:
                continue
            if perm is None:
                raise LookupError(f"permission {name} does not exist; run migrate first")
            perms.append(perm)
        group.permissions.set(perms)
        counts[role] = len(perms)
    admin, _ = groups.get_or_create(name=ADMIN)
    everything = list(permissions.all())
    admin.permissions.set(everything)
    counts[ADMIN] = len(everything)
    return counts
