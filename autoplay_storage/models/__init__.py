"""ORM models of the storage app, one module per concern."""

from .access import ProductGrant, ProductSettings
from .audit import AuditEntry
from .records import SessionSnapshotRecord, UserStateRecord
from .sinks import SinkDestination, WebhookDelivery
from .summaries import SummaryClaim, SummaryRun

__all__ = [
    "AuditEntry",
    "ProductGrant",
    "ProductSettings",
    "SessionSnapshotRecord",
    "SinkDestination",
    "SummaryClaim",
    "SummaryRun",
    "UserStateRecord",
    "WebhookDelivery",
]
