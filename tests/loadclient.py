"""Concurrent HTTP helpers for the end-to-end tests (aiohttp client)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


async def post_many(
    base: str, requests: list[tuple[str, dict, dict[str, str]]], concurrency: int = 100
) -> list[tuple[int, Any]]:
    """POST every ``(path, body, headers)`` at once (bounded); ``(status, json)`` in order."""
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(base) as session:

        async def one(path: str, body: dict, headers: dict[str, str]) -> tuple[int, Any]:
            async with gate, session.post(f"/api/v1{path}", json=body, headers=headers) as r:
                return r.status, await r.json()

        return await asyncio.gather(*(one(*r) for r in requests))


async def wait_all(base: str, jobs: list[tuple[str, str]], timeout: float = 60) -> list[dict]:
    """Long-poll every ``(job_id, token)`` until terminal; the final job bodies."""
    gate = asyncio.Semaphore(100)
    async with aiohttp.ClientSession(base) as session:

        async def one(job_id: str, token: str) -> dict:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                async with gate, session.get(
                    f"/api/v1/jobs/{job_id}?wait=5", headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    job = await r.json()
                if r.status == 503:  # a dependency hiccup: ask again
                    await asyncio.sleep(0.2)
                    continue
                if job["status"] in ("succeeded", "failed") or loop.time() > deadline:
                    return job

        return await asyncio.gather(*(one(*j) for j in jobs))
