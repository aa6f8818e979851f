"""Load test of ``csrl serve``: N concurrent clients for S seconds against the real server on loopback.

The server runs in its own process (``csrl serve``); the clients are asyncio tasks sending one held-out
logged moment each per request: to ``/v1/score`` a real customer history and the logged reply (with the logged
knowledge), to ``/v1/reply`` the same history for the policy to answer. Each endpoint is loaded in turn against
the same server, so their figures sit side by side. Prints one JSON object: per endpoint requests/s, turns/s,
p50/p99 latency, errors.

    .venv/bin/python bench/serve_load.py --run runs/quick --clients 16 --seconds 60 [--endpoints score,reply]
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


def _requests(run: str, count: int, seed: int, decoding: dict) -> dict[str, list[dict]]:
    """Request bodies of each endpoint made from held-out logged turns of the run's data."""
    from csrl.dialogue.pipeline.runs import open_run
    from csrl.rewards.context import contexts_from_conversation

    contexts = [ctx for c in open_run(run).corpus.split("test") for ctx in contexts_from_conversation(c)]
    random.Random(seed).shuffle(contexts)
    bodies = {"score": [], "reply": []}
    for ctx in contexts:
        history = [{"role": t.role, "text": t.text} for t in ctx.history if t.role in ("customer", "agent") and t.text]
        if not any(m["role"] == "customer" for m in history) or not ctx.reply.strip():
            continue
        turn = {"history": history[-8:], "reply": ctx.reply, "intent": ctx.declared_intent}
        if ctx.knowledge:
            turn["knowledge"] = [d.id for d in ctx.knowledge]
        bodies["score"].append({"turns": [turn]})
        bodies["reply"].append({"dialogues": [{"history": history[-8:]}], "decoding": decoding})
        if len(bodies["score"]) == count:
            break
    return bodies


async def _client(url: str, bodies: list[dict], deadline: float, latencies: list[float], errors: list[str], k: int):
    async with httpx.AsyncClient(timeout=300) as client:
        i = k
        while time.perf_counter() < deadline:
            body = bodies[i % len(bodies)]
            i += 101  # clients walk the bodies apart
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
    parser.add_argument("--endpoints", default="score,reply", help="comma-separated: score, reply")
    parser.add_argument("--decoding", default="greedy", help="the /v1/reply requests' decoding method")
    parser.add_argument("--n", type=int, default=4, help="best_of_n / beam: n")
    args = parser.parse_args()

    endpoints = args.endpoints.split(",")
    bodies = _requests(args.run, 2000, args.seed, {"method": args.decoding, "n": args.n})
    policy = "ppo" if "reply" in endpoints else "none"
    port = _free_port()
    csrl = Path(sys.executable).with_name("csrl")
    server = subprocess.Popen(
        [str(csrl), "serve", "--run", args.run, "--port", str(port), "--policy", policy],
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
        report = {"clients": args.clients, "decoding": {"method": args.decoding, "n": args.n}}
        for endpoint in endpoints:
            url = f"{base}/v1/{endpoint}"
            asyncio.run(_load(url, bodies[endpoint][:200], 4, 5.0))  # warm-up: caches and allocator
            latencies, errors, wall = asyncio.run(_load(url, bodies[endpoint], args.clients, args.seconds))
            report[endpoint] = _summary(latencies, errors, wall)
        report["server"] = httpx.get(f"{base}/healthz", timeout=5).json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(report))


def _summary(latencies: list[float], errors: list[str], wall: float) -> dict:
    lat = np.array(latencies) * 1000
    quantiles = {q: round(float(np.percentile(lat, int(q[1:]))), 1) for q in ("p50", "p99")} if len(lat) else None
    return {
        "seconds": round(wall, 1),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 2),
        "turns_per_s": round(len(latencies) / wall, 2),  # one turn per request
        "latency_ms": quantiles,
        "errors": len(errors),
        "first_errors": errors[:3],
    }


if __name__ == "__main__":
    main()
