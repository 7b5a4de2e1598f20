"""What admission reads (service/admission.py): the least slack over a window, the server's
model of a listener's playback that gives each chunk its slack, and the rate of new streams."""

from __future__ import annotations

import math
import random

import pytest

from service.admission import Headroom, ListenerClock, StartRate


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
