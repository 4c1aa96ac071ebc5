"""What one client may cost: request rates per address and the server's session slots.

Both are plain synchronous objects used from the event loop only, so a check and its update
happen with no ``await`` between them: twenty offers arriving together cannot all pass a cap of
eight (the slot is taken in the same step as the check, and given back if the offer fails).
"""

from __future__ import annotations

from collections import OrderedDict

from avatar.clock import Clock
from avatar.units import NS_PER_S


class RateLimiter:
    """A token bucket per key (client address): ``burst`` at once, ``per_minute`` sustained.
    At most ``max_keys`` buckets are kept (the least recently used are forgotten)."""

    def __init__(self, clock: Clock, per_minute: float, burst: int, max_keys: int = 10_000) -> None:
        self.clock, self.rate, self.burst = clock, per_minute / 60.0, float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> tokens, t

    def take(self, key: str) -> float:
        """0 if the request may go ahead (a token is spent), else seconds until it may."""
        now = self.clock.now_ns()
        tokens, then = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) / NS_PER_S * self.rate)
        retry = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            retry = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return retry


class SessionSlots:
    """The session cap: a slot is reserved before any work and released exactly once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def reserve(self) -> bool:
        if self.used >= self.capacity:
            return False
        self.used += 1
        return True

    def release(self) -> None:
        self.used = max(self.used - 1, 0)
