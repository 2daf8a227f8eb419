"""Stopping a background task whose cancellation gets lost (as Python 3.11's ``wait_for``
loses one inside redis-py's send): ``cancel_and_wait`` cancels it again until it ends."""

from __future__ import annotations

import asyncio

import pytest

from ocs.tasks import SingleFlight, cancel_all_and_wait, cancel_and_wait


async def test_a_task_that_loses_cancellations_is_stopped_all_the_same() -> None:
    lost = 0

    async def consumer_loop() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost < 2:  # the first two cancellations vanish, as in redis-py on 3.11
                    lost += 1
                    continue
                raise

    task = asyncio.create_task(consumer_loop())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, every=0.05), timeout=10)
    assert task.cancelled()
    assert lost == 2


async def test_an_error_the_task_ends_with_is_raised() -> None:
    async def fails() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)


async def test_a_task_already_done_is_left_as_it_is() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    await cancel_and_wait(task)
    assert not task.cancelled()


async def test_several_tasks_are_stopped_together_and_the_first_error_raised() -> None:
    stopped: list[str] = []

    async def lane(name: str, fail: bool) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            stopped.append(name)
            if fail:
                raise RuntimeError(f"{name} failed")

    tasks = [asyncio.create_task(lane(n, n in ("b", "c"))) for n in "abcd"]
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="b failed"):
        await cancel_all_and_wait(tasks)
    assert sorted(stopped) == list("abcd") and all(t.done() for t in tasks)


async def test_a_cancelled_caller_still_waits_for_what_it_stops() -> None:
    """The caller (a consumer's cleanup, itself being cancelled) is cancelled while it waits
    for a task that loses its cancellations: the task is still cancelled again and awaited,
    then the caller's cancellation is raised; nothing is left pending."""
    released = asyncio.Event()
    lost: list[asyncio.Event] = [asyncio.Event() for _ in range(3)]

    async def loses_cancellations() -> None:
        n = 0
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if released.is_set():
                    raise
                lost[min(n, 2)].set()
                n += 1

    child = asyncio.create_task(loses_cancellations())
    await asyncio.sleep(0)
    caller = asyncio.create_task(cancel_and_wait(child, every=0.01))
    await lost[0].wait()
    caller.cancel()
    await lost[2].wait()  # cancelled again after the caller was
    assert not caller.done() and not child.done()
    released.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert child.cancelled()


async def test_single_flight_runs_once_for_all_callers_and_survives_a_cancelled_one() -> None:
    runs, errors = 0, []
    gate = asyncio.Event()

    async def work() -> None:
        nonlocal runs
        runs += 1
        await gate.wait()
        if runs == 2:
            raise RuntimeError("second run failed")

    flight = SingleFlight(work, on_error=errors.append)
    callers = [asyncio.create_task(flight()) for _ in range(3)]
    await asyncio.sleep(0)
    assert flight.running
    callers[0].cancel()  # one caller gives up: the run goes on for the others
    with pytest.raises(asyncio.CancelledError):
        await callers[0]
    gate.set()
    await asyncio.gather(*callers[1:])
    assert (runs, flight.running, errors) == (1, False, [])
    with pytest.raises(RuntimeError, match="second run failed"):
        await flight()  # a new run (the first one ended)
    assert runs == 2 and [str(e) for e in errors] == ["second run failed"]
    gate.clear()
    task = flight.start()  # in the background, nobody waiting; stop() cancels it
    await asyncio.sleep(0)
    await flight.stop()
    assert runs == 3 and task.cancelled() and not flight.running
