"""The lock manager: modes, set locks, fairness, priorities, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.errors import LockError
from corral.locking import _COMPAT, BGL, Level, LockManager, Mode

I = Level.INSTANCE  # noqa: E741
BLOCK = 0.05  # how long "still waiting" must hold to count as blocked


def run(fn: Callable[[LockManager], Awaitable[None]]) -> LockManager:
    lm = LockManager()

    async def main() -> None:
        await asyncio.wait_for(fn(lm), 10)

    asyncio.run(main())
    return lm


async def blocked(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Start an acquire and check it is still waiting a little later."""
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(BLOCK)
    assert not task.done(), "expected the acquire to wait"
    return task


async def granted(task: asyncio.Task[None]) -> None:
    await asyncio.wait_for(task, 1)


async def acquires_now(coro: Coroutine[Any, Any, None]) -> None:
    await asyncio.wait_for(coro, BLOCK)


def assert_clean(lm: LockManager) -> None:
    assert lm.owned == {}
    assert lm.info() == []


# --- modes ------------------------------------------------------------------------------


def test_shared_shared_compatible() -> None:
    async def t(lm: LockManager) -> None:
        await acquires_now(lm.acquire("a", I, ["x"], shared=True))
        await acquires_now(lm.acquire("b", I, ["x"], shared=True))
        assert lm.holders(I, "x") == {"a": Mode.S, "b": Mode.S}
        lm.release("a")
        lm.release("b")

    assert_clean(run(t))


def test_exclusive_blocks_and_is_granted_on_release() -> None:
    async def t(lm: LockManager) -> None:
        await acquires_now(lm.acquire("a", I, ["x"], shared=False))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(lm.acquire("b", I, ["x"], shared=True), BLOCK)
        c = await blocked(lm.acquire("c", I, ["x"], shared=False))
        assert lm.holders(I, "x") == {"a": Mode.X}
        lm.release("a")
        await granted(c)
        assert lm.holders(I, "x") == {"c": Mode.X}
        lm.release("c")
        lm.release("b")

    assert_clean(run(t))


def test_exclusive_waits_for_sharers() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("a", I, ["x"], shared=True)
        await lm.acquire("b", I, ["x"], shared=True)
        c = await blocked(lm.acquire("c", I, ["x"], shared=False))
        lm.release("a")
        await asyncio.sleep(BLOCK)
        assert not c.done()
        lm.release("b")
        await granted(c)
        lm.release("c")

    assert_clean(run(t))


def test_different_names_exclusive_run_concurrently() -> None:
    async def t(lm: LockManager) -> None:
        await acquires_now(lm.acquire("a", I, ["inst1"], shared=False))
        await acquires_now(lm.acquire("b", I, ["inst2"], shared=False))
        await acquires_now(lm.acquire("c", I, ["inst3", "inst4"], shared=False))
        assert lm.holders(I, "[instance]") == {"a": Mode.IX, "b": Mode.IX, "c": Mode.IX}
        for o in "abc":
            lm.release(o)

    assert_clean(run(t))


def test_same_name_at_different_levels_is_independent() -> None:
    async def t(lm: LockManager) -> None:
        await acquires_now(lm.acquire("a", Level.NODE, ["n1"], shared=False))
        await acquires_now(lm.acquire("b", Level.NODE_RES, ["n1"], shared=False))
        lm.release("a")
        lm.release("b")

    assert_clean(run(t))


# --- "all names" ----------------------------------------------------------------------------


def test_all_exclusive_waits_for_every_holder_and_blocks_newcomers() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("a", I, ["x"], shared=False)
        await lm.acquire("b", I, ["y"], shared=True)
        big = await blocked(lm.acquire("big", I, None, shared=False))
        # Newcomers on other names queue behind the "all" waiter.
        newcomer = await blocked(lm.acquire("new", I, ["z"], shared=True))
        lm.release("a")
        await asyncio.sleep(BLOCK)
        assert not big.done()
        lm.release("b")
        await granted(big)
        assert lm.holders(I, "[instance]") == {"big": Mode.X}
        await asyncio.sleep(BLOCK)
        assert not newcomer.done()
        lm.release("big")
        await granted(newcomer)
        lm.release("new")

    assert_clean(run(t))


