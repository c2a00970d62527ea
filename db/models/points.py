"""Point wallets and their append-only history."""

from __future__ import annotations

import peewee

from db.models.base import BaseModel
from db.models.users import User


class PointWallet(BaseModel):
    """One balance per user, and the points held in auction escrow (``held``, not
    spendable); CHECKs keep both non-negative whatever the code does."""

    user = peewee.ForeignKeyField(User, primary_key=True, on_delete="CASCADE")
    balance = peewee.BigIntegerField(default=0, constraints=[peewee.Check("balance >= 0")])
    held = peewee.BigIntegerField(default=0, constraints=[peewee.Check("held >= 0")])
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "point_wallets"


class PointHistory(BaseModel):
    """A signed movement of the spendable balance: CHARGE, REFUND, RELEASE and SALE are
    positive, USE and HOLD negative (a HOLD moves points into ``held``, a RELEASE back)."""

    id = peewee.BigAutoField()
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    type = peewee.CharField(max_length=8)
    amount = peewee.BigIntegerField()
    balance_after = peewee.BigIntegerField(constraints=[peewee.Check("balance_after >= 0")])
    ref = peewee.CharField(max_length=100)
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "point_history"
        indexes = ((("user", "id"), False),)
