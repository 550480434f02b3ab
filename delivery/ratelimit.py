"""Rate limits: token buckets, and the pace of the requests to Pinterest.

A token bucket: `rate` requests per second sustained, up to `burst` at once. A 429 (or a 503)
from Pinterest pauses the bucket for its Retry-After and halves the rate it had; from then on
the rate doubles back every `recovery` seconds by itself, up to the configured rate. Recovery
follows the clock, not the successes nor any flag of a process: a restart, or a node that
never saw the 429, recovers on the same schedule. A new configured rate applies at the next
take, above or below the slowed one.

Requests to Pinterest take a token from two buckets at once (or from neither): their
integration's own, a ceiling the integration may lower (`rate_limit_per_second`, the seed's
100/s at most), and their ad account's, which every integration and node sending to that
account shares: Pinterest allows 5,000 calls a minute per ad account on the events endpoint
(its API description). A 429 pauses and slows the account's bucket: every integration on the
account waits. On one node the waiters for an account take turns, priority batches first;
across nodes the bucket's row in the database orders them (delivery/postgres/event_queue.py).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import anyio
import msgspec

RATE_RECOVERY = 10.0  # seconds for a rate halved by a 429 to double back (SIGNAL_RATE_RECOVERY)
MAX_DOUBLINGS = 64  # 2**64 times any slowed rate is more than any configured one
ACCOUNT_CALLS_PER_MINUTE = 5000.0  # Pinterest's limit per ad account (SIGNAL_ACCOUNT_CALLS_PER_MINUTE)
# Pinterest counts a call when it arrives, a little after the bucket let it go, and not always
# equally long after: the account's bucket holds its budget over this many seconds more than
# the minute, so that no minute of arrivals holds more calls than the budget.
ARRIVAL_SLACK = 1.0
MAX_WAIT = 1.0  # a waiter looks again at least this often: a raised limit applies within a second
# A token accrued over exactly its wait may fall short of 1 by a rounding error; a wait shorter
# than the clock's resolution would never end.
WHOLE = 1 - 1e-9


def account_bucket(calls_per_minute: float) -> tuple[float, int]:
    """(rate per second, burst) of a bucket that lets at most `calls_per_minute` calls through
    in any minute, and almost that many while there is a backlog: a burst of a hundredth of
    the budget, then the rest spread over the minute and the slack (97% of the budget at 5,000)."""
    burst = max(1, int(calls_per_minute // 100))
    return max(calls_per_minute - burst, 1.0) / (60.0 + ARRIVAL_SLACK), burst


class Budget(msgspec.Struct, frozen=True):
    """What paces one integration's requests."""

    account: str  # the ad account: its budget is shared by every integration and node sending to it
    rate: float = 100.0  # the integration's own ceiling, requests per second
    burst: int = 200
    account_per_minute: float = ACCOUNT_CALLS_PER_MINUTE
    recovery: float = RATE_RECOVERY


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock=time.monotonic, recovery: float = RATE_RECOVERY) -> None:
        self.configured_rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.recovery = recovery
        self.tokens = float(self.burst)
        self.updated = clock()
        self.paused_until = float("-inf")
        self.slowed: tuple[float, float] | None = None  # (the rate a 429 left, when): None, never slowed

    def _rate(self, now: float) -> float:
        """The configured rate, or since a 429 the rate it left, doubled every `recovery` s."""
        if self.slowed is None:
            return self.configured_rate
        slowed, at = self.slowed
        return min(self.configured_rate, slowed * 2 ** min(MAX_DOUBLINGS, max(0.0, now - at) / self.recovery))

    def _refill(self, now: float) -> float:
        """Add what accrued since the last look; returns the rate now."""
        rate = self.configured_rate if self.slowed is None else self._rate(now)
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        return rate

    def reconfigure(self, rate: float, burst: int) -> None:
        self.configured_rate = rate
        self.burst = max(1, burst)
        self.tokens = min(self.tokens, self.burst)

    def try_take(self, n: int = 1) -> float:
        """Take `n` tokens and return 0, or return how long until they would be there."""
        now = self.clock()
        if now < self.paused_until:
            return self.paused_until - now
        rate = self._refill(now)
        if self.tokens >= min(n, self.burst):  # a take larger than the burst leaves a debt
            self.tokens -= n
            return 0.0
        return (min(n, self.burst) - self.tokens) / rate

    def wait(self) -> float:
        """Seconds until one token is there (0: now), taking none."""
        now = self.clock()
        if now < self.paused_until:
            return self.paused_until - now
        rate = self._refill(now)
        return 0.0 if self.tokens >= WHOLE else (1 - self.tokens) / rate

    def take(self) -> None:
        """Take the token `wait` found."""
        self.tokens -= 1

    def throttled(self, retry_after: float) -> None:
        """Pause for `retry_after`, and halve the rate unless a pause is already running (the
        other requests in flight at that moment report the same overload)."""
        now = self.clock()
        if now >= self.paused_until:
            self.slowed = (max(1.0, self._rate(now) / 2), now)
        self.paused_until = max(self.paused_until, now + retry_after)
        self.tokens = 0.0
        self.updated = self.paused_until  # nothing accrues during the pause


