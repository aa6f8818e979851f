"""Load test of ``csrl serve``: N concurrent clients for S seconds against the real server on loopback.

The server runs in its own process (``csrl serve``); the clients are asyncio tasks sending one
held-out STAR turn each per request (a real customer history and the logged reply, optionally with
the logged knowledge). Prints one JSON object: requests/s, turns/s, p50/p99 latency, errors.

    .venv/bin/python bench/serve_load.py --run runs/quick --clients 16 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _requests(run: str, count: int, seed: int) -> list[dict]:
    """Request bodies made from held-out logged turns of the run's data."""
    from csrl.dialogue.pipeline.runs import open_run
    from csrl.rewards.context import contexts_from_conversation

    contexts = [ctx for c in open_run(run).corpus.split("test") for ctx in contexts_from_conversation(c)]
    random.Random(seed).shuffle(contexts)
    bodies = []
    for ctx in contexts:
        history = [{"role": t.role, "text": t.text} for t in ctx.history if t.role in ("customer", "agent") and t.text]
        if not any(m["role"] == "customer" for m in history) or not ctx.reply.strip():
            continue
        turn = {"history": history[-8:], "reply": ctx.reply, "intent": ctx.declared_intent}
        if ctx.knowledge:
            turn["knowledge"] = [d.id for d in ctx.knowledge]
        bodies.append({"turns": [turn]})
        if len(bodies) == count:
            break
    return bodies


async def _client(url: str, bodies: list[dict], deadline: float, latencies: list[float], errors: list[str], k: int):
    async with httpx.AsyncClient(timeout=30) as client:
        i = k
        while time.perf_counter() < deadline:
            body = bodies[i % len(bodies)]
            i += 16
            start = time.perf_counter()
            try:
                response = await client.post(url, json=body)
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                    continue
            except httpx.HTTPError as err:
                errors.append(repr(err))
                continue
            latencies.append(time.perf_counter() - start)


async def _load(url: str, bodies: list[dict], clients: int, seconds: float) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(_client(url, bodies, deadline, latencies, errors, k) for k in range(clients)))
    return latencies, errors, time.perf_counter() - start


def main() -> None:
    """Start the server, warm it up, load it, print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run folder")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    bodies = _requests(args.run, 2000, args.seed)
    port = _free_port()
    csrl = Path(sys.executable).with_name("csrl")
    server = subprocess.Popen(
        [str(csrl), "serve", "--run", args.run, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"server did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
        asyncio.run(_load(f"{base}/v1/score", bodies[:200], 4, 5.0))  # warm-up: caches and allocator
        latencies, errors, wall = asyncio.run(_load(f"{base}/v1/score", bodies, args.clients, args.seconds))
        health = httpx.get(f"{base}/healthz", timeout=5).json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    lat = np.array(latencies) * 1000
    print(
        json.dumps(
            {
                "clients": args.clients,
                "seconds": round(wall, 1),
                "requests": len(latencies),
                "requests_per_s": round(len(latencies) / wall, 1),
                "turns_per_s": round(len(latencies) / wall, 1),  # one turn per request
                "latency_ms": {q: round(float(np.percentile(lat, int(q[1:]))), 1) for q in ("p50", "p99")}
                if len(lat)
                else None,
                "errors": len(errors),
                "first_errors": errors[:3],
                "server": health,
            }
        )
    )


if __name__ == "__main__":
    main()
