"""Test-time search on held-out moments: reward per turn and latency of greedy, best-of-N and the step beam.

Each held-out test conversation gives one moment: a logged agent turn drawn at random, its history the logged
dialogue before it (lookups kept as the environment keeps them: the last one before each agent turn). Every
method answers every moment; the chosen turn is then scored with the moment's gold intent, as ``csrl eval``
scores turns (the verifier that chose it never saw the gold intent). Differences are paired against greedy.

Measures the search does not optimise, so a verifier hack shows: ``intent_match`` (declared == gold),
``human_similarity`` (cosine of the reply and the logged human reply, the run's encoder), reply words, search rate.

    .venv/bin/python bench/test_time_search.py --run runs/pretrained [--conversations 200] [--batch 8]

A long table can be built in parts: ``--skip 100 --merge first.json`` answers moments 100.. only and folds in
the episodes an earlier ``--out first.json`` run wrote for the moments before (same run, seed and moments drawn).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

from csrl.dialogue.evaluation.report import paired_difference, summarize
from csrl.dialogue.pipeline.runs import open_run
from csrl.dialogue.serving.reply import Decoding
from csrl.env.simulators import conversation_slots

METHODS = {
    "greedy": Decoding("greedy"),
    "best_of_4": Decoding("best_of_n", n=4),
    "best_of_8": Decoding("best_of_n", n=8),
    "step_beam": Decoding("beam", n=4, beam_width=2),
}


def moments(conversations, count: int, seed: int) -> list[dict]:
    """One random logged agent turn of each of the first ``count`` conversations: history, gold intent, reply."""
    rng = np.random.default_rng(seed)
    found = []
    for conversation in conversations:
        slots = conversation_slots(conversation)
        if not slots:
            continue
        slot = slots[int(rng.integers(len(slots)))]
        history, lookup = [], None
        for turn in conversation.turns[: slot.agent_turn_index]:
            if turn.role == "tool":
                lookup = turn
                continue
            if turn.role == "agent" and lookup is not None:
                history.append(lookup)
            lookup = None if turn.role == "agent" else lookup
            history.append(turn)
        found.append(dict(conversation_id=conversation.id, history=tuple(history), intent=slot.intent,
                          human=slot.reply))  # fmt: skip
        if len(found) == count:
            break
    return found


def run_method(replier, chosen: list[dict], decoding: Decoding, batch: int, first: int = 0) -> list[dict]:
    """Answer every moment with ``decoding``: one single-turn episode each, with its batch's latency per turn.

    ``first`` is the index of ``chosen[0]`` among all moments drawn, so a run in parts seeds each batch as a
    whole run would."""
    episodes = []
    for start in range(0, len(chosen), batch):
        part = chosen[start : start + batch]
        began = time.perf_counter()
        turns = replier.reply([m["history"] for m in part], dataclasses.replace(decoding, seed=first + start))
        latency = (time.perf_counter() - began) / len(part)
        contexts = [
            dataclasses.replace(
                replier.context(m["history"], replier.parse(t.text), t.documents), gold_intent=m["intent"]
            )
            for m, t in zip(part, turns, strict=True)
        ]
        for m, t, b in zip(part, turns, replier.reward.score(contexts), strict=True):
            episodes.append(dict(conversation_id=m["conversation_id"], intent=m["intent"], human=m["human"],
                                 turns=[dict(reward=b.total, verifier=t.reward.total, intent=t.intent,
                                             search=t.search, reply=t.reply, candidates=t.candidates,
                                             latency_s=latency)]))  # fmt: skip
        print(f"  {start + len(part)}/{len(chosen)}", file=sys.stderr, flush=True)
    return episodes


def method_summary(encoder, episodes: list[dict]) -> dict:
    """Reward with its CI, latency (p50 over the turns this run timed) and the measures the search does not optimise."""
    turns = [e["turns"][0] for e in episodes]
    timed = [t["latency_s"] for t in turns if "latency_s" in t]
    replies = encoder.encode([t["reply"] or " " for t in turns])
    humans = encoder.encode([e["human"] for e in episodes])
    similarity = np.sum(replies * humans, axis=1) / (
        np.linalg.norm(replies, axis=1) * np.linalg.norm(humans, axis=1) + 1e-9
    )
    return {
        **summarize(episodes),
        "verifier_reward": round(float(np.mean([t["verifier"] for t in turns])), 4),
        "p50_latency_s_per_turn": round(float(np.median(timed)), 3) if timed else None,
        "latency_turns_timed": len(timed),
        "candidates_per_turn": round(float(np.mean([t["candidates"] for t in turns])), 2),
        "intent_match": round(
            float(np.mean([t["intent"] == e["intent"] for t, e in zip(turns, episodes, strict=True)])), 4
        ),
        "human_similarity": round(float(np.mean(similarity)), 4),
        "reply_words": round(float(np.mean([len(t["reply"].split()) for t in turns])), 2),
        "search_rate": round(float(np.mean([bool(t["search"]) for t in turns])), 4),
    }


def earlier_episodes(paths: list[str], run: str, chosen: list[dict]) -> dict[str, list[dict]]:
    """The episodes earlier ``--out`` files hold for the moments before ``--skip``, checked to be those moments."""
    merged: dict[str, list[dict]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
        if earlier["run"] != run:
            raise SystemExit(f"{path}: answered run {earlier['run']}, not {run}")
        for key, episodes in earlier["episodes"].items():
            if [e["conversation_id"] for e in episodes[: len(chosen)]] != [m["conversation_id"] for m in chosen]:
                raise SystemExit(f"{path}: {key} did not answer the first {len(chosen)} moments drawn")
            merged.setdefault(key, episodes[: len(chosen)])
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument(
        "--policies", default="sft,ppo", help="comma-separated: greedy rows for each, search on the last"
    )
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated of {', '.join(METHODS)}")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the transcripts and summary JSON here")
    parser.add_argument("--skip", type=int, default=0, help="answer only the moments from this index on")
    parser.add_argument("--merge", nargs="*", default=[], help="--out files holding the skipped moments' episodes")
    args = parser.parse_args()
    run = open_run(args.run)
    chosen = moments(run.corpus.split("test"), args.conversations, args.seed)
    earlier = earlier_episodes(args.merge, str(run.path), chosen[: args.skip])
    policies = args.policies.split(",")
    episodes = {}
    for policy in policies:
        replier = run.replier(policy)
        methods = args.methods.split(",") if policy == policies[-1] else ["greedy"]
        for name in methods:
            key = f"{policy}.{name}"
            if args.skip and key not in earlier:
                raise SystemExit(f"--skip {args.skip}: no --merge file answered {key} for the skipped moments")
            print(key, file=sys.stderr, flush=True)
            answered = run_method(replier, chosen[args.skip :], METHODS[name], args.batch, first=args.skip)
            episodes[key] = earlier.get(key, []) + answered
    rows = {key: method_summary(run.stack.encoder, answered) for key, answered in episodes.items()}
    baseline = f"{policies[-1]}.greedy"
    for key in rows:
        if key != baseline and baseline in episodes:
            rows[key]["minus_greedy"] = paired_difference(episodes[key], episodes[baseline])
    report = {"run": str(run.path), "moments": len(chosen), "rows": rows}
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({**report, "episodes": episodes}, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
