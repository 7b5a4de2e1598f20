"""What admission reads (service/admission.py): the least slack over a window, the server's
model of a listener's playback that gives each chunk its slack, the rate of new streams, and
the limit on open streams that a listener run dry lowers."""

from __future__ import annotations

import math
import random

import pytest

from service.admission import Headroom, ListenerClock, SessionLimit, StartRate


def test_headroom_is_the_least_slack_within_the_window_and_forgets_older_ones():
    h = Headroom(window_s=2.0, min_slack_s=0.05)
    assert h.least(now=0.0) == math.inf and not h.full(now=0.0)
    h.record(0.30, now=1.0)
    h.record(0.02, now=1.5)  # a listener came within 20 ms of running dry
    h.record(0.20, now=2.0)
    assert h.least(now=2.0) == pytest.approx(0.02) and h.full(now=2.0)
    assert h.least(now=3.4) == pytest.approx(0.02)  # still within 2 s of it
    assert h.least(now=3.6) == pytest.approx(0.20) and not h.full(now=3.6)
    assert h.least(now=4.1) == math.inf


def test_headroom_matches_a_brute_force_minimum_over_random_records():
    rng = random.Random(7)
    h, seen, now = Headroom(window_s=1.0), [], 0.0
    for _ in range(2000):
        now += rng.uniform(0.0, 0.3)
        slack = rng.uniform(-0.2, 1.0)
        h.record(slack, now=now)
        seen.append((now, slack))
        now += rng.uniform(0.0, 0.5)  # (time only moves on)
        want = min((s for t, s in seen if t >= now - 1.0), default=math.inf)
        assert h.least(now=now) == want


def test_headroom_with_no_margin_set_measures_but_never_refuses():
    h = Headroom(window_s=2.0, min_slack_s=0.0)
    h.record(-1.0, now=0.0)
    assert h.least(now=0.5) == -1.0 and not h.full(now=0.5)


def test_listener_clock_gives_each_chunk_the_audio_still_to_play_when_it_left():
    clock = ListenerClock()
    assert clock.chunk(1, submitted_at=0.0, seconds=0.12, now=0.1) is None  # playback starts
    assert clock.chunk(1, 0.0, 0.12, now=0.15) == pytest.approx(0.07)  # 0.22 - 0.15
    assert clock.chunk(1, 0.0, 0.16, now=0.40) == pytest.approx(-0.06)  # ran dry 60 ms before it came
    assert clock.end == pytest.approx(0.56)  # playback resumed when it came


def test_a_sentence_submitted_while_the_one_before_plays_is_judged_as_the_same_playback():
    clock = ListenerClock()
    clock.chunk(1, submitted_at=0.0, seconds=2.0, now=0.1)  # plays until 2.1
    # The next sentence was submitted at 1.0, while the first played: its first chunk is late
    # if it leaves after 2.1, and on time before.
    assert clock.chunk(2, submitted_at=1.0, seconds=0.12, now=1.9) == pytest.approx(0.2)
    assert clock.chunk(3, submitted_at=1.95, seconds=0.12, now=2.4) == pytest.approx(-0.18)


def test_a_sentence_whose_text_came_after_the_audio_ran_out_starts_playback_afresh():
    clock = ListenerClock()
    clock.chunk(1, submitted_at=0.0, seconds=1.0, now=0.1)  # plays until 1.1
    # The next turn's text came at 4.0, long after: waiting for text is not the server's lateness.
    assert clock.chunk(2, submitted_at=4.0, seconds=0.12, now=4.1) is None
    assert clock.chunk(2, 4.0, 0.12, now=4.15) == pytest.approx(0.07)


