"""Entries written from async code keep one database connection, whichever request they come from.

Django runs each ASGI request's thread-sensitive calls in a thread of that
request alone (``ThreadSensitiveContext``), and connections belong to a
thread: an entry saved there opened a connection per request.
"""

from __future__ import annotations

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db.backends.signals import connection_created

from autoplay_storage import audit
from autoplay_storage.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)


async def test_entries_from_many_requests_share_one_connection() -> None:
    opened: list[object] = []

    def created(sender: object, connection: object, **_: object) -> None:
        opened.append(connection)

    await audit.arecord(audit.Action.USER_VIEW, actor=audit.Actor.staff("warm"), product_id="p", user_id="u")
    connection_created.connect(created)
    try:
        for n in range(5):
            async with ThreadSensitiveContext():  # what Django's ASGI handler wraps every request in
                await audit.arecord(
                    audit.Action.STATE_PATCH, actor=audit.Actor.staff("ana"), product_id="p", user_id=f"u{n}"
                )
    finally:
        connection_created.disconnect(created)
    assert opened == []  # each request's entry went through the writer's kept connection
    assert await sync_to_async(AuditEntry.objects.filter(action="state.patch").count)() == 5
