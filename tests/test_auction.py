"""The auction on the real database with a fixed clock: proxy bids, escrow, soft close,
buy-now, closing, and the races between them."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from db.models import Artwork, ArtworkEvent, Bid, Bidder, Job, PointHistory, PointWallet
from jobs import auction, records, users
from jobs.errors import DomainError
from jobs.platform import Context
from tests.auction_model import Reference
from tests.commands import ok, refused, run
from tests.shop_fixtures import user_with_points
from tests.support import run_together
from workers import lifecycle

START = 1_000


@pytest.fixture
def artist(rt, clock) -> int:
    return users.create_user("artist", "x", clock.now(), is_artist=True).id


def artwork(artist: int, clock, minutes: int = 60, start: int = START,
            instant: int | None = None) -> int:
    return auction.create_artwork(artist, "Nocturne", "PAINTING", None, start, instant,
                                  clock.now() + timedelta(minutes=minutes), clock.now())["id"]


def bid(uid: int, artwork_id: int, amount: int, max_amount: int | None = None) -> Job:
    payload = {"artwork_id": artwork_id, "amount": amount}
    if max_amount is not None:
        payload["max_amount"] = max_amount
    return run(uid, "auction.bid", **payload)


def wallet(uid: int) -> tuple[int, int]:
    w = PointWallet.get_by_id(uid)
    return w.balance, w.held


def owned(among: list[int] | None = None) -> int:
    """Balances plus holds over every user (or ``among`` them): what the auction conserves."""
    query = PointWallet.select()
    if among is not None:
        query = query.where(PointWallet.user.in_(among))
    return sum(w.balance + w.held for w in query)


def state(artwork_id: int) -> Artwork:
    return Artwork.get_by_id(artwork_id)


def close(rt, clock) -> dict:
    with rt.database.connection_context(), rt.database.atomic():
        return auction.close_due(Context(now=clock.now(), services=rt))


# -- the rules, one at a time ---------------------------------------------------------


def test_increment_is_five_percent_rounded_up_to_100_and_at_least_100():
    assert [auction.increment(p) for p in (0, 1_000, 2_000, 2_001, 10_000, 123_456)] == [
        100, 100, 100, 200, 500, 6_200]
    assert auction.min_next_bid(1_000, None) == 1_000
    assert auction.min_next_bid(1_000, 2_001) == 2_201


def test_proxy_bidding_escrow_and_the_visible_history(rt, clock, artist):
    a, b, c, d = (user_with_points(n, 100_000, clock.now()) for n in "abcd")
    art = artwork(artist, clock)
    # A opens at the start price with a hidden maximum: the price is the bid, the max held
    assert ok(bid(a, art, 1_000, 5_000)) | {"ends_at": None} == {
        "artwork_id": art, "price": 1_000, "leading": True, "max_amount": 5_000,
        "ends_at": None}
    assert wallet(a) == (95_000, 5_000)
    # B's maximum is covered by A's: B's bid stands, A's proxy answers, no hold for B
    assert refused(bid(b, art, 1_050)) == "BID_TOO_LOW"  # below 1,000 + 100
    result = ok(bid(b, art, 1_100, 2_000))
    assert (result["price"], result["leading"]) == (2_100, False)
    assert wallet(b) == (100_000, 0)
    # C outbids A: A is released in the same transaction, C holds the whole maximum
    assert refused(bid(c, art, 2_200, 8_000)) == "BID_TOO_LOW"  # below 2,100 + 200
    result = ok(bid(c, art, 2_300, 8_000))
    assert (result["price"], result["leading"]) == (5_300, True)  # 5,000 + 300
    assert wallet(a) == (100_000, 0) and wallet(c) == (92_000, 8_000)
    # D ties C's maximum: the earlier maximum keeps the lead, at its full maximum
    result = ok(bid(d, art, 5_600, 8_000))
    assert (result["price"], result["leading"]) == (8_000, False)
    w = state(art)
    assert (w.leader_id, w.leader_max, w.price, w.bid_count, w.version) == (c, 8_000, 8_000, 7, 4)
    history = [(x.bidder_id, x.amount, x.automatic)
               for x in Bid.select().where(Bid.artwork == art).order_by(Bid.id)]
    assert history == [(a, 1_000, False), (b, 2_000, False), (a, 2_100, True),
                       (a, 5_000, True), (c, 5_300, False), (d, 8_000, False), (c, 8_000, True)]
    types = [h.type for h in PointHistory.select().where(PointHistory.user == a)
             .order_by(PointHistory.id)]
    assert types == ["CHARGE", "HOLD", "RELEASE"]
    assert owned() == 400_000


def test_a_leader_raises_their_own_maximum_and_only_the_difference_is_held(rt, clock, artist):
    a, b = user_with_points("a", 10_000, clock.now()), user_with_points("b", 10_000, clock.now())
    art = artwork(artist, clock)
    ok(bid(a, art, 1_000, 2_000))
    ok(bid(b, art, 1_100))  # covered: price 1,200
    assert refused(bid(a, art, 1, 2_000)) == "BID_TOO_LOW"  # not a raise
    result = ok(bid(a, art, 1, 6_000))  # the amount is not checked for a leader's raise
    assert (result["price"], result["leading"], result["max_amount"]) == (1_200, True, 6_000)
    assert wallet(a) == (4_000, 6_000)
    assert refused(bid(a, art, 1, 10_001)) == "INSUFFICIENT_POINTS"
    assert wallet(a) == (4_000, 6_000) and state(art).leader_max == 6_000
    assert Bidder.get(Bidder.user == a).max_amount == 6_000


def test_refusals_change_nothing(rt, clock, artist):
    poor = user_with_points("poor", 500, clock.now())
    rich = user_with_points("rich", 100_000, clock.now())
    art = artwork(artist, clock)
    assert refused(bid(poor, art, 1_000)) == "INSUFFICIENT_POINTS"
    assert refused(bid(artist, art, 1_000)) == "OWN_ARTWORK"
    assert refused(bid(rich, art, 999)) == "BID_TOO_LOW"
    assert refused(bid(rich, 10**9, 1_000)) == "ARTWORK_NOT_FOUND"
    ok(bid(rich, art, 1_000, 50_000))
    assert refused(bid(poor, art, 1_100)) == "INSUFFICIENT_POINTS"  # covered, but unfunded
    w = state(art)
    assert (w.version, w.bid_count, w.leader_id) == (1, 1, rich)
    assert Bidder.select().count() == 1 and ArtworkEvent.select().count() == 1
    assert wallet(poor) == (500, 0)
    clock.advance(minutes=60)
    assert refused(bid(poor, art, 100)) == "AUCTION_CLOSED"  # past the end, before the sweep


def test_one_user_cannot_lead_more_auctions_than_their_points_cover(rt, clock, artist):
    uid = user_with_points("collector", 5_000, clock.now())
    works = [artwork(artist, clock) for _ in range(6)]
    for art in works[:5]:
        assert ok(bid(uid, art, 1_000))["leading"]
    assert wallet(uid) == (0, 5_000)
    assert refused(bid(uid, works[5], 1_000)) == "INSUFFICIENT_POINTS"
    last = state(works[5])
    assert (last.price, last.leader_id, last.version) == (None, None, 0)
    assert wallet(uid) == (0, 5_000) and owned() == 5_000


def test_soft_close_extends_never_backwards_never_past_the_cap(rt, clock, artist, monkeypatch):
    monkeypatch.setitem(rt.config, "auction", auction.AuctionSettings(
        auction_soft_close=120, auction_max_extension=300))
    a, b = user_with_points("a", 10**6, clock.now()), user_with_points("b", 10**6, clock.now())
    art = artwork(artist, clock, minutes=10)
    end = state(art).ends_at
    ok(bid(a, art, 1_000))  # far from the end: nothing moves
    assert state(art).ends_at == end
    clock.advance(minutes=9)  # 60 s before the end: the end moves to 120 s after the bid
    ok(bid(b, art, 2_000))
    assert state(art).ends_at == end + timedelta(seconds=60)
    clock.advance(seconds=110)  # 10 s before the extended end
    assert close(rt, clock) == {}  # the sweep re-reads the extended end
    assert state(art).status == "OPEN"
    # proxy raises count: a covered bid still extends
    ok(bid(a, art, 10_000, 20_000))
    ok(bid(b, art, 11_000))
    assert state(art).ends_at == clock.now() + timedelta(seconds=120)
    for step, maximum in ((100, 150_000), (100, 250_000), (40, 350_000)):
        clock.advance(seconds=step)  # bidding on in the window: the cap (end + 300 s) holds
        who = a if state(art).leader_id == b else b
        ok(bid(who, art, auction.min_next_bid(START, state(art).price), maximum))
        assert state(art).ends_at == min(clock.now() + timedelta(seconds=120),
                                         end + timedelta(seconds=300))
    assert state(art).ends_at == end + timedelta(seconds=300)
    assert state(art).original_ends_at == end
    clock.advance(seconds=30)
    assert refused(bid(a, art, 10**6 - 1)) == "AUCTION_CLOSED"
    assert close(rt, clock) == {"closed": 1, "sold": 1}


def test_closing_pays_the_artist_from_the_winners_hold_exactly_once(rt, clock, artist):
    a, b = user_with_points("a", 50_000, clock.now()), user_with_points("b", 50_000, clock.now())
    sold, unsold = artwork(artist, clock, minutes=5), artwork(artist, clock, minutes=5)
    ok(bid(a, sold, 1_000, 30_000))
    ok(bid(b, sold, 4_000, 9_000))  # price 9,500
    clock.advance(minutes=5)
    assert close(rt, clock) == {"closed": 2, "sold": 1}
    assert close(rt, clock) == {}
    w = state(sold)
    assert (w.status, w.winner_id, w.price, w.leader_id) == ("SOLD", a, 9_500, None)
    assert state(unsold).status == "UNSOLD"
    assert wallet(a) == (40_500, 0) and wallet(b) == (50_000, 0)
    assert wallet(artist) == (9_500, 0)
    moves = [(h.type, h.amount) for h in PointHistory.select().where(PointHistory.user == a)
             .order_by(PointHistory.id)]
    assert moves == [("CHARGE", 50_000), ("HOLD", -30_000), ("RELEASE", 30_000),
                     ("USE", -9_500)]
    closed = ArtworkEvent.get((ArtworkEvent.artwork == sold) & (ArtworkEvent.type == "closed"))
    assert closed.data == {"artwork_id": sold, "status": "SOLD", "price": 9_500,
                           "winner": {"id": a, "username": "a"}}
    assert owned() == 100_000


def test_buy_now_takes_the_servers_price_and_releases_the_leader(rt, clock, artist):
    a, b = user_with_points("a", 50_000, clock.now()), user_with_points("b", 50_000, clock.now())
    art = artwork(artist, clock, instant=20_000)
    plain = artwork(artist, clock)
    assert refused(run(a, "auction.buy_now", artwork_id=plain)) == "NO_INSTANT_PRICE"
    assert refused(run(artist, "auction.buy_now", artwork_id=art)) == "OWN_ARTWORK"
    ok(bid(a, art, 1_000, 15_000))
    assert ok(run(b, "auction.buy_now", artwork_id=art)) == {
        "artwork_id": art, "status": "SOLD", "price": 20_000}
    assert wallet(a) == (50_000, 0) and wallet(b) == (30_000, 0)
    assert wallet(artist) == (20_000, 0)
    assert refused(run(a, "auction.buy_now", artwork_id=art)) == "AUCTION_CLOSED"
    assert refused(bid(a, art, 30_000)) == "AUCTION_CLOSED"
    # once the bidding reaches the instant price, buy-now is gone
    third = artwork(artist, clock, instant=2_000)
    ok(bid(a, third, 2_000))
    assert refused(run(b, "auction.buy_now", artwork_id=third)) == "NO_INSTANT_PRICE"
    poor = user_with_points("poor", 10, clock.now())
    fourth = artwork(artist, clock, instant=2_000)
    assert refused(run(poor, "auction.buy_now", artwork_id=fourth)) == "INSUFFICIENT_POINTS"
    assert state(fourth).status == "OPEN" and owned() == 100_010


def test_events_are_numbered_by_version_and_leave_only_after_commit(rt, clock, artist):
    a = user_with_points("a", 50_000, clock.now())
    art = artwork(artist, clock)
    published = []
    rt.publisher.publish = lambda events, *args, **kw: published.extend(events)
    ok(bid(a, art, 1_000))
    refused(bid(a, art, 1_000))  # not a raise: rolled back, nothing published
    [event] = [e for e in published if e.topic.startswith("auction.")]
    assert (event.topic, event.key, event.id) == ("auction.bid", str(art), 1)
    assert event.data == {"artwork_id": art, "price": 1_000, "bid_count": 1,
                          "min_next_bid": 1_100, "ends_at": event.data["ends_at"],
                          "leader": {"id": a, "username": "a"}}
    assert [e.id for e in auction.events_since(art, 0)] == [1]
    assert [e.id for e in auction.events_since(art, None)] == [1]


# -- races ------------------------------------------------------------------------------


def test_200_bidders_at_once_leave_the_highest_maximum_leading_and_points_conserved(
        rt, clock, artist):
    rng = random.Random(7)
    bidders = [user_with_points(f"b{n}", 300_000, clock.now()) for n in range(200)]
    art = artwork(artist, clock)
    offers = {u: (a := rng.randrange(1_000, 100_000), a + rng.randrange(0, 150_000))
              for u in bidders}
    jobs: dict[int, str] = {}
    for u, (amount, maximum) in offers.items():
        job, _ = records.record_job(u, "auction.bid", {"artwork_id": art, "amount": amount,
                                                       "max_amount": maximum}, None,
                                    clock.now())
        jobs[u] = str(job.id)
    run_together(*[lambda j=j: lifecycle.execute_job(j) for j in jobs.values()])
    outcome = {u: Job.get_by_id(j) for u, j in jobs.items()}
    accepted = [u for u, j in outcome.items() if j.status == "succeeded"]
    assert {j.error["code"] for j in outcome.values() if j.status == "failed"} <= {"BID_TOO_LOW"}
    assert accepted
    check_auction(art, offers, accepted, bidders, 300_000)
    # A refused bid was below the minimum when it ran, and the minimum only rises: it is
    # below the final one. (How many are accepted depends on the commit order: when the
    # highest opening bid commits first, it is the only one, and that is right.)
    floor = auction.min_next_bid(START, Artwork.get_by_id(art).price)
    assert all(offers[u][0] < floor for u in offers if u not in accepted)


def check_auction(art: int, offers: dict[int, tuple[int, int]], accepted: list[int],
                  bidders: list[int], funds: int) -> None:
    """The artwork agrees with the reference replaying its accepted bids in commit order;
    only the leader holds points; everyone else is back where they started."""
    order = [b.bidder_id for b in Bid.select().where((Bid.artwork == art) & ~Bid.automatic)
             .order_by(Bid.id)]
    assert sorted(order) == sorted(accepted)  # one visible bid per accepted bid
    ref = Reference(START)
    for u in order:
        ref.bid(u, *offers[u])
    w = Artwork.get_by_id(art)
    assert (w.leader_id, w.leader_max, w.price) == (ref.leader, ref.maxima[ref.leader], ref.price)
    assert w.leader_max == max(offers[u][1] for u in accepted)
    assert w.bid_count == Bid.select().where(Bid.artwork == art).count()
    for u in bidders:
        expected = (funds - w.leader_max, w.leader_max) if u == w.leader_id else (funds, 0)
        assert wallet(u) == expected, u
    assert owned(bidders) == funds * len(bidders)
    versions = [e.version for e in ArtworkEvent.select().where(ArtworkEvent.artwork == art)
                .order_by(ArtworkEvent.version)]
    assert versions == list(range(1, len(accepted) + 1))


def test_two_closers_at_once_settle_each_auction_once(rt, clock, artist):
    bidders = [user_with_points(f"c{n}", 100_000, clock.now()) for n in range(10)]
    works = [artwork(artist, clock, minutes=1) for _ in range(10)]
    for u, art in zip(bidders, works, strict=True):
        ok(bid(u, art, 5_000))  # (in the soft-close window: each end moves to +2 min)
    clock.advance(minutes=2)
    results = []
    run_together(*[lambda: results.append(close(rt, clock)) for _ in range(2)])
    assert sum(r.get("closed", 0) for r in results) == 10
    assert wallet(artist) == (50_000, 0)
    assert all(wallet(u) == (95_000, 0) for u in bidders)
    assert PointHistory.select().where(PointHistory.type == "SALE").count() == 10


def race(rt, *attempts: tuple[str, int, object, object]) -> dict[str, str]:
    """Run ``(name, user, when, action)`` attempts at once, each in its own transaction;
    each one's outcome: ``ok`` or its reason code."""
    codes: dict[str, str] = {}

    def attempt(name: str, user: int, when, action) -> None:
        try:
            with rt.database.connection_context(), rt.database.atomic():
                action(Context(now=when, services=rt, user_id=user))
            codes[name] = "ok"
        except DomainError as e:
            codes[name] = e.code

    run_together(*[lambda a=a: attempt(*a) for a in attempts])
    return codes