def test_start_rate_admits_a_burst_then_the_rate_and_says_how_long_to_wait():
    gate = StartRate(per_s=4.0, burst=3)
    assert [gate.take(now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst goes at once
    assert gate.take(now=10.0) == pytest.approx(0.25)  # the next token comes a quarter second later
    assert gate.take(now=10.1) == pytest.approx(0.15)  # (a refusal spends nothing)
    assert gate.take(now=10.25) == 0.0
    assert gate.take(now=10.3) == pytest.approx(0.2)
    # An idle gate fills up to its burst, no further.
    assert [gate.take(now=100.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0] and gate.take(now=100.0) > 0


def test_start_rate_at_a_share_of_the_session_limit_scales_its_burst_and_rate():
    gate = StartRate(per_s=4.0, burst=8)
    assert gate.scaled(0.25) == (2, 1.0) and gate.scaled(0.01) == (1, 0.04)  # at least one at once
    # An idle gate at a quarter: two go at once, then one a second.
    assert [gate.take(now=50.0, share=0.25) for _ in range(2)] == [0.0, 0.0]
    assert gate.take(now=50.0, share=0.25) == pytest.approx(1.0)
    assert gate.take(now=51.0, share=0.25) == 0.0
    # Back at the full limit it refills at the full rate, up to the full burst.
    assert gate.take(now=51.25, share=1.0) == 0.0
    assert [gate.take(now=60.0) for _ in range(9)].count(0.0) == 8


def test_start_rate_matches_a_count_of_admissions_over_random_arrivals():
    """Over any stretch of time, admissions never exceed the burst plus the rate times its length."""
    rng = random.Random(3)
    gate, admitted, now = StartRate(per_s=5.0, burst=8), [], 0.0
    for _ in range(3000):
        now += rng.expovariate(12.0)  # arrivals at more than twice the rate
        if gate.take(now=now) == 0.0:
            admitted.append(now)
    for i, t0 in enumerate(admitted):
        for j in range(i, len(admitted)):
            if admitted[j] - t0 > 3.0:
                break
            assert j - i + 1 <= 8 + 5.0 * (admitted[j] - t0) + 1e-9
    assert len(admitted) == pytest.approx(5.0 * now, rel=0.05)  # and the rate is what passes


def test_a_start_within_the_hold_books_its_token_and_later_ones_queue_behind_it():
    gate = StartRate(per_s=4.0, burst=2, hold_s=0.5)
    assert [gate.take(now=10.0) for _ in range(2)] == [0.0, 0.0]
    # Booked ahead: each waits a quarter second longer than the one before.
    assert [gate.take(now=10.0) for _ in range(2)] == pytest.approx([0.25, 0.5])
    # The next would wait 0.75 s, past the hold: refused, and nothing spent, so the same
    # answer comes again; a retry 0.25 s later would be booked.
    assert gate.take(now=10.0) == pytest.approx(0.75)
    assert gate.take(now=10.0) == pytest.approx(0.75)
    assert gate.take(now=10.25) == pytest.approx(0.5)  # booked
    # The debt is paid at the rate: by 11.5 the bucket is back to its burst.
    assert [gate.take(now=11.5) for _ in range(2)] == [0.0, 0.0]


def test_a_refunded_booking_lets_the_next_start_take_its_place():
    gate = StartRate(per_s=4.0, burst=1, hold_s=0.5)
    assert gate.take(now=10.0) == 0.0
    assert gate.take(now=10.0) == pytest.approx(0.25)  # booked, then its client leaves
    gate.refund()
    assert gate.take(now=10.0) == pytest.approx(0.25)  # the same place, not 0.5 behind it
    assert gate.take(now=10.0) == pytest.approx(0.5)
    for _ in range(5):  # refunds never fill the bucket past its burst
        gate.refund()
    assert [gate.take(now=10.0) for _ in range(2)] == pytest.approx([0.0, 0.25])
    StartRate(per_s=0.0).refund()  # off: nothing to give back


def test_held_starts_keep_to_the_rate_over_random_arrivals():
    """Each booked start goes at arrival + wait; those moments never exceed the burst plus the
    rate over any stretch, and no wait is beyond the hold."""
    rng = random.Random(5)
    gate, starts, now = StartRate(per_s=5.0, burst=4, hold_s=0.5), [], 0.0
    for _ in range(3000):
        now += rng.expovariate(8.0)
        wait = gate.take(now=now)
        if wait <= gate.hold_s:
            starts.append(now + wait)
    assert starts == sorted(starts)  # a queue: first booked, first to go
    for i, t0 in enumerate(starts):
        for j in range(i, len(starts)):
            if starts[j] - t0 > 3.0:
                break
            assert j - i + 1 <= 4 + 5.0 * (starts[j] - t0) + 1e-6
    assert len(starts) == pytest.approx(5.0 * now, rel=0.05)


def test_start_rate_off_admits_everything():
    gate = StartRate(per_s=0.0)
    assert all(gate.take(now=0.0) == 0.0 for _ in range(100))


def test_a_second_thin_moment_lowers_the_limit_below_the_streams_open_and_quiet_spells_raise_it_back():
    lim = SessionLimit(ceiling=16, raise_s=10.0, moment_s=3.0)
    assert lim.value(now=0.0) == 16
    # One thin moment (dry listeners less than 3 s apart) cuts nothing: a crowd's first turns.
    assert [lim.dry(open_streams=6, now=t) for t in (1.0, 2.0, 4.5)] == [False, False, False]
    assert lim.value(now=4.5) == 16
    # A second moment within 10 s of the first: the load itself is too much.
    assert lim.dry(open_streams=6, now=8.0) and lim.value(now=8.0) == 5 and lim.cuts == 1
    # Six are still open (admitted before the cut): another moment cuts nothing more,
    # but the quiet time starts again from it.
    assert not lim.dry(open_streams=6, now=12.0)
    assert lim.value(now=21.9) == 5 and lim.cuts == 1
    assert lim.value(now=22.0) == 6  # ten quiet seconds after the last one
    # After a quiet spell a moment is a first one again; once the cut is in force (at most the
    # limit open), a moment soon after it cuts again.
    assert not lim.dry(open_streams=5, now=23.0)
    assert lim.dry(open_streams=5, now=26.5) and lim.value(now=26.5) == 4 and lim.cuts == 2
    assert [lim.value(now=t) for t in (36.4, 36.5, 46.5, 76.5, 1000.0)] == [4, 5, 6, 9, 16]  # up to the ceiling
    # Moments further apart than raise_s are each passing: no cut.
    assert not lim.dry(open_streams=16, now=1000.0) and not lim.dry(open_streams=16, now=1011.0)
    assert lim.value(now=1011.0) == 16


def test_the_limit_never_falls_below_one_stream_and_stays_fixed_when_off():
    lim = SessionLimit(ceiling=4, raise_s=10.0, moment_s=1.0)
    lim.dry(open_streams=2, now=0.0)
    lim.dry(open_streams=2, now=2.0)
    assert lim.value(now=2.0) == 1
    lim.dry(open_streams=1, now=4.0)  # a stream alone: nothing to protect by refusing others
    assert lim.value(now=4.0) == 1 and lim.cuts == 1
    off = SessionLimit(ceiling=4, raise_s=0.0)
    for t in (0.0, 5.0, 10.0):
        off.dry(open_streams=3, now=t)
    assert off.value(now=10.0) == 4 and off.cuts == 0


def test_the_limit_matches_a_replay_of_its_rule_over_random_dry_listeners():
    rng = random.Random(3)
    raise_s, moment_s, ceiling = 4.0, 1.0, 12
    lim = SessionLimit(ceiling=ceiling, raise_s=raise_s, moment_s=moment_s)
    want, since, last, now = ceiling, -math.inf, -math.inf, 0.0
    for _ in range(3000):
        now += rng.uniform(0.0, 3.0)
        steps = int((now - since) // raise_s) if want < ceiling else 0
        want, since = min(ceiling, want + steps), since + steps * raise_s
        if rng.random() < 0.5:
            n = rng.randint(1, 14)
            lim.dry(open_streams=n, now=now)
            if moment_s <= now - last <= raise_s and 1 < n <= want:
                want = n - 1
            since = last = now
        assert lim.value(now=now) == want
