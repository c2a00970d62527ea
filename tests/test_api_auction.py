"""Contract tests for the auction: every endpoint, its successes, reason codes and bad input.

Binding contract: /work/shared/API.md, sections "Conventions", "Commands and jobs",
"Points", "Auction" and "Live events".
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import Api, SseReader, assert_failed, finish, succeeded

WAIT = {"Prefer": "wait=5"}
ARTWORK_FIELDS = {"id", "title", "genre", "description", "artist", "start_price",
                  "instant_price", "price", "bid_count", "min_next_bid", "ends_at",
                  "original_ends_at", "status", "winner", "created_at"}


def ahead(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def person(api: Api, artist: bool = False, points: int = 0) -> tuple[str, int]:
    name = f"u_{uuid.uuid4().hex[:10]}"
    reply = api.post("/users/signup", {"username": name, "password": "password123",
                                       "is_artist": artist})
    assert reply.status == 201, reply
    token = api.login(name)["access_token"]
    if points:
        succeeded(finish(api, api.post("/points/charge", {"amount": points}, token=token),
                         token))
    return token, reply.body["id"]


@pytest.fixture(scope="module")
def api(stack) -> Api:
    return stack.api


@pytest.fixture(scope="module")
def artist(api) -> tuple[str, int]:
    return person(api, artist=True)


def new_artwork(api: Api, artist: tuple[str, int], **fields) -> dict:
    body = {"title": "Blue hour", "genre": "PAINTING", "start_price": 1_000,
            "ends_at": ahead(hours=1)} | fields
    reply = api.post("/artworks", body, token=artist[0])
    assert reply.status == 201, reply
    return reply.body


def bid(api: Api, token: str, artwork_id: int, amount: int, max_amount: int | None = None,
        ) -> dict:
    body = {"amount": amount} | ({} if max_amount is None else {"max_amount": max_amount})
    reply = api.post(f"/artworks/{artwork_id}/bids", body, token=token, headers=WAIT)
    assert reply.status in (200, 202), reply
    return finish(api, reply, token)


def test_an_artist_lists_an_artwork_and_anyone_reads_it(api, artist):
    art = new_artwork(api, artist, description="Oil on linen", instant_price=50_000)
    assert set(art) == ARTWORK_FIELDS
    assert art["artist"] == {"id": artist[1], "username": art["artist"]["username"]}
    assert (art["price"], art["bid_count"], art["min_next_bid"], art["status"]) == (
        None, 0, 1_000, "OPEN")
    assert art["ends_at"] == art["original_ends_at"] and art["winner"] is None
    read = api.get(f"/artworks/{art['id']}")  # reads need no token
    assert read.status == 200 and read.body == art
    listed = api.get(f"/artworks?artist_id={artist[1]}&genre=PAINTING&status=OPEN&limit=100")
    assert listed.status == 200 and art["id"] in [a["id"] for a in listed.body["items"]]
    assert api.get("/artworks?genre=SCULPTURE&limit=100").body["items"] == [] or all(
        a["genre"] == "SCULPTURE" for a in api.get("/artworks?genre=SCULPTURE").body["items"])


def test_the_list_pages_newest_first_without_repeats(api):
    mine = person(api, artist=True)
    made = [new_artwork(api, mine, title=f"n{i}")["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        reply = api.get(f"/artworks?artist_id={mine[1]}&limit=2"
                        + (f"&cursor={cursor}" if cursor else ""))
        assert reply.status == 200, reply
        seen += [a["id"] for a in reply.body["items"]]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]


@pytest.mark.parametrize("body, field", [
    ({"title": ""}, "title"), ({"title": "x" * 201}, "title"), ({"title": "a\u0000b"}, "title"),
    ({"description": "\u0000"}, "description"), ({"genre": "POTTERY"}, "genre"),
    ({"start_price": 99}, "start_price"), ({"start_price": 100_000_001}, "start_price"),
    ({"start_price": "1000"}, "start_price"), ({"start_price": True}, "start_price"),
    ({"instant_price": 1_000}, "instant_price"), ({"description": "d" * 5_001}, "description"),
    ({"ends_at": "2030-01-01T00:00:00"}, "ends_at"), ({"ends_at": "tomorrow"}, "ends_at"),
    ({"ends_at": "9999-12-31T23:59:59-23:59"}, "ends_at"),
    ({"ends_at": "0001-01-01T00:00:00+23:59"}, "ends_at"), ({"surprise": 1}, "surprise"),
])
def test_a_bad_artwork_is_400_naming_the_field(api, artist, body, field):
    base = {"title": "t", "genre": "PAINTING", "start_price": 1_000, "ends_at": ahead(hours=1)}
    reply = api.post("/artworks", base | body, token=artist[0])
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST" and field in reply.body["error"]["fields"]


@pytest.mark.parametrize("delta", [timedelta(seconds=30), timedelta(days=30, minutes=1),
                                   timedelta(minutes=-5)])
def test_the_end_must_be_1_minute_to_30_days_ahead(api, artist, delta):
    ends = (datetime.now(UTC) + delta).isoformat()
    reply = api.post("/artworks", {"title": "t", "genre": "PRINT", "start_price": 1_000,
                                   "ends_at": ends}, token=artist[0])
    assert reply.status == 400 and "ends_at" in reply.body["error"]["fields"]


def test_only_artists_list_and_only_with_a_token(api):
    token, _ = person(api)
    body = {"title": "t", "genre": "PRINT", "start_price": 1_000, "ends_at": ahead(hours=1)}
    assert api.post("/artworks", body, token=token).code == "INVALID_PERMISSION"
    assert api.post("/artworks", body).status == 401


def test_unknown_artworks_are_404_everywhere(api):
    token, _ = person(api)
    for path in ("/artworks/999999999", "/artworks/abc", "/artworks/999999999/bids",
                 "/artworks/0/events", "/artworks/99999999999999999999999"):
        reply = api.get(path)
        assert (reply.status, reply.code) == (404, "ARTWORK_NOT_FOUND"), path
    for path in ("/artworks/999999999/bids", "/artworks/x/bids", "/artworks/999999999/buy-now"):
        reply = api.post(path, {"amount": 1_000} if path.endswith("bids") else None,
                         token=token)
        assert (reply.status, reply.code) == (404, "ARTWORK_NOT_FOUND"), path


@pytest.mark.parametrize("body, field", [
    ({}, "amount"), ({"amount": 0}, "amount"), ({"amount": 1.5}, "amount"),
    ({"amount": "1000"}, "amount"), ({"amount": 10**13}, "amount"),
    ({"amount": 2_000, "max_amount": 1_999}, "max_amount"), ({"amount": 1, "price": 1}, "price"),
])
def test_a_bad_bid_is_400_and_records_no_job(api, artist, body, field):
    token, _ = person(api)
    art = new_artwork(api, artist)
    reply = api.post(f"/artworks/{art['id']}/bids", body, token=token)
    assert reply.status == 400, reply
    assert field in reply.body["error"]["fields"]
    assert api.get("/jobs", token=token).body["items"] == []


def test_bids_escrow_and_outbid_through_the_api(api, artist):
    (a, a_id), (b, b_id) = person(api, points=100_000), person(api, points=100_000)
    art = new_artwork(api, artist)["id"]
    first = succeeded(bid(api, a, art, 1_000, 5_000))
    assert set(first) == {"artwork_id", "price", "leading", "max_amount", "ends_at"}
    assert (first["price"], first["leading"], first["max_amount"]) == (1_000, True, 5_000)
    assert api.get("/points", token=a).body == {"balance": 95_000, "held": 5_000}
    covered = succeeded(bid(api, b, art, 2_000))
    assert (covered["price"], covered["leading"]) == (2_100, False)
    assert_failed(bid(api, b, art, 2_100), "BID_TOO_LOW")
    assert_failed(bid(api, artist[0], art, 10_000), "OWN_ARTWORK")
    ahead_ = succeeded(bid(api, b, art, 6_000, 9_000))
    assert (ahead_["price"], ahead_["leading"]) == (5_300, True)
    assert api.get("/points", token=a).body == {"balance": 100_000, "held": 0}
    assert api.get("/points", token=b).body == {"balance": 91_000, "held": 9_000}
    history = api.get("/points/history", token=a).body["items"]
    assert [h["type"] for h in history] == ["RELEASE", "HOLD", "CHARGE"]
    detail = api.get(f"/artworks/{art}").body
    assert (detail["price"], detail["bid_count"], detail["min_next_bid"]) == (5_300, 5, 5_600)
    bids = api.get(f"/artworks/{art}/bids").body["items"]
    assert [(x["amount"], x["bidder"]["id"], x["automatic"]) for x in bids] == [
        (5_300, b_id, False), (5_000, a_id, True), (2_100, a_id, True), (2_000, b_id, False),
        (1_000, a_id, False)]
    mine = api.get("/users/me/bids", token=a).body["items"]
    assert [(m["artwork"]["id"], m["my_max_amount"], m["leading"], m["status"])
            for m in mine] == [(art, 5_000, False, "OPEN")]
    assert api.get("/users/me/bids", token=b).body["items"][0]["leading"] is True
    assert api.get("/users/me/bids").status == 401


def test_insufficient_points_fail_the_job_and_hold_nothing(api, artist):
    token, _ = person(api, points=500)
    art = new_artwork(api, artist)["id"]
    assert_failed(bid(api, token, art, 1_000), "INSUFFICIENT_POINTS")
    assert api.get("/points", token=token).body == {"balance": 500, "held": 0}
    assert api.get(f"/artworks/{art}").body["bid_count"] == 0


def test_buy_now_at_the_servers_price(api, artist):
    (a, _), (b, b_id) = person(api, points=100_000), person(api, points=100_000)
    art = new_artwork(api, artist, instant_price=30_000)["id"]
    succeeded(bid(api, a, art, 1_000, 20_000))
    reply = api.post(f"/artworks/{art}/buy-now", {"price": 1}, token=b)
    assert reply.status == 400  # the price is the server's; the body has no fields
    reply = api.post(f"/artworks/{art}/buy-now", token=b, headers=WAIT)
    assert succeeded(finish(api, reply, b)) == {"artwork_id": art, "status": "SOLD",
                                                "price": 30_000}
    assert api.get("/points", token=a).body == {"balance": 100_000, "held": 0}
    assert api.get("/points", token=b).body == {"balance": 70_000, "held": 0}
    detail = api.get(f"/artworks/{art}").body
    assert (detail["status"], detail["winner"]["id"], detail["price"]) == ("SOLD", b_id, 30_000)
    again = api.post(f"/artworks/{art}/buy-now", token=a, headers=WAIT)
    assert_failed(finish(api, again, a), "AUCTION_CLOSED")
    assert_failed(bid(api, a, art, 40_000), "AUCTION_CLOSED")
    plain = new_artwork(api, artist)["id"]
    assert_failed(finish(api, api.post(f"/artworks/{plain}/buy-now", token=a, headers=WAIT),
                         a), "NO_INSTANT_PRICE")
    mine = new_artwork(api, artist, instant_price=2_000)["id"]
    assert_failed(finish(api, api.post(f"/artworks/{mine}/buy-now", token=artist[0],
                                       headers=WAIT), artist[0]), "OWN_ARTWORK")


@pytest.mark.parametrize("query", ["genre=pottery", "status=CLOSED", "artist_id=x",
                                   "artist_id=-1", "limit=0", "limit=101", "cursor=%%%"])
def test_bad_list_queries_are_400(api, query):
    reply = api.get(f"/artworks?{query}")
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply


def test_live_bids_stream_with_versions_and_replay(api, stack, artist):
    (a, a_id), (b, _) = person(api, points=100_000), person(api, points=100_000)
    art = new_artwork(api, artist)["id"]
    url = f"{api.base}/api/v1/artworks/{art}/events"
    reader = SseReader(url, "")
    assert reader.status == 200 and reader.content_type.startswith("text/event-stream")
    succeeded(bid(api, a, art, 1_000, 3_000))
    assert_failed(bid(api, a, art, 1_000), "BID_TOO_LOW")  # rolled back: no event
    succeeded(bid(api, b, art, 1_500))
    first, second = reader.take(2)
    assert (first.id, first.event, second.id) == ("1", "bid", "2")
    assert first.data == {"artwork_id": art, "price": 1_000, "bid_count": 1,
                          "min_next_bid": 1_100, "ends_at": first.data["ends_at"],
                          "leader": {"id": a_id, "username": first.data["leader"]["username"]}}
    assert (second.data["price"], second.data["leader"]["id"]) == (1_600, a_id)
    reader.close()
    succeeded(bid(api, b, art, 3_000, 4_000))  # while nobody listens
    again = SseReader(url, "", last_event_id="1")
    replayed = again.take(2)
    assert [e.id for e in replayed] == ["2", "3"]
    assert replayed[1].data["leader"]["username"] != first.data["leader"]["username"]
    again.close()
    fresh = SseReader(url, "")  # no Last-Event-ID: where the auction stands now
    assert fresh.next().id == "3"
    fresh.close()
    bad = api.get(f"/artworks/{art}/events", headers={"Last-Event-ID": "abc"})
    assert (bad.status, bad.code) == (400, "INVALID_REQUEST")
