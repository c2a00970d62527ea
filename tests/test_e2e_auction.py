"""The auction across real processes: two web processes, a worker pool of two processes,
and the scheduler; concurrent bidders over HTTP, live bids on both web processes, and
the closing sweep.

The processes run with ``AUCTION_SOFT_CLOSE=1`` so an auction the test ends in a few
seconds is not pushed two minutes away by its last bid.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import jwt
import pytest

from db.models import Artwork, ArtworkEvent, PointWallet
from jobs import auction, users
from jobs.clock import utcnow
from tests.shop_fixtures import bulk_users
from tests.support import SseReader, Stack, finish, two_webs
from tests.test_auction import START, check_auction

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def webs(process_env) -> Iterator[tuple[Stack, Stack]]:
    """Two web processes, a worker with two processes, and a scheduler."""
    yield from two_webs(process_env | {"AUCTION_SOFT_CLOSE": "1"}, scheduler=True)


@pytest.fixture(scope="module")
def artist(database) -> int:
    with database.connection_context():
        return users.create_user(f"art_{uuid.uuid4().hex[:8]}", "x", utcnow(),
                                 is_artist=True).id


def new_artwork(database, artist: int, seconds: float = 3600) -> int:
    """An artwork straight in the database (the API allows no end under a minute)."""
    with database.connection_context():
        now = utcnow()
        return auction.create_artwork(artist, "Study", "DRAWING", None, START, None,
                                      now + timedelta(seconds=seconds), now)["id"]


def user_of(token: str) -> int:
    """The user id inside an access token."""
    return int(jwt.decode(token, options={"verify_signature": False})["sub"])


def send_bid(stack: Stack, token: str, art: int, amount: int, maximum: int) -> dict:
    reply = stack.api.post(f"/artworks/{art}/bids", {"amount": amount, "max_amount": maximum},
                           token=token, headers={"Prefer": "wait=10"})
    assert reply.status in (200, 202), reply
    return finish(stack.api, reply, token)


def test_200_bidders_over_http_leave_the_auction_as_the_rules_say(webs, database, settings,
                                                                 artist):
    first, second = webs
    tokens = bulk_users(database, settings, f"e2eb{uuid.uuid4().hex[:6]}_", 200, 300_000)
    ids = [user_of(t) for t in tokens]
    art = new_artwork(database, artist)
    url = f"/api/v1/artworks/{art}/events"
    readers = [SseReader(f"{s.api.base}{url}", "") for s in (first, second, first, second)]
    rng = random.Random(11)
    offers = {u: (a := rng.randrange(1_000, 100_000), a + rng.randrange(0, 150_000))
              for u in ids}
    with ThreadPoolExecutor(64) as pool:
        jobs = list(pool.map(lambda i: send_bid((first, second)[i % 2], tokens[i], art,
                                                *offers[ids[i]]), range(200)))
    accepted = [ids[i] for i, job in enumerate(jobs) if job["status"] == "succeeded"]
    assert {j["error"]["code"] for j in jobs if j["status"] == "failed"} <= {"BID_TOO_LOW"}
    with database.connection_context():
        check_auction(art, offers, accepted, ids, 300_000)
        stored = [e.data for e in ArtworkEvent.select().where(ArtworkEvent.artwork == art)
                  .order_by(ArtworkEvent.version)]
    # every subscriber, on either web process, saw each committed bid once and in order
    for reader in readers:
        seen = reader.take(len(accepted))
        assert [e.id for e in seen] == [str(v) for v in range(1, len(accepted) + 1)]
        assert [e.data for e in seen] == stored
        reader.close()


def test_a_reconnect_on_the_other_web_process_fills_the_gap_and_the_sweep_closes(
        webs, database, settings, artist):
    first, second = webs
    tokens = bulk_users(database, settings, f"e2ec{uuid.uuid4().hex[:6]}_", 3, 100_000)
    art = new_artwork(database, artist, seconds=6)
    url = f"/api/v1/artworks/{art}/events"
    watcher = SseReader(f"{first.api.base}{url}", "")
    assert send_bid(first, tokens[0], art, 1_000, 1_000)["status"] == "succeeded"
    assert watcher.next().id == "1"
    watcher.close()
    # while nobody listens: two more bids and the close
    assert send_bid(second, tokens[1], art, 1_100, 5_000)["status"] == "succeeded"
    assert send_bid(first, tokens[2], art, 2_000, 2_000)["status"] == "succeeded"
    deadline = time.monotonic() + 20
    with database.connection_context():
        while Artwork.get_by_id(art).status == "OPEN" and time.monotonic() < deadline:
            time.sleep(0.2)
        winner_wallet = PointWallet.get_by_id(user_of(tokens[1]))
        artist_wallet = PointWallet.get_by_id(artist)
    back = SseReader(f"{second.api.base}{url}", "", last_event_id="1")
    missed = back.take(3)
    back.close()
    assert [(e.id, e.event) for e in missed] == [("2", "bid"), ("3", "bid"), ("4", "closed")]
    assert missed[2].data["status"] == "SOLD" and missed[2].data["price"] == 2_100
    assert (winner_wallet.balance, winner_wallet.held) == (97_900, 0)
    assert artist_wallet.balance >= 2_100
