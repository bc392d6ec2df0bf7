"""ORM models of the storage app, one module per concern."""

from .access import ProductGrant, ProductSettings
from .audit import AuditEntry
from .erasures import ErasedUser, Erasure, SinkErasure
from .facts import ProductCounter, UserMetadataFact, UserWorkflowFact
from .records import SessionSnapshotRecord, UserStateRecord
from .segments import Segment
from .sinks import SinkDestination, WebhookDelivery
from .summaries import SummaryClaim, SummaryRun

__all__ = [
    "AuditEntry",
    "ErasedUser",
    "Erasure",
    "ProductCounter",
    "ProductGrant",
    "ProductSettings",
    "Segment",
    "SessionSnapshotRecord",
    "SinkDestination",
    "SinkErasure",
    "SummaryClaim",
    "SummaryRun",
    "UserMetadataFact",
    "UserStateRecord",
    "UserWorkflowFact",
    "WebhookDelivery",
]
