"""ORM models of the storage app, one module per concern."""

from .access import ProductGrant, ProductSettings
from .audit import AuditEntry
from .erasures import ErasedUser, Erasure, SinkErasure
from .records import SessionSnapshotRecord, UserStateRecord
from .sinks import SinkDestination, WebhookDelivery
from .summaries import SummaryClaim, SummaryRun

__all__ = [
    "AuditEntry",
    "ErasedUser",
    "Erasure",
    "ProductGrant",
    "ProductSettings",
    "SessionSnapshotRecord",
    "SinkDestination",
    "SinkErasure",
    "SummaryClaim",
    "SummaryRun",
    "UserStateRecord",
    "WebhookDelivery",
]
