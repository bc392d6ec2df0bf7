"""ORM models of the storage app, one module per concern."""

from .access import ProductGrant, ProductSettings
from .audit import AuditEntry
from .erasures import ErasedUser, Erasure, SinkErasure
from .facts import ProductCounter, UserMetadataFact, UserWorkflowFact
from .records import SessionSnapshotRecord, UserStateRecord
from .segments import Segment
from .sinks import SinkDestination, WebhookDelivery
from .summaries import SummaryClaim, SummaryRun
from .support import QuarantinedState, StaffEdit

__all__ = [
    "AuditEntry",
    "ErasedUser",
    "Erasure",
    "ProductCounter",
    "ProductGrant",
    "ProductSettings",
    "QuarantinedState",
    "Segment",
    "SessionSnapshotRecord",
    "SinkDestination",
    "SinkErasure",
    "StaffEdit",
    "SummaryClaim",
    "SummaryRun",
    "UserMetadataFact",
    "UserStateRecord",
    "UserWorkflowFact",
    "WebhookDelivery",
]
