"""Scoring speed of a run's composite reward on CPU: batched turns/s and single-turn latency.

Turns are held-out logged agent turns of the run's data (real histories, replies and knowledge).
The encoder's cache is cleared before every timed pass, so each pass pays for its embeddings as a
live server would for new text (the KB embeddings stay precomputed, as in serving).

Every pass runs in float32 and, where the hardware computes it natively, in bfloat16 (what
``encoder_precision="auto"`` picks); the JSON gives both, their ratio and how far the rewards moved.

    .venv/bin/python bench/score_speed.py --run runs/quick [--turns 512] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def time_scoring(stack, chosen, batch: int, single: int) -> tuple[dict, np.ndarray]:
    """One batched pass and ``single`` one-turn calls, cold cache each; returns the timings and the rewards."""
    stack.encoder.clear_cache()
    rewards = []
    start = time.perf_counter()
    for i in range(0, len(chosen), batch):
        rewards.extend(r.total for r in stack.reward.score(chosen[i : i + batch]))
    batched_s = time.perf_counter() - start

    stack.encoder.clear_cache()
    latencies = []
    for ctx in chosen[:single]:
        start = time.perf_counter()
        stack.reward.score([ctx])
        latencies.append(time.perf_counter() - start)
    lat = np.array(latencies) * 1000
    timings = {
        "batched_turns_per_s": round(len(chosen) / batched_s, 1),
        "single_turn_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p99": round(float(np.percentile(lat, 99)), 1),
        },
        "single_turns_per_s": round(len(lat) / (lat.sum() / 1000), 1),
    }
    return timings, np.array(rewards)


def main() -> None:
    """Time batched and single-turn scoring in each precision; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run folder")
    parser.add_argument("--turns", type=int, default=512, help="turns scored in the batched pass")
    parser.add_argument("--batch", type=int, default=64, help="turns per reward call in the batched pass")
    parser.add_argument("--single", type=int, default=100, help="single-turn calls timed for latency")
    args = parser.parse_args()

    from csrl.dialogue.pipeline.runs import open_run
    from csrl.rewards.context import contexts_from_conversation
    from csrl.rewards.encoder import resolve_precision

    run = open_run(args.run)
    stack = run.stack
    contexts = [ctx for c in run.corpus.split("test") for ctx in contexts_from_conversation(c) if ctx.reply.strip()]
    rng = np.random.default_rng(0)
    chosen = [contexts[i] for i in rng.choice(len(contexts), size=min(args.turns, len(contexts)), replace=False)]
    stack.reward.score(chosen[:16])  # warm-up: lazy initialisation, allocator

    precisions = dict.fromkeys(["float32", resolve_precision("auto", stack.encoder.device)])
    result = {"run": args.run, "torch_threads": torch.get_num_threads(), "turns": len(chosen), "batch": args.batch}
    rewards = {}
    for precision in precisions:
        stack.encoder.precision = precision
        result[precision], rewards[precision] = time_scoring(stack, chosen, args.batch, args.single)
    if "bfloat16" in rewards:
        result["bfloat16_speedup"] = round(
            result["bfloat16"]["batched_turns_per_s"] / result["float32"]["batched_turns_per_s"], 2
        )
        drift = np.abs(rewards["bfloat16"] - rewards["float32"])
        result["bfloat16_reward_abs_diff"] = {
            "mean": round(float(drift.mean()), 5),
            "max": round(float(drift.max()), 5),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