def test_bids_racing_the_sweep_and_buy_now_racing_bids_have_one_outcome_each(rt, clock, artist):
    a, b = user_with_points("a", 10**6, clock.now()), user_with_points("b", 10**6, clock.now())
    c = user_with_points("c", 10**6, clock.now())
    settings = rt.config["auction"]
    seen = set()
    for round_ in range(20):
        art = artwork(artist, clock, minutes=1, instant=50_000)
        ok(bid(a, art, 1_000, 3_000))
        end = state(art).ends_at
        tick = timedelta(milliseconds=1)
        bidding = ("bid", b, end - tick,
                   lambda ctx, art=art: auction.place_bid(ctx, art, 5_000, None, settings))
        if round_ % 2 == 0:
            codes = race(rt, bidding, ("close", c, end + tick, auction.close_due))
            w = state(art)
            # the bid extended the end (so the sweep left it), or the sweep sold it to A
            assert (codes["bid"], w.status, w.leader_id, w.winner_id) in {
                ("ok", "OPEN", b, None), ("AUCTION_CLOSED", "SOLD", None, a)}
        else:
            codes = race(rt, bidding, ("buy", c, end - 2 * tick,
                                       lambda ctx, art=art: auction.buy_now(ctx, art)))
            w = state(art)
            # buy-now first (the bid finds it closed), or the bid first (5,000 is still
            # below the instant price, so buy-now goes through and releases B)
            assert codes["buy"] == "ok" and (w.status, w.winner_id) == ("SOLD", c)
            assert codes["bid"] in {"ok", "AUCTION_CLOSED"}
        seen.add((round_ % 2, codes["bid"]))
        assert sum(wallet(u)[1] for u in (a, b, c)) == sum(
            x.leader_max for x in Artwork.select().where(Artwork.status == "OPEN"))
        assert owned() == 3 * 10**6
    assert {kind for kind, _ in seen} == {0, 1}
