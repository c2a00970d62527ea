"""The aiohttp application factory and its routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import dramatiq
import peewee
import redis.asyncio as aioredis
from aiohttp import web

from db.settings import Settings
from jobs.clock import Clock
from web.auth import TOKENS, Tokens
from web.commands import DB, GATEWAY, JobGateway
from web.db import DbExecutor
from web.metrics import HTTP_METRICS, HttpMetrics, metrics_middleware
from web.phone import PHONE_CODES, PhoneCodes
from web.responses import error_middleware
from web.sms import SmsSender, load_sender
from web.views import concerts, coupons, jobs, ops, points, shop, users
from web.views.ops import REDIS
from web.views.users import SETTINGS
from workers.bootstrap import make_waiting_room
from workers.coupon_gate import CouponGate

log = logging.getLogger(__name__)
API = "/api/v1"


def redis_client(url: str, max_connections: int = 64) -> aioredis.Redis:
    """An asyncio Redis client whose bounded pool makes bursts wait instead of failing."""
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5)
    return aioredis.Redis(connection_pool=pool)


def add_routes(app: web.Application) -> None:
    """Wire every path of the API."""
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get(f"{API}/healthz", ops.healthz)
    app.router.add_get(f"{API}/readyz", ops.readyz)
    app.router.add_get(f"{API}/metrics", ops.metrics)
    app.router.add_post(f"{API}/users/signup", users.signup)
    app.router.add_post(f"{API}/users/login", users.login)
    app.router.add_post(f"{API}/users/refresh", users.refresh)
    app.router.add_post(f"{API}/users/logout", users.logout)
    app.router.add_get(f"{API}/users/me", users.me)
    app.router.add_post(f"{API}/users/me/phone/code", users.phone_code)
    app.router.add_post(f"{API}/users/me/phone/verify", users.phone_verify)
    app.router.add_get(f"{API}/jobs", jobs.list_jobs)
    app.router.add_get(f"{API}/jobs/{{job_id}}", jobs.get_job)
    app.router.add_post(f"{API}/points/charge", points.charge)
    app.router.add_get(f"{API}/points", points.balance)
    app.router.add_get(f"{API}/points/history", points.history)
    app.router.add_get(f"{API}/products", shop.list_products)
    app.router.add_get(f"{API}/products/best", shop.best_products)
    app.router.add_get(f"{API}/products/{{product_id}}", shop.get_product)
    app.router.add_post(f"{API}/admin/products", shop.create_product)
    app.router.add_get(f"{API}/cart", shop.get_cart)
    app.router.add_put(f"{API}/cart/items/{{product_id}}", shop.put_cart_item)
    app.router.add_delete(f"{API}/cart/items/{{product_id}}", shop.delete_cart_item)
    app.router.add_post(f"{API}/orders", shop.create_order)
    app.router.add_get(f"{API}/orders", shop.list_orders)
    app.router.add_get(f"{API}/orders/{{order_id}}", shop.get_order)
    app.router.add_post(f"{API}/orders/{{order_id}}/payment", shop.pay_order)
    app.router.add_post(f"{API}/admin/coupons", coupons.create_coupon)
    app.router.add_get(f"{API}/coupons", coupons.list_coupons)
    app.router.add_post(f"{API}/coupons/{{coupon_id}}/issue", coupons.issue_coupon)
    app.router.add_get(f"{API}/users/me/coupons", coupons.my_coupons)
    app.router.add_post(f"{API}/queue/tokens", concerts.take_token)
    app.router.add_get(f"{API}/queue/tokens/me", concerts.my_place)
    app.router.add_get(f"{API}/concerts", concerts.list_concerts)
    app.router.add_get(f"{API}/concerts/{{concert_id}}/dates", concerts.dates)
    app.router.add_get(f"{API}/concerts/{{concert_id}}/dates/{{date}}/seats", concerts.seats)
    app.router.add_post(f"{API}/reservations", concerts.reserve)
    app.router.add_post(f"{API}/reservations/{{reservation_id}}/payment", concerts.pay)
    app.router.add_post(f"{API}/admin/concerts", concerts.create_concert)


def create_app(
    settings: Settings,
    database: peewee.Database,
    broker: dramatiq.Broker,
    client: aioredis.Redis,
    clock: Clock | None = None,
    sms: SmsSender | None = None,
) -> web.Application:
    """Build the web application on already-created connections and broker."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[metrics_middleware, error_middleware],
    )
    db = DbExecutor(database, settings.db_pool_size)
    gateway = JobGateway(db, broker, client, settings.redis_prefix, clock or Clock())
    app[SETTINGS] = settings
    app[DB] = db
    app[REDIS] = client
    app[GATEWAY] = gateway
    app[HTTP_METRICS] = HttpMetrics()
    app[TOKENS] = Tokens(
        settings.jwt_secret,
        settings.access_token_ttl,
        settings.refresh_token_ttl,
        client,
        settings.redis_prefix,
    )
    app[PHONE_CODES] = PhoneCodes(
        client,
        settings.redis_prefix,
        sms or load_sender(settings.sms_sender),
        settings.phone_code_ttl,
        settings.phone_code_max_tries,
        settings.phone_code_rate,
        settings.phone_code_rate_window,
    )
    app[concerts.ROOM] = make_waiting_room(client, settings)
    app[coupons.COUPON_GATE] = CouponGate(client, settings.redis_prefix)
    add_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()
        db.close()

    app.cleanup_ctx.append(lifecycle)
    return app
