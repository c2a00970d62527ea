"""The door's group commit: how commands without an Idempotency-Key become batches.

The database is replaced by a gate the test opens, so what matters here (which commands
travel together, and how many batches are written at once) is seen without timing.
"""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

from jobs.clock import Clock
from web import commands
from web.commands import JobGateway


class GatedDb:
    """Stands in for ``DbExecutor``: each batch written is held until ``release``
    (the ``sent`` marks pass at once)."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.gates: list[asyncio.Event] = []

    async def __call__(self, fn, rows):
        if fn.__name__ != "_record_and_send_many":
            return 0
        gate = asyncio.Event()
        self.batches.append(rows)
        self.gates.append(gate)
        await gate.wait()
        return [SimpleNamespace(id=job_id, error=None) for job_id, *_ in rows]

    def writing(self) -> int:
        return sum(not gate.is_set() for gate in self.gates)

    def release(self, n: int) -> None:
        self.gates[n].set()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def sizes(db: GatedDb) -> list[int]:
    return [len(batch) for batch in db.batches]


def test_commands_arriving_while_a_batch_is_written_go_together_in_the_next():
    async def scenario() -> None:
        db = GatedDb()
        gateway = JobGateway(db, broker=None, client=None, hub=None, prefix="t", clock=Clock())
        await gateway.start()
        submit = [asyncio.create_task(gateway._submit_batched(uuid.uuid4(), 1, "points.charge",
                                                              {"amount": 1}, None))]
        await settle()
        # Given one command being written, When a few more arrive one by one
        for _ in range(commands.PARALLEL_BATCH - 1):
            submit.append(asyncio.create_task(gateway._submit_batched(
                uuid.uuid4(), 1, "points.charge", {"amount": 1}, None)))
            await settle()
        # Then they wait for it rather than each being written on its own
        assert sizes(db) == [1] and db.writing() == 1
        # ... and once it is written, they go as one batch
        db.release(0)
        await settle()
        assert sizes(db) == [1, commands.PARALLEL_BATCH - 1]
        db.release(1)
        jobs = await asyncio.gather(*submit)
        assert len({job.id for job in jobs}) == commands.PARALLEL_BATCH
        await gateway.stop()

    asyncio.run(scenario())


def test_under_load_batches_are_written_side_by_side_up_to_the_limit():
    async def scenario() -> None:
        db = GatedDb()
        gateway = JobGateway(db, broker=None, client=None, hub=None, prefix="t", clock=Clock())
        await gateway.start()

        async def arrive(n: int) -> list:
            tasks = [asyncio.create_task(gateway._submit_batched(
                uuid.uuid4(), 1, "points.charge", {"amount": 1}, None)) for _ in range(n)]
            await settle()
            return tasks

        first = await arrive(1)
        # Given one batch being written, When enough commands for a batch arrive each time
        rest = []
        for _ in range(commands.BATCHES_IN_FLIGHT + 1):
            rest += await arrive(commands.PARALLEL_BATCH)
        # Then batches are written alongside it, up to the limit, and the rest waits
        assert db.writing() == commands.BATCHES_IN_FLIGHT
        assert sizes(db) == [1] + [commands.PARALLEL_BATCH] * (commands.BATCHES_IN_FLIGHT - 1)
        # When one is written, Then what waited goes out as one batch
        db.release(0)
        await settle()
        assert sizes(db)[-1] == commands.PARALLEL_BATCH * 2
        for n in range(len(db.gates)):
            db.release(n)
        jobs = await asyncio.gather(*first, *rest)
        assert len({job.id for job in jobs}) == len(jobs) == sum(sizes(db))
        await gateway.stop()

    asyncio.run(scenario())
