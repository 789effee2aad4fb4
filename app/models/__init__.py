"""ORM models, one file per table; importing this package registers them all on Base.metadata."""

from app.models.api_key import ApiKey, Scope
from app.models.base import Base
from app.models.budget import Budget, BudgetAction, BudgetAlert, BudgetPeriod
from app.models.catalog import CatalogVersion, PriceOverride
from app.models.dataset import Dataset
from app.models.estimate import Estimate
from app.models.job import (
    FINAL_STATUSES,
    UNFINISHED_STATUSES,
    CostSource,
    Job,
    JobEvent,
    JobStatus,
    JobTag,
)
from app.models.job_attempt import JobAttempt
from app.models.job_eval import JobEval
from app.models.job_seat import JobSeat, SeatState
from app.models.price_import import ImportedPrice, PriceImport
from app.models.rate_card import RateCardLine
from app.models.report_rollup import report_rollups
from app.models.study import Study, StudyPilot, StudyStatus
from app.models.webhook import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from app.models.worker import WorkerNode

__all__ = [
    "FINAL_STATUSES",
    "UNFINISHED_STATUSES",
    "ApiKey",
    "Base",
    "Budget",
    "BudgetAction",
    "BudgetAlert",
    "BudgetPeriod",
    "CatalogVersion",
    "CostSource",
    "Dataset",
    "DeliveryStatus",
    "Estimate",
    "ImportedPrice",
    "Job",
    "JobAttempt",
    "JobEval",
    "JobEvent",
    "JobSeat",
    "JobStatus",
    "JobTag",
    "PriceImport",
    "PriceOverride",
    "RateCardLine",
    "Scope",
    "SeatState",
    "Study",
    "StudyPilot",
    "StudyStatus",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSubscription",
    "WorkerNode",
    "report_rollups",
]
