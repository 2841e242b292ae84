"""The limit inferred from send times and 429s: timelines against the mock API's own limiters."""

from __future__ import annotations

import math

import pytest

from ingest.ratelimit.learning import fitting
from ingest.ratelimit.learning.auto import GROWTH, HALFWAY, HOLD, start_climb
from ingest.ratelimit.learning.inference import Inference, infer
from ingest.ratelimit.learning.lessons import limited, succeeded, told
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.pacing.rates import Rate
from mockapi.limits import RateLimiter, ceil_seconds, parse_limits
from tests.support.clock import FakeClock

EPOCH = 1_800_000_000.0  # a multiple of every candidate window: fixed windows start here


class Server:
    """The mock API's limiter on a timeline: ``send(t)`` is 0 if accepted, else the
    Retry-After it names; refused sends are remembered."""

    def __init__(self, limits: str, algorithm: str, burst: int = 1) -> None:
        self.limiter = RateLimiter(parse_limits(limits), algorithm, burst, clock=lambda: 0.0)
        self.sends: list[float] = []
        self.rejected: set[float] = set()

    def send(self, t: float) -> int:
        self.sends.append(t)
        wait = self.limiter.hit(t)
        if wait <= 0:
            return 0
        self.rejected.add(t)
        return max(1, ceil_seconds(wait))

    def pace(self, per_second: float, start: float, until: float = math.inf) -> tuple[float, int]:
        """Send evenly from ``start`` until a 429 (or ``until``): the refused send's
        time and its Retry-After, or (``until``, 0)."""
        t = start
        while t < until:
            if retry_after := self.send(t):
                return t, retry_after
            t += 1 / per_second
        return until, 0

    def infer(self, at: float, retry_after: float | None, **options: object) -> Inference | None:
        return infer(self.sends, self.rejected, at, retry_after, **options)  # type: ignore[arg-type]


def test_a_fixed_window_is_read_from_the_window_the_429_closed() -> None:
    server = Server("100/10", "fixed")
    at, retry_after = server.pace(12, EPOCH + 3.05)
    found = server.infer(at, retry_after)
    assert found is not None
    assert (found.limit, found.period, found.kind) == (100, 10.0, "fixed")


def test_a_sliding_window_is_read_from_the_last_seconds_before_the_429() -> None:
    # Started mid-window: the fixed 10-second window the 429 fell in held fewer sends
    # than the one before it, which refutes a fixed window.
    server = Server("100/10", "sliding")
    at, retry_after = server.pace(12, EPOCH + 5.5)
    found = server.infer(at, retry_after)
    assert found is not None
    assert (found.limit, found.period, found.kind) == (100, 10.0, "sliding")


def test_a_sliding_window_counts_the_refused_requests_too() -> None:
    # After a 429 and its pause, sends resume at the same pace: the log still holds the
    # refused one, so the next 429 comes one send sooner, and is read the same.
    server = Server("100/10", "sliding")
    at, retry_after = server.pace(12, EPOCH + 5.5)
    at, retry_after = server.pace(12, at + retry_after + 0.05)
    found = server.infer(at, retry_after)
    assert found is not None
    assert (found.limit, found.period, found.kind) == (100, 10.0, "sliding")


def test_sends_still_in_flight_at_the_429_do_not_count() -> None:
    server = Server("100/10", "sliding")
    at, retry_after = server.pace(12, EPOCH + 0.5)
    in_flight = [at + 0.01, at + 0.02, at + 0.03]
    found = infer([*server.sends, *in_flight], server.rejected, at, retry_after)
    assert found is not None
    assert (found.limit, found.period) == (100, 10.0)


def test_history_refutes_a_window_that_once_held_more() -> None:
    # Steady 12/s for 8 s: every 1-, 2- and 5-second window held as many before, without
    # a 429, as the one the 429 closed: only the 10-second window explains it.
    server = Server("100/10", "sliding")
    at, retry_after = server.pace(12, EPOCH + 0.5)
    found = server.infer(at, retry_after)
    assert found is not None and found.period == 10.0


def test_a_retry_after_that_fits_no_hypothesis_is_ignored() -> None:
    # A proxy that answers every 429 with Retry-After: 5, whatever the window.
    server = Server("100/10", "sliding")
    at, _ = server.pace(12, EPOCH + 0.5)
    found = server.infer(at, 5.0)
    assert found is not None
    assert (found.limit, found.period, found.kind) == (100, 10.0, "sliding")


