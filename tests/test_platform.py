"""The platform contract: a command declared once (here, in this test module) is taken at
the door, run by a worker and described in the OpenAPI, with no other file edited."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Annotated

import dramatiq
import msgspec
import pytest
import redis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from db.connection import database
from jobs.platform import REGISTRY, Command, Context, Domain, load_domains
from tests.conftest import REDIS_URL
from web.app import create_app, domain_routes, redis_client
from web.openapi import build
from workers import bootstrap


class Echo(msgspec.Struct, forbid_unknown_fields=True):
    """``test.echo``: a word, said back; ``thing_id`` comes from the URL."""

    thing_id: Annotated[int, msgspec.Meta(ge=1)]
    word: Annotated[str, msgspec.Meta(min_length=1, max_length=10)]


class Echoed(msgspec.Struct):
    """What ``test.echo`` answers."""

    thing_id: int
    echo: str


def echo(ctx: Context, cmd: Echo) -> dict:
    """Say the word back, with who asked."""
    return {"thing_id": cmd.thing_id, "echo": cmd.word, "by": ctx.user_id}


ECHO = Domain("echo", commands=(
    Command("test.echo", Echo, echo, "POST", "/test/things/{thing_id}/echo", "Echo a word",
            result=Echoed, not_found="THING_NOT_FOUND", errors=("NOTHING_TO_SAY",)),
))


@pytest.fixture
def echo_domain() -> None:
    REGISTRY.register(ECHO)  # the one registration
    yield
    REGISTRY.unregister("echo")


def test_a_command_declared_in_a_test_module_is_taken_run_and_described(
        echo_domain, settings, clean_db):
    prefix = f"bzt-echo-{uuid.uuid4().hex[:8]}"
    local = dataclasses.replace(settings, redis_prefix=prefix)
    sync = redis.Redis.from_url(REDIS_URL)
    outer = database.obj
    rt = bootstrap.start(local, sync)
    worker = dramatiq.Worker(rt.broker, worker_threads=2, worker_timeout=50)
    worker.start()

    async def scenario() -> None:
        app = create_app(local, rt.database, rt.broker, redis_client(REDIS_URL))
        async with TestServer(app) as server, ClientSession(str(server.make_url(""))) as http:
            await http.post("/api/v1/users/signup",
                            json={"username": "echoer", "password": "password123"})
            login = await (await http.post("/api/v1/users/login", json={
                "username": "echoer", "password": "password123"})).json()
            auth = {"Authorization": f"Bearer {login['access_token']}"}
            # When the new command is sent, asking to wait for its outcome
            reply = await http.post("/api/v1/test/things/5/echo", json={"word": "hi"},
                                    headers=auth | {"Prefer": "wait=10"})
            job = await reply.json()
            # Then a worker ran its handler with the payload the door built
            assert reply.status == 200, job
            assert job["type"] == "test.echo"
            assert job["result"] == {"thing_id": 5, "echo": "hi", "by": 1}
            # And the door validates with its schema
            bad = await http.post("/api/v1/test/things/5/echo", json={"word": 7, "x": 1},
                                  headers=auth)
            error = (await bad.json())["error"]
            assert (bad.status, error["code"]) == (400, "INVALID_REQUEST")
            assert set(error["fields"]) == {"word", "x"}
            smuggled = await http.post("/api/v1/test/things/5/echo",
                                       json={"word": "a", "thing_id": 9}, headers=auth)
            assert (await smuggled.json())["error"]["fields"] == {
                "thing_id": "is not a known field"}
            missing = await http.post("/api/v1/test/things/nope/echo", json={"word": "a"},
                                      headers=auth)
            assert (missing.status, (await missing.json())["error"]["code"]) == (
                404, "THING_NOT_FOUND")
            # And the OpenAPI describes it
            doc = await (await http.get("/api/v1/openapi.json")).json()
            op = doc["paths"]["/api/v1/test/things/{thing_id}/echo"]["post"]
            assert op["x-job-type"] == "test.echo"
            body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            schema = doc["components"]["schemas"][body.rsplit("/", 1)[1]]
            assert set(schema["properties"]) == {"word"}
            assert schema["additionalProperties"] is False
            assert "NOTHING_TO_SAY" in op["responses"]["200"]["description"]
            assert "THING_NOT_FOUND" in op["responses"]["404"]["x-reason-codes"]

    try:
        asyncio.run(scenario())
    finally:
        worker.stop()
        rt.database.close_all()
        database.initialize(outer)
        for key in sync.scan_iter(match=f"{prefix}*", count=1000):
            sync.delete(key)
        sync.close()


def test_the_openapi_describes_every_route_and_command():
    load_domains()
    routes = domain_routes()
    doc = build(routes)
    assert doc["openapi"] == "3.1.0"
    for route in routes:
        assert route.method.lower() in doc["paths"][route.url], route.url
    for job_type, command in REGISTRY.commands.items():
        path = f"/api/v1{command.path}"
        op = doc["paths"][path][command.method.lower()]
        assert op["x-job-type"] == job_type
        assert set(op["responses"]) >= {"200", "202", "400", "401"}
    signup = doc["paths"]["/api/v1/users/signup"]["post"]
    ref = signup["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    props = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
    assert props["username"]["maxLength"] == 32 and "pattern" in props["username"]
    assert "DUPLICATED_USER_NAME" in signup["responses"]["409"]["x-reason-codes"]


def test_one_list_of_domains_feeds_routes_tasks_and_tables():
    registry = load_domains()
    assert set(registry.domains) >= {"system", "users", "points", "shop", "concerts"}
    assert {"points.charge", "orders.create", "orders.pay", "coupons.issue",
            "concert.reserve", "concert.pay"} <= set(registry.commands)
    assert {"jobs.resend", "outbox.deliver", "orders.expire", "queue.promote"} <= set(
        registry.periodic)
    tables = {m._meta.table_name for m in registry.models()}
    assert {"jobs", "orders", "reservations", "users"} <= tables


def test_each_domain_reads_its_own_settings_from_the_environment():
    from db.settings import Settings

    registry = load_domains()
    settings = Settings.from_env({"QUEUE_ACTIVE_LIMIT": "7", "SALES_INTERVAL": "30"})
    config = registry.settings(settings)
    assert config["concerts"].queue_active_limit == 7
    assert config["concerts"].queue_idle_ttl == 120  # its default
    assert config["shop"].sales_interval == 30
    assert registry.interval(registry.periodic["sales.aggregate"], settings) == 30
    with pytest.raises(ValueError, match="concerts"):
        registry.settings(Settings.from_env({"QUEUE_ACTIVE_LIMIT": "many"}))
    # An interval, a time to live or a limit is at least 1; a count of places may be 0
    assert registry.settings(Settings.from_env({"QUEUE_ACTIVE_LIMIT": "0"}))[
        "concerts"].queue_active_limit == 0
    for name, domain in (("SALES_INTERVAL", "shop"), ("QUEUE_IDLE_TTL", "concerts"),
                         ("RESEND_INTERVAL", "system"), ("FEED_RECOUNT_INTERVAL", "feed"),
                         ("AUCTION_CLOSE_INTERVAL", "auction"), ("HOLD_LIMIT", "concerts")):
        with pytest.raises(ValueError, match=rf"settings of {domain}: .*>= 1"):
            registry.settings(Settings.from_env({name: "0"}))
    with pytest.raises(ValueError, match=r"auction: .*>= 0"):
        registry.settings(Settings.from_env({"AUCTION_SOFT_CLOSE": "-1"}))
