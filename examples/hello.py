"""A small asyncio program: concurrent tasks, a timeout, a queue, a thread, a TCP echo server and
a subprocess.

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


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


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

    async with await asyncio.start_server(echo, "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"hello over tcp\n")
        print("echo server answered:", (await reader.readline()).decode().strip())
        writer.close()
        await writer.wait_closed()

    proc = await asyncio.create_subprocess_exec("echo", "hello from a child", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    print(f"subprocess said {out.decode().strip()!r} and exited with {proc.returncode}")


if __name__ == "__main__":
    asyncio.run(main())
