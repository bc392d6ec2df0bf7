"""ORM models of the storage app, one module per concern."""

from .facts import ProductCounter, UserMetadataFact, UserWorkflowFact
from .records import SessionSnapshotRecord, UserStateRecord
from .segments import Segment
from .sinks import SinkDestination, WebhookDelivery
from .summaries import SummaryClaim, SummaryRun

__all__ = [
    "ProductCounter",
    "Segment",
    "SessionSnapshotRecord",
    "SinkDestination",
    "SummaryClaim",
    "SummaryRun",
    "UserMetadataFact",
    "UserStateRecord",
    "UserWorkflowFact",
    "WebhookDelivery",
]
