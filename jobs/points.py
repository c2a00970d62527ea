"""Points: charge, spend, refund, escrow, balance and history.

The balance is never negative (a CHECK constraint and conditional updates) and always
equals the sum of the history, because every change writes both in one transaction.
``spend`` and ``refund`` are what orders, seats and auctions use to move points;
``hold`` and ``release`` move points between the spendable balance and ``held`` (auction
escrow: balance + held is what the user owns), and ``credit`` pays a seller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from db.connection import database, execute, is_postgres
from db.models import PointHistory, PointWallet
from jobs.clock import iso
from jobs.errors import DomainError
from jobs.pagination import id_page
from jobs.platform import Command, Context, Domain

MAX_BALANCE = 10_000_000
CHARGE, USE, REFUND = "CHARGE", "USE", "REFUND"
HOLD, RELEASE, SALE = "HOLD", "RELEASE", "SALE"


def _require_transaction() -> None:
    if not database.in_transaction():
        raise RuntimeError("point movements must run inside database.atomic()")


_MOVE = ("UPDATE point_wallets SET balance = balance + %s, held = held - %s, updated_at = %s"
         " WHERE user_id = %s")
_LOG_INTO = "INSERT INTO point_history (user_id, type, amount, balance_after, ref, created_at)"
_LOG = _LOG_INTO + " VALUES (%s, %s, %s, %s, %s, %s)"
# the history row of the move in ``w`` (none if the guard refused it)
_LOG_MOVED = _LOG_INTO + " SELECT %s, %s, %s, balance, %s, %s FROM w RETURNING balance_after"


def _move(user_id: int, delta: int, kind: str, ref: str, now: datetime, guard: str,
          bound: int, escrow: int = 0) -> int | None:
    """Apply ``delta`` where ``balance <guard> bound`` holds, log it; the new balance or None.

    ``escrow`` is the part of ``delta`` that comes out of ``held`` (a release is
    ``delta = escrow > 0``, a hold ``delta = escrow < 0``); ``held`` may not go negative.
    """
    _require_transaction()
    guard_held = " AND held >= %s" if escrow > 0 else ""
    params = (delta, escrow, now, user_id, bound) + ((escrow,) if escrow > 0 else ())
    move = f"{_MOVE} AND balance {guard} %s{guard_held}"
    if is_postgres():  # both in one statement: one round trip
        row = execute(f"WITH w AS ({move} RETURNING balance) {_LOG_MOVED}",
                      (*params, user_id, kind, delta, ref, now), prepare=True).fetchone()
        return None if row is None else row[0]
    row = execute(f"{move} RETURNING balance", params).fetchone()
    if row is None:
        return None
    execute(_LOG, (user_id, kind, delta, row[0], ref, now))
    return row[0]


def charge(user_id: int, amount: int, ref: str, now: datetime) -> dict:
    """Add ``amount`` points; ``MAX_BALANCE_EXCEEDED`` past 10,000,000."""
    balance = _move(user_id, amount, CHARGE, ref, now, "<=", MAX_BALANCE - amount)
    if balance is None:
        _require_wallet(user_id)
        raise DomainError("MAX_BALANCE_EXCEEDED", f"the balance cap is {MAX_BALANCE:,} points")
    return {"balance": balance}


def spend(user_id: int, amount: int, ref: str, now: datetime) -> int:
    """Take ``amount`` points for ``ref``; ``INSUFFICIENT_POINTS`` if the balance is short."""
    balance = _move(user_id, -amount, USE, ref, now, ">=", amount)
    if balance is None:
        _require_wallet(user_id)
        raise DomainError("INSUFFICIENT_POINTS", f"{amount} points are needed")
    return balance


def refund(user_id: int, amount: int, ref: str, now: datetime) -> int:
    """Give back ``amount`` points spent on ``ref`` (a refund may pass the charge cap)."""
    balance = _move(user_id, amount, REFUND, ref, now, ">=", 0)
    if balance is None:
        _require_wallet(user_id)
    return balance


def hold(user_id: int, amount: int, ref: str, now: datetime) -> int:
    """Move ``amount`` spendable points into escrow; ``INSUFFICIENT_POINTS`` if short."""
    balance = _move(user_id, -amount, HOLD, ref, now, ">=", amount, escrow=-amount)
    if balance is None:
        _require_wallet(user_id)
        raise DomainError("INSUFFICIENT_POINTS", f"{amount} points are needed")
    return balance


def release(user_id: int, amount: int, ref: str, now: datetime) -> int:
    """Give ``amount`` escrowed points back to the spendable balance."""
    balance = _move(user_id, amount, RELEASE, ref, now, ">=", 0, escrow=amount)
    if balance is None:  # the caller's bookkeeping and the wallet disagree: roll back
        raise RuntimeError(f"user {user_id} does not hold {amount} points for {ref}")
    return balance


def credit(user_id: int, amount: int, ref: str, now: datetime) -> int:
    """Pay ``amount`` points to a seller for ``ref`` (history ``SALE``; may pass the cap)."""
    balance = _move(user_id, amount, SALE, ref, now, ">=", 0)
    if balance is None:
        _require_wallet(user_id)
    return balance


def spendable(user_id: int) -> int:
    """The spendable balance (inside a transaction that already locks what matters)."""
    wallet = PointWallet.get_or_none(PointWallet.user == user_id)
    return wallet.balance if wallet else 0


def _require_wallet(user_id: int) -> None:
    if not PointWallet.select().where(PointWallet.user == user_id).exists():
        raise DomainError("USER_NOT_FOUND", "no such user")


def balance(user_id: int) -> dict:
    """The spendable balance and the points held in escrow."""
    wallet = PointWallet.get_or_none(PointWallet.user == user_id)
    return {"balance": wallet.balance if wallet else 0, "held": wallet.held if wallet else 0}


def history(user_id: int, limit: int, cursor: str | None) -> dict:
    """The user's point movements, newest first, one page."""
    items, next_cursor = id_page(PointHistory.select().where(PointHistory.user == user_id),
                                 PointHistory.id, limit, cursor, newest_first=True)
    return {
        "items": [
            {
                "id": h.id,
                "type": h.type,
                "amount": h.amount,
                "balance_after": h.balance_after,
                "ref": h.ref,
                "created_at": iso(h.created_at),
            }
            for h in items
        ],
        "next_cursor": next_cursor,
    }


class Charge(msgspec.Struct, forbid_unknown_fields=True):
    """``points.charge``: points to add."""

    amount: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class Balance(msgspec.Struct):
    """The balance after a charge."""

    balance: int


def charge_points(ctx: Context, cmd: Charge) -> dict:
    """``points.charge``: add ``amount`` points to the job owner's balance."""
    return charge(ctx.user_id, cmd.amount, f"job:{ctx.job.id}", ctx.now)


DOMAIN = Domain(
    name="points",
    commands=(
        Command("points.charge", Charge, charge_points, "POST", "/points/charge",
                "Charge points", result=Balance, errors=("MAX_BALANCE_EXCEEDED",)),
    ),
    models=(PointWallet, PointHistory),
)
