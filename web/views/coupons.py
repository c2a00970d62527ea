"""``/coupons``: first-come coupons (issuing is a job) and the user's coupons."""

from __future__ import annotations

from aiohttp import web

from jobs import coupons
from jobs.clock import utcnow
from jobs.errors import DomainError, InvalidRequest
from web.auth import require_admin, require_user
from web.commands import DB, GATEWAY, idempotency_key
from web.responses import json_response
from web.validation import Int, Str, page_params, parse_time, path_id, read_json
from workers.coupon_gate import CouponGate

COUPON_GATE = web.AppKey("coupon_gate", CouponGate)

NEW_COUPON = {
    "name": Str(1, 200),
    "discount_type": Str(5, 7, r"FIXED|PERCENT", "must be FIXED or PERCENT"),
    "discount_value": Int(1, 1_000_000_000),
    "stock": Int(0, 10_000_000),
    "starts_at": Str(1, 40),
    "ends_at": Str(1, 40),
}


async def create_coupon(request: web.Request) -> web.Response:
    """``POST /admin/coupons`` (admin)."""
    await require_admin(request)
    body = await read_json(request, NEW_COUPON)
    starts, ends = parse_time(body["starts_at"], "starts_at"), parse_time(body["ends_at"],
                                                                          "ends_at")
    if ends <= starts:
        raise InvalidRequest({"ends_at": "must be after starts_at"})
    if body["discount_type"] == "PERCENT" and body["discount_value"] > 100:
        raise InvalidRequest({"discount_value": "a PERCENT discount must be 1..100"})
    coupon = await request.app[DB](coupons.create_coupon, body["name"], body["discount_type"],
                                   body["discount_value"], body["stock"], starts, ends, utcnow())
    return json_response(coupon, 201)


async def list_coupons(request: web.Request) -> web.Response:
    """``GET /coupons``."""
    await require_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](coupons.list_coupons, limit, cursor))


async def issue_coupon(request: web.Request) -> web.Response:
    """``POST /coupons/{id}/issue`` -> job ``coupons.issue``; 404 for an unknown coupon."""
    user_id = await require_user(request)
    coupon_id = path_id(request, "coupon_id", "COUPON_NOT_FOUND")
    await read_json(request, {})
    refusal = None
    if idempotency_key(request) is None:
        # The gate turns away, at the door, a request that cannot win: it becomes a job
        # recorded already failed, and no worker or coupon row is touched for it.
        gate, now = request.app[COUPON_GATE], utcnow()
        try:
            if gate.judge(await gate.try_pass(coupon_id, user_id, now)) == "unknown":
                await gate.load(*await request.app[DB](coupons.gate_state, coupon_id))
                gate.judge(await gate.try_pass(coupon_id, user_id, now))
        except DomainError as e:
            if e.code == "COUPON_NOT_FOUND":
                raise
            refusal = e
    else:
        await request.app[DB](coupons.get_coupon, coupon_id)  # 404 for an unknown coupon
    return await request.app[GATEWAY].submit(request, user_id, "coupons.issue",
                                             {"coupon_id": coupon_id}, refusal)


async def my_coupons(request: web.Request) -> web.Response:
    """``GET /users/me/coupons``."""
    user_id = await require_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](coupons.my_coupons, user_id, limit, cursor))
