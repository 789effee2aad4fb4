"""The admission limiter: slots run, a bounded queue waits, the rest get 503 with Retry-After."""

from __future__ import annotations

import anyio
import pytest

from app.kit.admission import Admission, Busy


def test_past_slots_and_queue_the_answer_is_busy_at_once() -> None:
    async def main() -> None:
        gate = Admission(what="test", slots=1, queue=1, wait_s=5)
        release = anyio.Event()
        order: list[str] = []

        async def hold(name: str) -> None:
            async with gate.slot():
                order.append(name)
                await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, "first")
            await anyio.sleep(0.05)
            tg.start_soon(hold, "queued")
            await anyio.sleep(0.05)
            assert (gate.running, gate.waiting) == (1, 1)
            with pytest.raises(Busy) as refused:
                async with gate.slot():
                    pass
            assert refused.value.status == 503 and int(refused.value.headers["Retry-After"]) >= 1
            release.set()
        assert order == ["first", "queued"]
        assert (gate.running, gate.waiting) == (0, 0)

    anyio.run(main)


def test_a_wait_longer_than_wait_s_is_busy_and_frees_its_place() -> None:
    async def main() -> None:
        gate = Admission(what="test", slots=1, queue=4, wait_s=0.1)
        await gate.acquire()
        with pytest.raises(Busy, match=r"no slot freed within 0\.1 s"):
            await gate.acquire()
        assert gate.waiting == 0
        gate.release()
        await gate.acquire()  # the slot is whole again
        gate.release()

    anyio.run(main)