class Turns:
    """One holder at a time; waiters in order of arrival, priority ones before the others."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: tuple[deque[anyio.Event], deque[anyio.Event]] = (deque(), deque())  # priority, others

    @contextlib.asynccontextmanager
    async def turn(self, priority: bool = False) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: bool) -> None:
        if not self._held and not any(self._waiting):
            self._held = True
            return
        handed = anyio.Event()
        line = self._waiting[0 if priority else 1]
        line.append(handed)
        try:
            await handed.wait()
        except BaseException:  # cancelled: give up the place, or the turn when it came meanwhile
            if handed.is_set():
                self._release()
            else:
                line.remove(handed)
            raise

    def _release(self) -> None:
        for line in self._waiting:
            if line:
                line.popleft().set()  # handed over: still held
                return
        self._held = False


class Pacer:
    """An integration's rate limiter: `acquire` takes one token of its own bucket and one of its
    ad account's together. The buckets live where the backend keeps them (`take`)."""

    def __init__(self, budget: Budget, turns: Turns) -> None:
        self.budget = budget
        self.turns = turns  # this node's waiters for the account

    async def take(self) -> tuple[float, float]:
        """Take a token of both buckets: (0, 0); or take none and say how long until the
        integration's own bucket has one (own, 0), else its account's (0, account)."""
        raise NotImplementedError

    def throttled(self, retry_after: float) -> None:
        """Pinterest said 429 (or 503): pause the account's budget and halve its rate."""
        raise NotImplementedError

    def reconfigure(self, budget: Budget) -> None:
        """New limits for the same ad account, applied at the next take."""
        self.budget = budget

    async def acquire(self, priority: bool = False) -> None:
        while True:
            async with self.turns.turn(priority):
                while True:
                    own, account = await self.take()
                    if own > 0:
                        break  # waited out of turn: the account's other integrations go meanwhile
                    if account <= 0:
                        return
                    await anyio.sleep(min(account, MAX_WAIT))
            await anyio.sleep(min(own, MAX_WAIT))


class Accounts:
    """This node's waiters per ad account, and (one process: SQLite) each account's bucket, by
    `clock` (a test's, or the monotonic one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._turns: dict[str, Turns] = {}
        self._buckets: dict[str, TokenBucket] = {}

    def turns(self, account: str) -> Turns:
        return self._turns.setdefault(account, Turns())

    def bucket(self, budget: Budget) -> TokenBucket:
        rate, burst = account_bucket(budget.account_per_minute)
        bucket = self._buckets.get(budget.account)
        if bucket is None:
            bucket = self._buckets[budget.account] = TokenBucket(rate, burst, self.clock, budget.recovery)
        elif (bucket.configured_rate, bucket.burst) != (rate, burst):
            bucket.reconfigure(rate, burst)
        return bucket


class MemoryPacer(Pacer):
    """Both buckets in this process's memory: one process holds every integration."""

    def __init__(self, budget: Budget, accounts: Accounts) -> None:
        super().__init__(budget, accounts.turns(budget.account))
        self.accounts = accounts
        self.own = TokenBucket(budget.rate, budget.burst, accounts.clock, budget.recovery)
        self.account = accounts.bucket(budget)

    def reconfigure(self, budget: Budget) -> None:
        super().reconfigure(budget)
        self.own.reconfigure(budget.rate, budget.burst)
        self.account = self.accounts.bucket(budget)

    async def take(self) -> tuple[float, float]:
        if (own := self.own.wait()) > 0:
            return own, 0.0
        if (account := self.account.wait()) > 0:
            return 0.0, account
        self.own.take()
        self.account.take()
        return 0.0, 0.0

    def throttled(self, retry_after: float) -> None:
        self.account.throttled(retry_after)