def test_a_wrong_period_is_found_from_the_first_429() -> None:
    # Configured 20/2 against a sliding 10/2: the first 429 closes the 2-second window.
    server = Server("10/2", "sliding")
    at, retry_after = server.pace(10, EPOCH + 0.5)
    found = server.infer(at, retry_after, periods={2.0})
    assert found is not None
    assert (found.limit, found.period) == (10, 2.0)


def test_a_second_quota_is_found_when_the_first_is_kept() -> None:
    # Paced at exactly 100/10, a hidden 150/30 (fixed) refuses the 151st of its window.
    # Against a rate configured, a fixed window is believed once a whole one was seen
    # before it: at the first 429 the window before began before the first send.
    server = Server("100/10,150/30", "fixed")
    pace = 100 / 10 * 0.998
    at, retry_after = server.pace(pace, EPOCH + 20.2)
    assert server.infer(at, retry_after, periods={10.0}) is None
    first = at
    at, retry_after = server.pace(pace, at + retry_after)
    found = server.infer(at, retry_after, periods={10.0}, refused=[first])
    assert found is not None
    assert (found.limit, found.period, found.kind) == (150, 30.0, "fixed")


def test_of_the_hypotheses_one_that_refused_the_earlier_429_too_is_preferred() -> None:
    # A token bucket of 10/s, burst 5: a pace of 12/s spends the burst, and after the
    # pause 10.6/s spends it again. The second 429 alone reads best as a fixed window
    # a little slower (95/10); of the hypotheses, only the bucket refuses the first too.
    server = Server("100/10", "token", burst=5)
    server.pace(6, EPOCH, until=EPOCH + 20)
    first, retry_after = server.pace(12, EPOCH + 20)
    at, retry_after = server.pace(10.6, first + retry_after)
    alone = server.infer(at, retry_after, buckets=True)
    assert alone is not None and (alone.limit, alone.kind) == (95, "fixed")
    found = server.infer(at, retry_after, buckets=True, refused=[first])
    assert found is not None and found.kind == "token"
    assert found.per_second == pytest.approx(10, rel=0.03)


def test_no_token_bucket_is_read_from_a_429_soon_after_a_pause() -> None:
    # The pace the refused send came at is not known when its last sends span the
    # pause: read across it, a bucket far slower than the server's explains the 429.
    server = Server("100/10", "token", burst=5)
    first, retry_after = server.pace(13, EPOCH)
    resumed = first + retry_after
    at, _ = server.pace(40, resumed)
    assert 0 < server.sends.index(at) - server.sends.index(resumed) < fitting.LEAST - 1

    def fastest(resumed: float) -> tuple[int, int, int] | None:
        return fitting.fastest(
            server.sends, server.rejected, at, since=-math.inf, resumed=resumed, round_to=5
        )

    assert fastest(resumed) is None
    across = fastest(-math.inf)
    assert across is not None and across[0] < 0.95 * 100


@pytest.mark.parametrize("burst", [3, 5])
def test_a_token_bucket_is_found_from_two_paces(burst: int) -> None:
    server = Server("100/10", "token", burst)
    server.pace(8, EPOCH, until=EPOCH + 20)  # below its rate: no 429
    at, _ = server.pace(13, EPOCH + 20)
    at, retry_after = server.pace(11.5, at + 1.0)
    found = server.infer(at, retry_after, buckets=True)
    assert found is not None and found.kind == "token"
    assert found.per_second == pytest.approx(10, rel=0.05)
    assert found.per_second < 11.5 * 0.95


def test_a_retry_after_tells_a_wait_only_when_longer_than_a_second() -> None:
    fixed = Inference(100, 10.0, "fixed", 100, EPOCH + 4.7, wait=5.3)
    assert told(fixed, 6.0) and told(fixed, 5.0)
    assert not told(fixed, 3.0) and not told(fixed, None)
    # One second, rounded up, agrees with any hypothesis whose window frees up soon.
    assert not told(Inference(50, 10.0, "sliding", 51, EPOCH, wait=0.7), 1.0)


def test_nothing_is_inferred_from_a_429_without_a_record() -> None:
    assert infer([], set(), EPOCH) is None
    assert infer([EPOCH], {EPOCH}, EPOCH) is None


# ------------------------------------------------------------ the bucket


def auto_bucket(clock: FakeClock, rates: tuple[Rate, ...] = ()) -> TokenBucket:
    return TokenBucket(rates, auto=True, start=Rate(60, 60), clock=clock, rand=lambda: 0.0)


def send(b: TokenBucket, clock: FakeClock) -> float:
    """Book the next slot, wait for it, send: the send time."""
    slot = b.reserve()
    clock.now = max(clock.now, slot.at)
    confirmed = b.confirm(slot)
    while confirmed.wait:
        clock.now += confirmed.wait
        confirmed = b.confirm(slot)
    assert confirmed.wait == 0.0
    return confirmed.at


