"""A plain reference of the auction's price rule, to check the real one against.

It replays accepted bids in the order they were applied and says who leads, at what
price and with what maximum. It knows nothing of points, locks or the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.auction import increment


@dataclass
class Reference:
    """The auction as the API's rules describe it."""

    start_price: int
    maxima: dict[int, int] = field(default_factory=dict)  # bidder -> highest maximum
    order: dict[int, int] = field(default_factory=dict)  # bidder -> when that maximum came
    price: int | None = None
    tick: int = 0

    def bid(self, user: int, amount: int, maximum: int) -> None:
        """Apply an accepted bid."""
        self.tick += 1
        if maximum > self.maxima.get(user, 0):
            self.maxima[user], self.order[user] = maximum, self.tick
        if len(self.maxima) == 1:
            self.price = amount if self.price is None else self.price
            return
        leader = self.leader
        second = max(m for u, m in self.maxima.items() if u != leader)
        self.price = max(self.price or 0, min(self.maxima[leader], second + increment(second)))

    @property
    def leader(self) -> int | None:
        """The highest maximum; the earlier one on a tie."""
        if not self.maxima:
            return None
        return min(self.maxima, key=lambda u: (-self.maxima[u], self.order[u]))
