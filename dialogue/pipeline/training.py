"""``csrl train``: logs → reward models → tokenizer + SFT policy → PPO, each stage cached in ``runs/NAME/``.

The stages, in order (a finished stage leaves a ``DONE`` marker and is loaded, not redone):

1. ``rewards/``: what the logs lack, inferred (intents, a knowledge base: :mod:`csrl.dialogue.pipeline.inference`),
   then the KB index, the intent and satisfaction classifiers and their held-out metrics (:mod:`csrl.rewards.stack`);
2. ``sft/``: a byte-level BPE tokenizer trained on the logs and the policy fine-tuned on the logged
   agent turns written as processes (TRL ``SFTTrainer``);
3. ``ppo/``: the project's PPO against the conversation environment (:mod:`csrl.dialogue.trainer.ppo_trainer`),
   checkpointed every iteration, so ``--resume`` continues a killed run.

Launched as several processes (``torchrun``, ``accelerate launch``: :mod:`csrl.dialogue.trainer.processes`), the
main process builds the reward stage while the others wait and then load it; SFT and PPO are data parallel; the
main process writes the folder and prints.

The run's settings are a :class:`~csrl.dialogue.pipeline.config.TrainConfig` (:mod:`csrl.dialogue.pipeline.config`),
sized by a preset (:mod:`csrl.dialogue.pipeline.presets`); ``config.json`` in the run folder records it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from csrl.data import Conversation, Corpus, load_corpus
from csrl.data.files import is_done, mark_done
from csrl.dialogue.pipeline.config import (
    CONFIG_FILE,
    DataConfig,
    TrainConfig,
    load_config,
    resume_differences,
    save_config,
)
from csrl.dialogue.trainer import processes
from csrl.env import EnvConfig

# -- data ------------------------------------------------------------------------------------------


def subset_corpus(corpus: Corpus, max_intents: int | None, max_conversations: int | None) -> Corpus:
    """Keep the most frequent intents' conversations (and their KB documents), at most ``max_conversations`` a split.

    Used by small presets: the debug run must embed a few hundred KB documents, not thousands. Logs
    without intent labels have nothing to choose intents by: only ``max_conversations`` cuts them, and
    their knowledge base is kept whole (a user's KB has no intents to match either).
    """
    conversations = corpus.conversations
    knowledge_base = corpus.knowledge_base
    counts: dict[str, int] = {}
    for c in conversations:
        if c.intent:
            counts[c.intent] = counts.get(c.intent, 0) + 1
    by_intent = max_intents is not None and bool(counts)
    if by_intent:
        keep = set(sorted(counts, key=lambda k: (-counts[k], k))[:max_intents])
        conversations = [c for c in conversations if c.intent in keep and _single_intent(c)]
    if max_conversations is not None:
        taken: dict[str, int] = {}
        kept = []
        for c in conversations:
            if taken.get(c.split or "", 0) < max_conversations:
                taken[c.split or ""] = taken.get(c.split or "", 0) + 1
                kept.append(c)
        conversations = kept
    if counts and (by_intent or max_conversations is not None):
        intents = {c.intent for c in conversations}
        in_logs = {d.id for c in conversations for t in c.turns for d in t.results}
        knowledge_base = [d for d in knowledge_base if d.id in in_logs or (d.intent and d.intent in intents)]
    return Corpus(conversations=conversations, knowledge_base=knowledge_base, report=corpus.report)


def _single_intent(conversation: Conversation) -> bool:
    return all(t.intent in (None, conversation.intent) for t in conversation.turns)


def kb_source(config: DataConfig) -> str:
    """Where the run's knowledge base comes from, in words (for ``inferred.json``)."""
    if config.kb:
        return f"--kb {config.kb}"
    return "STAR's knowledge base" if config.source == "star" else "the documents the logs' tool turns returned"


def load_training_corpus(config: DataConfig) -> Corpus:
    """The logs and KB of a run, cut to the run's size."""
    corpus = load_corpus(config.source, config.kb, seed=config.seed, mapping=config.column_mapping())
    return subset_corpus(corpus, config.max_intents, config.max_conversations)


# -- stages ----------------------------------------------------------------------------------------


def sft_stage(corpus: Corpus, folder: Path, config: TrainConfig, retriever=None, intents=(), log=print):
    """Train the tokenizer and fine-tune the policy on the logged agent turns (cached in ``folder``).

    The policy keeps ``intents`` (the reward's) as the names it may declare (``PolicyConfig.constrain_intent``).

    Logs without logged lookups get ``search:`` steps where the KB supports an answer (``config.sft.search_steps``,
    needs the reward stack's ``retriever``; see :mod:`csrl.dialogue.trainer.search_steps`).
    """
    from csrl.dialogue.models.policy import ActorCritic
    from csrl.dialogue.models.prompts import corpus_to_examples
    from csrl.dialogue.models.tokenizer import train_tokenizer_on_corpus
    from csrl.dialogue.trainer.search_steps import with_search_steps
    from csrl.dialogue.trainer.sft import run_sft

    if is_done(folder):
        log(f"sft: cached in {folder}")
        return ActorCritic.load(folder, log=log)
    train = corpus.split("train")
    started = time.perf_counter()
    if config.policy.from_scratch:  # one tokenizer for every process
        tokenizer = processes.from_main(
            lambda: train_tokenizer_on_corpus(
                train, vocab_size=config.policy.vocab_size, model_max_length=config.policy.n_positions
            )
        )
        policy = ActorCritic.from_config(tokenizer, config.policy)
    else:
        policy = ActorCritic.from_pretrained(config.policy.model, dtype=config.policy.dtype, log=log)
        if config.policy.uses_lora:
            policy.add_adapter(config.policy.lora_r, config.policy.lora_alpha)
        trainable = sum(p.numel() for p in policy.lm.parameters() if p.requires_grad)
        log(
            f"sft: {config.policy.model} ({sum(p.numel() for p in policy.lm.parameters()) / 1e6:.1f}M parameters, "
            f"{str(next(policy.lm.parameters()).dtype).removeprefix('torch.')}), {trainable / 1e6:.2f}M trained"
            + (f" (LoRA r={config.policy.lora_r})" if config.policy.uses_lora else "")
        )
    used = min(len(train), config.sft.max_conversations or len(train))
    conversations, steps = train[:used], None
    logged_lookups = any(turn.role == "tool" for conversation in train for turn in conversation.turns)
    if config.sft.search_steps and retriever is not None and not logged_lookups:
        conversations, steps = with_search_steps(conversations, retriever, k=config.env.search_top_k)
        log(
            f"sft: the logs have no lookups; {steps['search_steps']:,} of {steps['answers']:,} informative answers "
            f"get a search: step (a search from the customer's words finds a document that supports the answer)"
        )
    examples = corpus_to_examples(conversations, split="train", results_char_budget=config.policy.results_char_budget)
    log(f"sft: {len(examples):,} logged agent turns from {used:,} training conversations")
    metrics = run_sft(policy, policy.tokenizer, examples, config.sft, folder / "trainer")
    policy.intents = list(intents)
    if steps is not None:
        metrics["search_steps"] = steps
    summary = {k: v for k, v in metrics.items() if k != "log_history"} | {"wall_s": time.perf_counter() - started}
    summary["world_size"] = processes.world_size()
    if processes.is_main():
        policy.save(folder)
        (folder / "sft_metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        mark_done(folder, summary)
    processes.wait()
    log(f"sft: loss {metrics['loss_before']:.3f} -> {metrics['loss_after']:.3f} in {summary['wall_s']:.0f} s")
    return policy


def make_envs(conversations: list[Conversation], stack, env_config: EnvConfig, count: int, max_turns: int):
    """``count`` conversation environments over ``conversations`` sharing the stack's reward, in lockstep."""
    from csrl.env import ConversationEnv, LockstepEnvs

    envs = [
        ConversationEnv(conversations, stack.reward, stack.retriever, env_config, encoder=stack.encoder)
        for _ in range(count)
    ]
    return LockstepEnvs(envs, max_turns=max_turns)


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True, log=print) -> dict:
    """Run (or continue) every stage of a training run in ``out``; returns a summary dict.

    Raises:
        FileExistsError: ``out`` already holds a run and ``resume`` is False (nothing is overwritten).
        ValueError: ``resume`` with a config that differs from the saved one.
    """
    from csrl.dialogue.pipeline.inference import infer_annotations
    from csrl.dialogue.trainer.ppo_trainer import train_ppo
    from csrl.rewards.stack import build_reward_stack, reward_encoder

    if not processes.is_main():  # one process prints
        log, progress = (lambda *_: None), False
    run = Path(out)
    if (run / CONFIG_FILE).exists():
        if not resume:
            raise FileExistsError(f"{run} already holds a run; pass --resume to continue it, or choose another --out")
        changed = resume_differences(load_config(run), config)
        if changed:
            raise ValueError(
                f"{run} was started with another config (differs in {changed}); resume with the same preset and "
                "options, or choose another --out"
            )
    processes.wait()  # every process has checked the folder before the main one writes to it
    run.mkdir(parents=True, exist_ok=True)
    if processes.is_main():
        save_config(config, run)
    started = time.perf_counter()
    corpus = load_training_corpus(config.data)
    stats = corpus.stats()
    log(
        f"data: {stats['conversations']:,} conversations ({stats['splits']}), {stats['intents']} intents, "
        f"{stats['kb_documents']:,} KB documents"
    )
    encoder = reward_encoder(config.reward)  # one encoder and one embedding cache for inference and rewards
    with processes.main_first():  # the main process builds the reward stage; the others load what it saved
        corpus = infer_annotations(
            corpus, run / "rewards", encoder, kb_source=kb_source(config.data), intents_file=config.data.intents,
            max_intents=config.data.max_discovered_intents, seed=config.data.seed, log=log,
        )  # fmt: skip
        stack = build_reward_stack(
            corpus, run / "rewards", config.reward, config.reward_training, encoder=encoder, log=log
        )
    policy = sft_stage(corpus, run / "sft", config, retriever=stack.retriever, intents=stack.intents, log=log)
    if policy.is_adapted:  # PPO trains a fresh adapter on the SFT model; disabling it gives the reference
        policy.merge_adapter().add_adapter(config.policy.lora_r, config.policy.lora_alpha)
    policy.to(processes.state().device)  # this process's device: the CPU, or its own GPU
    envs = make_envs(
        corpus.split("train"), stack, config.env, config.ppo.rollout_batch_size, config.ppo.turns_per_episode
    )
    ppo_summary = train_ppo(
        policy, envs, config.ppo, run / "ppo", policy_config=config.policy, resume=resume, progress=progress
    )
    summary = {"run": str(run), "wall_s": round(time.perf_counter() - started, 1),
               "world_size": processes.world_size(), "ppo": ppo_summary}  # fmt: skip
    if processes.is_main():
        (run / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    log(f"done in {summary['wall_s']:.0f} s: {run}")
    return summary


__all__ = [
    "load_training_corpus",
    "make_envs",
    "sft_stage",
    "subset_corpus",
    "train",
]
