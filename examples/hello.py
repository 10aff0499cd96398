"""A small asyncio program: concurrent tasks, a timeout, a queue and a thread.

Run it on ferroloop with `python -m ferroloop examples/hello.py` (or `make example`).
"""

import asyncio
import time


async def worker(name: str, queue: asyncio.Queue[int], results: list[str]) -> None:
    while True:
        n = await queue.get()
        await asyncio.sleep(n / 1000)
        results.append(f"{name} slept {n} ms")
        queue.task_done()


async def main() -> None:
    loop = asyncio.get_running_loop()
    print(f"running on {type(loop).__module__}.{type(loop).__name__}")

    queue: asyncio.Queue[int] = asyncio.Queue()
    results: list[str] = []
    for n in (30, 10, 20, 5):
        queue.put_nowait(n)
    async with asyncio.TaskGroup() as tg:
        workers = [tg.create_task(worker(f"worker-{i}", queue, results)) for i in range(2)]
        await queue.join()
        for w in workers:
            w.cancel()
    print("\n".join(results))

    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(10)
    except TimeoutError:
        print("a 10 s sleep was cut short by a 50 ms timeout")

    started = time.monotonic()
    total = await asyncio.to_thread(sum, range(1_000_000))
    print(f"sum computed in a thread: {total} ({time.monotonic() - started:.3f} s)")


if __name__ == "__main__":
    asyncio.run(main())
