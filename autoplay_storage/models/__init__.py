"""ORM models of the storage app, one module per concern."""

from .records import SessionSnapshotRecord, UserStateRecord
from .sinks import SinkDestination, WebhookDelivery
from .summaries import SummaryRun

__all__ = ["SessionSnapshotRecord", "SinkDestination", "SummaryRun", "UserStateRecord", "WebhookDelivery"]
