"""One thin actor per command: load the job, call one function in ``jobs/``.

Importing this module declares the actors on the global broker, so only
``workers.bootstrap.start`` imports it, after building that broker.
"""

from __future__ import annotations

from datetime import date

import dramatiq

from db.models import Job
from jobs import concerts, coupons, orders, points
from jobs.errors import DomainError
from workers.broker import SWEEPS_QUEUE
from workers.lifecycle import command
from workers.periodic import run_periodic
from workers.runtime import Runtime


@command("points.charge")
def charge_points(job: Job, rt: Runtime) -> dict:
    """``points.charge``: add ``amount`` points to the job owner's balance."""
    return points.charge(job.user_id, job.payload["amount"], f"job:{job.id}", rt.clock.now())


@command("orders.create")
def create_order(job: Job, rt: Runtime) -> dict:
    """``orders.create``: take stock and record a NOT_PAID order."""
    items = job.payload.get("items")
    lines = None if items is None else [(i["product_id"], i["quantity"]) for i in items]
    return orders.create_order(job.user_id, lines, job.payload.get("user_coupon_id"),
                               rt.clock.now())


@command("orders.pay")
def pay_order(job: Job, rt: Runtime) -> dict:
    """``orders.pay``: spend points and mark the order PAID."""
    return orders.pay_order(job.user_id, job.payload["order_id"], rt.clock.now())


def admit_to_coupon(job: Job, rt: Runtime) -> None:
    """Before any transaction: the Redis gate turns away requests that cannot win."""
    rt.coupon_gate.admit(job.payload["coupon_id"], job.user_id, rt.clock.now())


def return_coupon_place(job: Job, rt: Runtime) -> None:
    """After a fault that failed the job for good: the place it took goes back."""
    rt.coupon_gate.give_back(job.payload["coupon_id"], job.user_id)


@command("coupons.issue", gate=admit_to_coupon, give_up=return_coupon_place)
def issue_coupon(job: Job, rt: Runtime) -> dict:
    """``coupons.issue``: the database decides, and a lost place goes back to the gate."""
    coupon_id = job.payload["coupon_id"]
    try:
        return coupons.issue_coupon(job.user_id, coupon_id, rt.clock.now())
    except DomainError as refusal:
        if refusal.code == "COUPON_SOLD_OUT":  # the gate over-admitted (it was rebuilt)
            rt.coupon_gate.mark_sold_out(coupon_id)
        elif refusal.code != "COUPON_ALREADY_ISSUED":
            rt.coupon_gate.give_back(coupon_id, job.user_id)
        raise


@command("concert.reserve")
def reserve_seat(job: Job, rt: Runtime) -> dict:
    """``concert.reserve``: hold a seat for 5 minutes."""
    p = job.payload
    return concerts.reserve_seat(job.user_id, p["concert_id"], date.fromisoformat(p["date"]),
                                 p["seat_no"], rt.clock.now())


@command("concert.pay")
def pay_reservation(job: Job, rt: Runtime) -> dict:
    """``concert.pay``: spend points, confirm the seat; the user's queue token then ends."""
    result = concerts.pay_reservation(job.user_id, job.payload["reservation_id"],
                                      rt.clock.now())
    rt.waiting_room.leave(job.payload["concert_id"], job.user_id)
    return result


@dramatiq.actor(actor_name="periodic", queue_name=SWEEPS_QUEUE, max_retries=0)
def periodic(schedule_id: str, slot: int) -> None:
    """Scheduled work, sent by the scheduler as ``(schedule_id, slot)``."""
    run_periodic(schedule_id, slot)
