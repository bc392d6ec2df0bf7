"""ORM models of the storage app, one module per concern."""

from .access import ProductGrant, ProductSettings
from .audit import AuditEntry
from .records import SessionSnapshotRecord, UserStateRecord
from .sinks import SinkDestination, WebhookDelivery
from .summaries import SummaryClaim, SummaryRun
from .support import QuarantinedState, StaffEdit

__all__ = [
    "AuditEntry",
    "ProductGrant",
    "ProductSettings",
    "QuarantinedState",
    "SessionSnapshotRecord",
    "SinkDestination",
    "StaffEdit",
    "SummaryClaim",
    "SummaryRun",
    "UserStateRecord",
    "WebhookDelivery",
]
