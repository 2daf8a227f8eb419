"""Stopping a background task whose cancellation gets lost (as Python 3.11's ``wait_for``
loses one inside redis-py's send): ``cancel_and_wait`` cancels it again until it ends."""

from __future__ import annotations

import asyncio

import pytest

from ocs.tasks import cancel_and_wait


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