def test_auto_starts_cautious_and_ramps_up_step_by_step() -> None:
    clock = FakeClock(EPOCH)
    b = auto_bucket(clock)
    paces = [round(b.per_minute(), 6)]
    while len(paces) < 5:
        send(b, clock)
        if succeeded(b):
            paces.append(round(b.per_minute(), 6))
    assert paces == [round(60 * GROWTH**step, 6) for step in range(5)]
    assert clock.now - EPOCH == pytest.approx(4 * HOLD, abs=1.0)


def test_the_ramp_raises_only_a_pace_in_use() -> None:
    # Answers come, but the crawl sends one request where the pace allows ten (it is
    # held back by its concurrency): that says nothing of a faster pace.
    clock = FakeClock(EPOCH)
    b = auto_bucket(clock)
    b.state.pace = 10.0
    for _ in range(20):
        send(b, clock)
        clock.now += 1.0
        assert not succeeded(b)
    assert b.per_second() == 10.0


def test_a_ramp_step_books_again_the_slots_booked_at_the_old_pace() -> None:
    # Sixteen requests booked ahead at 1/s would hold the new pace back 16 s.
    clock = FakeClock(EPOCH)
    b = auto_bucket(clock)
    send(b, clock)
    succeeded(b)
    ahead = [b.reserve() for _ in range(16)]
    assert ahead[-1].at - clock.now == pytest.approx(16, rel=0.01)
    clock.now += HOLD
    b.state.sends.append(clock.now - HOLD / 2)  # the pace was in use
    assert succeeded(b)
    assert b.confirm(ahead[0]).wait is None  # void: booked again
    assert b.reserve().at - clock.now <= 1 / GROWTH


def ramp_into(
    b: TokenBucket, clock: FakeClock, server: Server, count: int
) -> tuple[list[Inference], float]:
    """Send through ``b`` one request at a time until the server has refused ``count``:
    what those 429s taught, and the fastest pace the bucket allowed meanwhile."""
    taught, fastest = [], b.per_second()
    while len(server.rejected) < count:
        at = send(b, clock)
        if retry_after := server.send(at):
            lesson = limited(b, at, retry_after, epoch=clock.now)
            assert lesson.unexpected and lesson.inferred is not None
            taught.append(lesson.inferred)
            b.pause(retry_after)
        else:
            succeeded(b)
            fastest = max(fastest, b.per_second())
    return taught, fastest


def test_a_limit_read_from_the_ramp_is_refined_by_the_next_429() -> None:
    # A token bucket with a burst: the ramp's 429 is explained by a window that is not
    # the server's (the burst let the ramp's last second through whole); the later 429s,
    # met at a pace held near the limit, show the bucket: within the four the ramp may
    # cost.
    clock = FakeClock(EPOCH)
    b = auto_bucket(clock)
    server = Server("100/10", "token", burst=5)
    (first,), _ = ramp_into(b, clock, server, 1)
    assert first.kind != "token" and not first.round
    taught = [first]
    while taught[-1].kind != "token":
        assert len(taught) < 4, taught
        (found,), _ = ramp_into(b, clock, server, len(taught) + 1)
        taught.append(found)
    last = taught[-1]
    assert last.per_second == pytest.approx(10, rel=0.03)
    assert not b.state.climbing and Rate(last.limit, last.period) in b.windows
    assert b.per_second() == pytest.approx(10, rel=0.03)


def test_the_climb_starts_halfway_to_the_pace_the_ramp_held() -> None:
    # The ramp's step before the refused one went whole at a pace above the limit read
    # from the 429 (a bucket's burst took the difference): the climb starts halfway
    # between that reading and that pace, not from the window's slow reading.
    clock = FakeClock(EPOCH)
    b = auto_bucket(clock)
    b.state.pace, b.state.ramped = 16.0, EPOCH - 0.1  # refused in the step to 16/s
    b.state.inferred = [[60, 10.0, "sliding", 1]]
    start_climb(b.state, Inference(60, 10.0, "sliding", 61, EPOCH), EPOCH)
    held = 16.0 / GROWTH
    assert b.state.inferred[0][0] == math.floor((6 + HALFWAY * (held - 6)) * 10)


