"""Bare aiohttp: one route answering a constant JSON body, nothing else.

The machine's own ceiling for an aiohttp answer, and the yardstick of its speed: DESIGN.md
gives this figure for its reference machine (21,800 a second at 64 connections), so a
bench that measures it just before a phase can read an absolute target of that machine
as a ratio on this one (``bench.common.Speed``).

Usage: ``PORT=8099 python -m bench.bare [web]``
"""

from __future__ import annotations

import os

from aiohttp import web


async def bare(request: web.Request) -> web.Response:
    """``GET /bare``: a constant JSON answer."""
    return web.json_response({"ok": True})


def main() -> None:
    """Serve ``GET /bare`` on ``$PORT`` (asyncio's own loop, aiohttp's defaults)."""
    app = web.Application()
    app.router.add_get("/bare", bare)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), access_log=None,
                print=None)


if __name__ == "__main__":
    main()
