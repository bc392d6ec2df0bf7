"""ORM models of the storage app, one module per concern."""

from .records import SessionSnapshotRecord, UserStateRecord
from .sinks import SinkDestination, WebhookDelivery
from .summaries import SummaryClaim, SummaryRun

__all__ = [
    "SessionSnapshotRecord",
    "SinkDestination",
    "SummaryClaim",
    "SummaryRun",
    "UserStateRecord",
    "WebhookDelivery",
]
