"""Environment steps/s with the logged agent turns as the policy, per customer simulator.

Each step parses the agent turn, runs its KB search, scores it with the run's real composite reward
and lets the customer answer. Stepping is done both one env at a time (``env.step``) and with B
envs in lockstep (one batched reward call per step), the way PPO rollouts run.

    .venv/bin/python bench/env_steps.py --run runs/quick [--steps 400] [--batch 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time


def _single(env, steps: int) -> float:
    done, seed, taken = True, 0, 0
    start = time.perf_counter()
    while taken < steps:
        if done:
            env.reset(seed=seed)
            seed += 1
        _, _, terminated, truncated, _ = env.step(env.unwrapped.logged_action() or "reply: ok")
        done = terminated or truncated
        taken += 1
    return taken / (time.perf_counter() - start)


def _lockstep(envs, steps: int) -> float:
    taken, seed = 0, 0
    start = time.perf_counter()
    while taken < steps:
        envs.reset(seeds=list(range(seed, seed + len(envs))))
        seed += len(envs)
        while any(envs.active) and taken < steps:
            actions = {i: envs.bare[i].logged_action() or "reply: ok" for i in range(len(envs)) if envs.active[i]}
            taken += len(envs.step(actions))
    return taken / (time.perf_counter() - start)


def main() -> None:
    """Time both simulators, single and lockstep; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run folder")
    parser.add_argument("--steps", type=int, default=400, help="steps timed per measurement")
    parser.add_argument("--batch", type=int, default=16, help="envs in lockstep")
    args = parser.parse_args()

    from csrl.dialogue.pipeline.runs import open_run
    from csrl.dialogue.pipeline.training import make_envs

    run = open_run(args.run)
    conversations = run.corpus.split("test")
    results = {"run": args.run, "steps": args.steps, "batch": args.batch}
    for simulator in ("replay", "reactive"):
        config = dataclasses.replace(run.config.env, simulator=simulator)
        one = make_envs(conversations, run.stack, config, 1, 20)
        _single(one.envs[0], 20)  # warm-up
        many = make_envs(conversations, run.stack, config, args.batch, 20)
        results[simulator] = {
            "single_steps_per_s": round(_single(one.envs[0], args.steps), 1),
            "lockstep_steps_per_s": round(_lockstep(many, args.steps), 1),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