@pytest.mark.parametrize("phase", [0.3, 1.0, 2.0, 3.3])
def test_a_round_limit_read_from_the_ramp_is_kept(phase: float) -> None:
    # The window the Retry-After names, that held every send of the ramp.
    clock = FakeClock(EPOCH + phase)
    b = auto_bucket(clock)
    server = Server("100/10", "fixed")
    (first,), _ = ramp_into(b, clock, server, 1)
    assert (first.limit, first.period, first.kind) == (100, 10.0, "fixed")
    assert not b.state.climbing and Rate(100, 10) in b.windows


def test_auto_adopts_the_inferred_limit_and_keeps_known_rates() -> None:
    clock = FakeClock(EPOCH)
    b = auto_bucket(clock, (Rate(100_000, 3600),))
    b.state.pace = 20.0  # ramped up well beyond 100/10
    server = Server("100/10", "sliding")
    for _ in range(1000):
        slot = b.reserve()
        clock.now = slot.at
        b.confirm(slot)
        if retry_after := server.send(slot.at):
            break
    lesson = limited(b, slot.at, retry_after, epoch=clock.now)
    assert lesson.unexpected and lesson.inferred is not None
    assert (lesson.inferred.limit, lesson.inferred.period) == (100, 10.0)
    assert b.per_minute() == pytest.approx(600)
    assert Rate(100_000, 3600) in b.rates and not b.ramping


def test_a_configured_rate_that_is_right_meets_a_lone_429_as_before() -> None:
    # A bucket with no burst at exactly its rate: a 429 from timing noise. Nothing
    # clearly slower explains it: the pace drops 3%, as it always has.
    clock = FakeClock(EPOCH)
    b = TokenBucket([Rate(100, 10)], clock=clock, rand=lambda: 0.0)
    for _ in range(200):
        slot = b.reserve()
        clock.now = slot.at
        b.confirm(slot)
    lesson = limited(b, slot.at, 1.0, epoch=clock.now)
    assert lesson.unexpected and lesson.inferred is None
    assert b.per_minute() == pytest.approx(600 * 0.97)


@pytest.mark.parametrize("phase", [0.0, 3.3, 7.7, 14.9])
def test_a_lone_429_at_the_configured_rate_never_lowers_it_much(phase: float) -> None:
    # Wherever the noise falls (early, before a whole window was seen; late), no
    # hypothesis clearly slower than the configured rate explains it.
    for sends in [*range(2, 30, 3), *range(30, 300, 13)]:
        clock = FakeClock(EPOCH + phase)
        b = TokenBucket([Rate(100, 10)], clock=clock, rand=lambda: 0.0)
        for _ in range(sends):
            slot = b.reserve()
            clock.now = slot.at
            b.confirm(slot)
        clock.now += 0.002
        lesson = limited(b, slot.at, 1.0, epoch=clock.now)
        assert lesson.inferred is None, (sends, lesson.inferred)
        assert b.per_minute() == pytest.approx(600 * 0.97)


@pytest.mark.parametrize("phase", [0.0, 3.3, 7.7, 14.9])
def test_a_lone_429_with_no_retry_after_lowers_the_configured_rate_little(phase: float) -> None:
    # nginx's limit_req says no Retry-After: nothing refutes a window reaching back before
    # the first send, which holds every send so far. It is believed only when nearly as
    # fast as the configured rate.
    for sends in [*range(2, 30, 3), *range(30, 300, 13)]:
        clock = FakeClock(EPOCH + phase)
        b = TokenBucket([Rate(100, 10)], clock=clock, rand=lambda: 0.0)
        for _ in range(sends):
            slot = b.reserve()
            clock.now = slot.at
            b.confirm(slot)
        clock.now += 0.002
        lesson = limited(b, slot.at, None, epoch=clock.now)
        if lesson.inferred is not None:
            assert lesson.inferred.per_second >= 0.8 * 10, (sends, lesson.inferred)
        assert b.per_minute() >= 0.8 * 600 * 0.97, sends


@pytest.mark.parametrize(("first", "second"), [(7, 86), (9, 30), (19, 88), (63, 88)])
def test_two_429s_at_the_configured_rate_never_lower_it_much(first: int, second: int) -> None:
    # The first one's pause leaves windows that hold fewer sends than the rate allows:
    # they are not taken for a slower limit when the second comes.
    clock = FakeClock(EPOCH + 3.3)
    b = TokenBucket([Rate(100, 10)], clock=clock, rand=lambda: 0.0)
    for i in range(second + 1):
        slot = b.reserve()
        clock.now = slot.at
        b.confirm(slot)
        if i in (first, second):
            clock.now += 0.002
            assert limited(b, slot.at, 1.0, epoch=clock.now).inferred is None
            b.pause(1.0)
        else:
            succeeded(b)
