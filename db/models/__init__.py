"""Peewee models, one module per domain; import them from here."""

from db.models.base import BaseModel, JSONField
from db.models.jobs import Job, JobStatus, PeriodicRun
from db.models.points import PointHistory, PointWallet
from db.models.users import User

ALL_MODELS = [User, PointWallet, PointHistory, Job, PeriodicRun]

__all__ = [
    "ALL_MODELS",
    "BaseModel",
    "JSONField",
    "Job",
    "JobStatus",
    "PeriodicRun",
    "PointHistory",
    "PointWallet",
    "User",
]