def test_all_exclusive_blocks_later_single_names() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("big", I, None, shared=False)
        w = await blocked(lm.acquire("a", I, ["x"], shared=True))
        lm.release("big")
        await granted(w)
        lm.release("a")

    assert_clean(run(t))


def test_all_shared_coexists_with_shared_names_not_exclusive_ones() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("a", I, ["x"], shared=True)
        await acquires_now(lm.acquire("all-s", I, None, shared=True))
        await acquires_now(lm.acquire("b", I, ["y"], shared=True))
        writer = await blocked(lm.acquire("w", I, ["z"], shared=False))
        lm.release("all-s")
        await granted(writer)
        # ...and the other way round: an exclusive name holder blocks "all, shared".
        reader = await blocked(lm.acquire("all-s2", I, None, shared=True))
        lm.release("w")
        await granted(reader)
        for o in ("a", "b", "all-s2"):
            lm.release(o)

    assert_clean(run(t))


def test_compat_matrix_is_symmetric() -> None:
    for m1 in Mode:
        for m2 in Mode:
            assert (m2 in _COMPAT[m1]) == (m1 in _COMPAT[m2])


# --- fairness and priority ---------------------------------------------------------------------


def test_exclusive_waiter_is_not_starved_by_later_sharers() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("r1", I, ["x"], shared=True)
        w = await blocked(lm.acquire("w", I, ["x"], shared=False))
        # Compatible with the current holder, but must queue behind the writer.
        r2 = await blocked(lm.acquire("r2", I, ["x"], shared=True))
        lm.release("r1")
        await granted(w)
        assert not r2.done()
        lm.release("w")
        await granted(r2)
        lm.release("r2")

    assert_clean(run(t))


def test_waiting_sharers_are_granted_together() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("w", I, ["x"], shared=False)
        readers = [await blocked(lm.acquire(f"r{i}", I, ["x"], shared=True)) for i in range(3)]
        lm.release("w")
        for r in readers:
            await granted(r)
        assert set(lm.holders(I, "x")) == {"r0", "r1", "r2"}
        for i in range(3):
            lm.release(f"r{i}")

    assert_clean(run(t))


def test_priority_orders_waiters_then_fifo() -> None:
    order: list[str] = []

    async def t(lm: LockManager) -> None:
        await lm.acquire("holder", I, ["x"], shared=False)

        async def job(owner: str, prio: int) -> None:
            await lm.acquire(owner, I, ["x"], shared=False, priority=prio)
            order.append(owner)
            await asyncio.sleep(0.001)
            lm.release(owner)

        tasks = []
        for owner, prio in [("low1", 10), ("normal1", 0), ("high", -10), ("normal2", 0)]:
            tasks.append(await blocked(job(owner, prio)))
        lm.release("holder")
        await asyncio.gather(*tasks)

    assert_clean(run(t))
    assert order == ["high", "normal1", "normal2", "low1"]


# --- order, cancellation, release ----------------------------------------------------------------


def test_lock_order_violation() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("a", Level.NODE, ["n1"], shared=False)
        with pytest.raises(LockError, match="order"):
            await lm.acquire("a", Level.INSTANCE, ["i1"], shared=False)
        with pytest.raises(LockError):
            await lm.acquire("a", Level.CLUSTER, [BGL], shared=True)
        assert set(lm.owned["a"]) == {Level.NODE}
        assert lm.holders(I, "i1") == {}
        # Same or higher levels are fine.
        await acquires_now(lm.acquire("a", Level.NETWORK, ["net"], shared=True))
        lm.release("a")

    assert_clean(run(t))


def test_cancelled_wait_on_a_name_leaves_no_trace() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("a", I, ["x"], shared=False)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(lm.acquire("b", I, ["x"], shared=False), BLOCK)
        assert lm.holders(I, "x") == {"a": Mode.X}
        assert ("instance", "x", ["a:X"], 0) in lm.info()
        # The canceled waiter does not hold up anyone: a sharer queued now gets
        # the lock as soon as "a" lets go.
        c = await blocked(lm.acquire("c", I, ["x"], shared=True))
        lm.release("b")  # what the processor does after any failure
        lm.release("a")
        await granted(c)
        assert lm.holders(I, "x") == {"c": Mode.S}
        lm.release("c")

    assert_clean(run(t))


