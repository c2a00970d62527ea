"""The cached best-seller ranking in Redis: written after the aggregation commits, read by
``GET /products/best``. Works on a sync or an asyncio client (then methods return
awaitables)."""

from __future__ import annotations

from typing import Any

import msgspec


class BestSellerCache:
    """One key holding the latest ranking ``[{"product_id", "sales"}]``."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}:products:best"

    def store(self, ranking: list[dict]):
        """Replace the cached ranking."""
        return self.client.set(self.key, msgspec.json.encode(ranking))

    def load(self):
        """The raw cached ranking (see :meth:`parse`)."""
        return self.client.get(self.key)

    @staticmethod
    def parse(raw: bytes | None) -> list[dict] | None:
        """The ranking, or None when nothing is cached yet."""
        return None if raw is None else msgspec.json.decode(raw)
