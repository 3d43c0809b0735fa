"""When the master replaces crashed workers (forkserve/master/respawn.py)."""

from __future__ import annotations

from forkserve.master.respawn import (BOOT_BACKOFF_MAX, CONTINUOUS, SPACING, WINDOW,
                                      RespawnPolicy)


def test_a_serving_crash_is_replaced_at_once():
    policy = RespawnPolicy()
    assert policy.serving_crashed(100.0) is False
    assert policy.spawn_now(100.0, missing=1, live=0) == 1
    # Crashes every 2 s never count as continuous.
    for i in range(20):
        now = 102.0 + 2 * i
        assert policy.serving_crashed(now) is False
        assert policy.spawn_now(now, missing=3, live=1) == 3


def test_boot_failures_back_off_doubling_and_reset_once_a_worker_is_ready():
    policy = RespawnPolicy()
    delays = [policy.boot_failed(10.0) for _ in range(9)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == BOOT_BACKOFF_MAX
    assert policy.spawn_now(10.0 + BOOT_BACKOFF_MAX - 0.01, missing=2, live=0) == 0
    # Not even to refill an empty pool: a crashing import is not retried in a loop.
    assert policy.spawn_now(10.0 + BOOT_BACKOFF_MAX, missing=2, live=0) == 2
    assert policy.next_spawn_at(10.0) == 10.0 + BOOT_BACKOFF_MAX
    policy.booted()
    assert policy.boot_backoff == 0.0
    assert policy.spawn_now(10.0, missing=2, live=0) == 2
    assert policy.boot_failed(11.0) == 0.1


def test_continuous_crashes_are_spaced_but_never_leave_the_pool_empty():
    policy = RespawnPolicy()
    now = 50.0
    for i in range(CONTINUOUS + 1):
        continuous = policy.serving_crashed(now + i * 0.1)
    assert continuous
    now += CONTINUOUS * 0.1
    assert policy.spawn_now(now, missing=4, live=2) == 1
    assert policy.spawn_now(now + 0.01, missing=3, live=2) == 0
    assert policy.next_spawn_at(now + 0.01) == now + SPACING
    # The last worker died: one starts at once, whatever the spacing.
    assert policy.spawn_now(now + 0.02, missing=4, live=0) == 1
    assert policy.spawn_now(now + 0.03, missing=3, live=1) == 0
    # Quiet for a whole window: back to replacing everything at once.
    later = now + WINDOW + 1
    assert not policy.continuous(later)
    assert policy.spawn_now(later, missing=3, live=1) == 3
    assert policy.next_spawn_at(later) == 0.0