def test_cancelled_wait_for_all_leaves_no_trace() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("a", I, ["x"], shared=True)
        big = await blocked(lm.acquire("big", I, None, shared=False))
        big.cancel()
        with pytest.raises(asyncio.CancelledError):
            await big
        assert "big" not in lm.owned
        assert all(waiting == 0 for *_, waiting in lm.info())
        # Nobody waits for "all" any more: newcomers are not queued behind it.
        await acquires_now(lm.acquire("b", I, ["y"], shared=False))
        lm.release("a")
        lm.release("b")

    assert_clean(run(t))


def test_cancel_after_grant_does_not_leak_the_lock() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("a", I, ["x"], shared=False)
        b = await blocked(lm.acquire("b", I, ["x"], shared=False))
        lm.release("a")  # grants to b...
        b.cancel()  # ...but b is canceled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await b
        lm.release("b")
        await acquires_now(lm.acquire("c", I, ["x"], shared=False))
        lm.release("c")

    assert_clean(run(t))


def test_release_everything_or_one_level() -> None:
    async def t(lm: LockManager) -> None:
        await lm.acquire("a", Level.CLUSTER, [BGL], shared=True)
        await lm.acquire("a", I, ["i1", "i2"], shared=False)
        await lm.acquire("a", Level.NODE, ["n1"], shared=True)
        assert set(lm.owned["a"]) == {Level.CLUSTER, I, Level.NODE}
        assert set(lm.owned["a"][I]) == {"[instance]", "i1", "i2"}
        lm.release("a", Level.NODE)
        assert set(lm.owned["a"]) == {Level.CLUSTER, I}
        assert lm.holders(Level.NODE, "n1") == {}
        lm.release("a")
        lm.release("a")  # idempotent
        lm.release("nobody")

    assert_clean(run(t))


def test_duplicate_names_in_one_request() -> None:
    async def t(lm: LockManager) -> None:
        await acquires_now(lm.acquire("a", I, ["x", "x", "y"], shared=False))
        assert set(lm.owned["a"][I]) == {"[instance]", "x", "y"}
        lm.release("a")

    assert_clean(run(t))


# --- randomized: never deadlocks, always cleans up ------------------------------------------------

_names = st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=3)
_step = st.tuples(st.none() | _names, st.booleans())
_plan = st.tuples(
    st.dictionaries(st.sampled_from(list(Level)), _step, min_size=1, max_size=4),
    st.integers(min_value=-20, max_value=19),
)


def _check_no_conflicts(lm: LockManager) -> None:
    for level, name, holders, _ in lm.info():
        modes = [Mode(h.rsplit(":", 1)[1]) for h in holders]
        for i, m1 in enumerate(modes):
            for m2 in modes[i + 1 :]:
                assert m2 in _COMPAT[m1], f"{level}/{name}: {holders}"


@settings(max_examples=60, deadline=None)
@given(st.lists(_plan, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_random_jobs_in_level_order_never_deadlock(
    plans: list[tuple[dict[Level, tuple[list[str] | None, bool]], int]], rnd: Any
) -> None:
    async def job(lm: LockManager, idx: int, steps: dict[Any, Any], prio: int) -> None:
        owner = f"job-{idx}"
        try:
            for level in sorted(steps):
                names, shared = steps[level]
                await lm.acquire(owner, level, names, shared, priority=prio)
                _check_no_conflicts(lm)
                if rnd.random() < 0.5:
                    await asyncio.sleep(0)
            for _ in range(rnd.randrange(3)):
                await asyncio.sleep(0)
            _check_no_conflicts(lm)
        finally:
            lm.release(owner)

    async def t(lm: LockManager) -> None:
        tasks = [asyncio.ensure_future(job(lm, i, s, p)) for i, (s, p) in enumerate(plans)]
        if rnd.random() < 0.3:  # sometimes a job is canceled mid-way
            await asyncio.sleep(0)
            tasks[rnd.randrange(len(tasks))].cancel()
        done, pending = await asyncio.wait(tasks, timeout=5)
        assert not pending, "deadlock"
        for d in done:
            if not d.cancelled():
                assert d.exception() is None

    assert_clean(run(t))
