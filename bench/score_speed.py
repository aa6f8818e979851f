"""Scoring speed of a run's composite reward on CPU: batched turns/s and single-turn latency, in two orders.

Turns are held-out logged agent turns of the run's data (real histories, replies and knowledge). The encoder's
cache is cleared before every timed pass, so each pass pays for its embeddings as a live server would for new
text (the KB embeddings stay precomputed, as in serving). Two orders:

- ``random``: turns drawn from random conversations, so nothing one turn embeds helps another (the worst case);
- ``dialogue``: whole held-out conversations, each turn scored after the turns before it, ``--batch``
  conversations in lockstep (how rollouts, evaluation, ``csrl score`` of a log file and a server following live
  chats score): a turn's texts that an earlier turn embedded (the previous reply; with
  ``need_embedding="messages"`` every earlier customer message) come from the cache.

Every pass runs in float32 and, where the hardware computes it natively, in bfloat16 (what
``encoder_precision="auto"`` picks). ``--baseline`` names another reward folder trained on the same logs (e.g. one
with the other ``need_embedding``): it is timed the same way in the same process, both score every held-out turn,
and the JSON gives the speed ratio and how far the rewards moved. Throughput is the best of ``--repeats`` passes
(the median beside it): this VM's passes vary by up to ±15%.

    .venv/bin/python bench/score_speed.py --run runs/quick [--rewards FOLDER] [--baseline FOLDER]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def timed_batches(stack, batches: list[list]) -> tuple[float, list[float]]:
    """Score ``batches`` in order from a cold cache; returns (seconds, rewards in order).

    An untimed pass over the same batches runs first: the CPU kernels are built for each new input shape once in
    a process's life (a server's or a training run's steady state has them); then the embedding cache is emptied.
    """
    for batch in batches:
        stack.reward.score(batch)
    stack.encoder.clear_cache()
    rewards = []
    start = time.perf_counter()
    for batch in batches:
        rewards.extend(r.total for r in stack.reward.score(batch))
    return time.perf_counter() - start, rewards


def single_latencies(stack, turns: list) -> dict:
    """One call per turn, in the given order, from a cold cache (after an untimed pass): p50 / p99 ms."""
    for ctx in turns:
        stack.reward.score([ctx])
    stack.encoder.clear_cache()
    latencies = []
    for ctx in turns:
        start = time.perf_counter()
        stack.reward.score([ctx])
        latencies.append(time.perf_counter() - start)
    ms = np.array(latencies) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 1), "p99": round(float(np.percentile(ms, 99)), 1)}


def lockstep(dialogues: list[list], width: int) -> list[list]:
    """Batches of ``width`` dialogues in lockstep: turn t of each, then turn t + 1 of each, ..."""
    batches = []
    for i in range(0, len(dialogues), width):
        group = dialogues[i : i + width]
        for t in range(max(len(d) for d in group)):
            batches.append([d[t] for d in group if t < len(d)])
    return batches


def time_stack(stack, orders: dict, repeats: int) -> dict:
    """Batched turns/s (best and median of ``repeats`` passes) and single-turn latency, per precision and order."""
    from csrl.rewards.encoder import resolve_precision

    timings, rewards = {}, {}
    for precision in dict.fromkeys(["float32", resolve_precision("auto", stack.encoder.device)]):
        stack.encoder.precision = precision
        timings[precision] = {}
        for order, (batches, singles) in orders.items():
            passes = [timed_batches(stack, batches) for _ in range(repeats)]
            rates = sorted(len(scored) / seconds for seconds, scored in passes)
            rewards[precision, order] = np.array(passes[0][1])
            timings[precision][order] = {
                "batched_turns_per_s": round(rates[-1], 1),
                "median_turns_per_s": round(float(np.median(rates)), 1),
                "single_turn_ms": single_latencies(stack, singles),
            }
    if ("bfloat16", "random") in rewards:
        moved = np.abs(rewards["bfloat16", "random"] - rewards["float32", "random"])
        timings["bfloat16_reward_abs_diff"] = {
            "mean": round(float(moved.mean()), 5),
            "max": round(float(moved.max()), 5),
        }
    return timings


def breakdowns(stack, batches: list[list]) -> dict[str, np.ndarray]:
    """The total and each weighted component of every turn of ``batches``, in order."""
    scored = [r for batch in batches for r in stack.reward.score(batch)]
    parts = {name: np.array([r.weighted[name] for r in scored]) for name in scored[0].weighted}
    return {"total": np.array([r.total for r in scored])} | {k: v for k, v in parts.items() if v.any()}


def drift(rewards: np.ndarray, baseline: np.ndarray) -> dict:
    """How far ``rewards`` moved from ``baseline`` on the same turns."""
    difference = rewards - baseline
    return {
        "mean_reward": round(float(rewards.mean()), 4),
        "baseline_mean_reward": round(float(baseline.mean()), 4),
        "mean_difference": round(float(difference.mean()), 4),
        "mean_abs_difference": round(float(np.abs(difference).mean()), 4),
        "p95_abs_difference": round(float(np.percentile(np.abs(difference), 95)), 4),
        "pearson_r": round(float(np.corrcoef(rewards, baseline)[0, 1]), 4),
    }


def main() -> None:
    """Time both orders in each precision (and compare with ``--baseline``); print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run folder (its held-out conversations)")
    parser.add_argument("--rewards", help="the reward folder to time (default: the run's rewards/)")
    parser.add_argument("--baseline", help="another reward folder on the same logs: report the reward drift")
    parser.add_argument("--turns", type=int, default=512, help="turns scored in each batched pass")
    parser.add_argument("--batch", type=int, default=64, help="turns (random) or dialogues (dialogue) per call")
    parser.add_argument("--single", type=int, default=100, help="single-turn calls timed for latency")
    parser.add_argument("--repeats", type=int, default=3, help="timed batched passes (the best is reported)")
    args = parser.parse_args()

    from csrl.dialogue.pipeline.runs import open_run
    from csrl.rewards.context import contexts_from_conversation
    from csrl.rewards.encoder import resolve_precision
    from csrl.rewards.stack import load_reward_stack

    run = open_run(args.run)
    stack = load_reward_stack(args.rewards) if args.rewards else run.stack
    dialogues = [[x for x in contexts_from_conversation(c) if x.reply.strip()] for c in run.corpus.split("test")]
    dialogues = [d for d in dialogues if d]
    flat = [ctx for d in dialogues for ctx in d]
    rng = np.random.default_rng(0)
    chosen = [flat[i] for i in rng.choice(len(flat), size=min(args.turns, len(flat)), replace=False)]
    in_order, count = [], 0
    for d in dialogues:  # whole dialogues, until they hold --turns turns
        if count >= args.turns:
            break
        in_order.append(d)
        count += len(d)
    orders = {
        "random": ([chosen[i : i + args.batch] for i in range(0, len(chosen), args.batch)], chosen[: args.single]),
        "dialogue": (lockstep(in_order, args.batch), [ctx for d in in_order for ctx in d][: args.single]),
    }
    result = {
        "run": args.run,
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch,
        "repeats": args.repeats,
        "turns": {"random": len(chosen), "dialogue": count},
    }
    stacks = {args.rewards or f"{args.run}/rewards": stack}
    if args.baseline:
        stacks[args.baseline] = load_reward_stack(args.baseline)
    for name, timed in stacks.items():
        result[name] = {"need_embedding": timed.config.need_embedding} | time_stack(timed, orders, args.repeats)
        print(json.dumps({name: result[name]}), file=sys.stderr, flush=True)  # progress
    if args.baseline:
        auto = resolve_precision("auto", stack.encoder.device)
        ours, theirs = stack, stacks[args.baseline]
        result["bfloat16_speedup_over_baseline"] = {
            order: round(result[args.rewards or f"{args.run}/rewards"][auto][order]["batched_turns_per_s"]
                         / result[args.baseline][auto][order]["batched_turns_per_s"], 2)
            for order in orders
        }  # fmt: skip
        every_turn = lockstep(dialogues, args.batch)  # all held-out turns
        ours.encoder.precision = theirs.encoder.precision = auto
        ours, theirs = breakdowns(ours, every_turn), breakdowns(theirs, every_turn)
        result["drift_from_baseline"] = {
            "turns": len(ours["total"]),
            **{name: drift(ours[name], theirs[name]) for name in ours if name in theirs},
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
