"""The steady-latency bench's load generator: every request sent is answered and
counted, at the rate asked, and a request that waited for a free connection counts
its latency from when it was due."""

from __future__ import annotations

import asyncio

from aiohttp import web

from bench.pacer import Pacer, post_request


async def serve(delay: float) -> tuple[web.AppRunner, int, list[bytes]]:
    bodies: list[bytes] = []

    async def charge(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        await asyncio.sleep(delay)
        return web.json_response({"status": "queued", "n": len(bodies)}, status=202)

    app = web.Application()
    app.router.add_post("/charge", charge)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1], bodies


def run(rate: float, seconds: float, connections: int,
        delay: float) -> tuple[Pacer, list[bytes], float]:
    """A pacer's run against a server answering after ``delay``; the bodies it got, and
    how long the run took."""
    async def main():
        runner, port, bodies = await serve(delay)
        requests = [post_request(f"127.0.0.1:{port}", "/charge", {"X-N": str(n)},
                                 b'{"amount":%d}' % n) for n in range(3)]
        pacer = Pacer(requests, rate, connections)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await pacer.run("127.0.0.1", port, seconds)
        took = loop.time() - began
        await runner.cleanup()
        return pacer, bodies, took

    return asyncio.run(main())


def test_every_request_is_sent_at_the_rate_and_answered() -> None:
    pacer, bodies, took = run(rate=400, seconds=1.0, connections=8, delay=0)
    assert 395 <= pacer.sent <= 405
    assert pacer.statuses == {202: pacer.sent} and len(bodies) == pacer.sent
    assert len(pacer.latencies) == pacer.sent
    assert bodies[:4] == [b'{"amount":0}', b'{"amount":1}', b'{"amount":2}', b'{"amount":0}']
    assert took < 2


def test_a_request_waiting_for_a_connection_counts_from_when_it_was_due() -> None:
    # 2 connections, 50 ms per answer: at most 40 answers/s for 200 asked
    pacer, bodies, took = run(rate=200, seconds=0.5, connections=2, delay=0.05)
    assert pacer.statuses == {202: pacer.sent} == {202: len(bodies)} and 99 <= pacer.sent <= 101
    assert took > 2  # (every request sent was answered before run() returned)
    assert max(pacer.latencies) > 2  # (the last waited in the backlog for seconds)
