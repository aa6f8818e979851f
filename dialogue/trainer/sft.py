"""Supervised fine-tuning of the policy on the logged agent turns written as processes, with TRL's ``SFTTrainer``.

The examples are prompt/completion pairs (:func:`csrl.dialogue.models.prompts.conversation_to_examples`).
We tokenize them ourselves and hand TRL a processed dataset of ``input_ids`` and ``completion_mask``
(TRL turns the mask into ``-100`` labels with ``completion_only_loss=True``), because:

- the loss must skip the prompt *and* the ``results:`` block inside the completion: those tokens
  come from the environment, not the policy (``SFTConfig.mask_results``);
- the prompt and each piece of the completion are tokenized apart, exactly as in a rollout, where
  the policy's tokens and the inserted results are tokenized separately;
- long dialogues lose their *oldest* tokens (TRL's ``keep_end`` truncation is deprecated).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from csrl.dialogue.config import SFTConfig
from csrl.dialogue.models.prompts import policy_segments


def tokenize_example(tokenizer, prompt: str, completion: str, max_length: int, mask_results: bool = True) -> dict:
    """Token ids of prompt + completion + eos, and a mask of the tokens the loss trains on.

    Args:
        tokenizer: the policy's tokenizer (no special tokens are added; eos ends the turn).
        prompt: the dialogue so far, ending with the agent turn start.
        completion: the agent turn as a process.
        max_length: keep at most this many tokens, dropping the oldest prompt tokens first.
        mask_results: 0 in the mask for the ``results:`` block (the environment's tokens).

    Returns:
        ``{"input_ids": [...], "completion_mask": [...]}`` of equal length; the mask is 1 on the
        policy's completion tokens and the eos token.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]  # long: truncated below
    input_ids, completion_mask = list(prompt_ids), [0] * len(prompt_ids)
    for text, owner in policy_segments(completion):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        completion_mask += [0 if (mask_results and owner == "environment") else 1] * len(ids)
    input_ids.append(tokenizer.eos_token_id)
    completion_mask.append(1)
    if len(input_ids) > max_length:
        prompt_kept = max(0, max_length - (len(input_ids) - len(prompt_ids)))
        cut = len(prompt_ids) - prompt_kept  # oldest prompt tokens to drop
        input_ids, completion_mask = input_ids[cut:][:max_length], completion_mask[cut:][:max_length]
    return {"input_ids": input_ids, "completion_mask": completion_mask}


def build_dataset(tokenizer, examples: Sequence[dict], config: SFTConfig):
    """A processed ``datasets.Dataset`` (``input_ids``, ``completion_mask``) for ``SFTTrainer``."""
    from datasets import Dataset

    if not examples:
        raise ValueError("no SFT examples: the conversations have no agent turns (check the split and limit)")
    rows = [
        tokenize_example(tokenizer, e["prompt"], e["completion"], config.max_length, config.mask_results)
        for e in examples
    ]
    return Dataset.from_list(rows)


@torch.no_grad()
def completion_loss(lm, tokenizer, dataset, batch_size: int = 16, max_examples: int | None = 64) -> float:
    """Mean cross-entropy per trained token (``completion_mask`` = 1) over the first ``max_examples`` rows."""
    was_training = lm.training
    lm.eval()
    device = next(lm.parameters()).device
    rows = dataset.select(range(min(len(dataset), max_examples or len(dataset))))
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(ids) for ids in batch["input_ids"])
        input_ids = torch.full((len(batch["input_ids"]), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)  # (B, T) trained tokens
        attention = torch.zeros_like(input_ids)  # (B, T)
        for i, (ids, trained) in enumerate(zip(batch["input_ids"], batch["completion_mask"], strict=True)):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = torch.tensor(trained)
            attention[i, : len(ids)] = 1
        input_ids, mask, attention = input_ids.to(device), mask.to(device), attention.to(device)
        logits = lm(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()  # (B, T-1, V)
        nll = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")  # (B, T-1)
        total += float((nll * mask[:, 1:]).sum())
        count += int(mask[:, 1:].sum())
    lm.train(was_training)
    return total / max(count, 1)


def run_sft(model, tokenizer, examples: Sequence[dict], config: SFTConfig, output_dir: str | Path) -> dict:
    """Fine-tune ``model`` on ``examples`` with TRL's ``SFTTrainer``; the model is updated in place.

    Args:
        model: an :class:`~csrl.dialogue.models.policy.ActorCritic` (its LM is trained; the value head is left
            alone) or a transformers causal LM.
        tokenizer: its tokenizer, with pad and eos tokens.
        examples: dicts with ``prompt`` and ``completion`` (see ``conversation_to_examples``).
        config: :class:`~csrl.dialogue.config.SFTConfig`.
        output_dir: where the trainer writes its logs (no checkpoints are saved here; save the policy).

    Returns:
        Metrics: ``loss_before`` / ``loss_after`` (mean NLL per trained token on the first 64
        examples), ``train_loss`` (the trainer's average), ``steps``, ``examples``, ``tokens`` and
        ``trained_tokens`` (per epoch), ``train_runtime_s``, ``tokens_per_s`` and the ``log_history``.
    """
    import transformers
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    lm = getattr(model, "lm", model)
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs pad and eos tokens (models.tokenizer.train_tokenizer sets both)")
    dataset = build_dataset(tokenizer, examples, config)
    tokens = sum(len(ids) for ids in dataset["input_ids"])
    trained_tokens = sum(sum(mask) for mask in dataset["completion_mask"])
    loss_before = completion_loss(lm, tokenizer, dataset)

    # batches of similar lengths: dialogues run from 20 to 500+ tokens, and padding is wasted compute
    field_names = {f.name for f in dataclasses.fields(TRLSFTConfig)}
    grouping = (
        {"train_sampling_strategy": "group_by_length"}
        if "train_sampling_strategy" in field_names
        else {"group_by_length": True}
    )
    args = TRLSFTConfig(
        **grouping,
        output_dir=str(output_dir),
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        completion_only_loss=True,  # our completion_mask already excludes prompt and results
        max_length=None,  # tokenize_example truncated, keeping the newest tokens
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # so several CPU processes train data parallel over gloo
        ddp_find_unused_parameters=False,  # every parameter of the LM is used (and the check costs a graph walk)
        disable_tqdm=True,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),  # CPU: float32
        fp16=False,
        # TRL turns activation checkpointing on by default: it halved LoRA training speed on 2 cores (95 vs ~200
        # tokens/s), and the policies here fit in memory without it
        gradient_checkpointing=False,
    )
    transformers.set_seed(config.seed)
    trainer = SFTTrainer(model=lm, args=args, train_dataset=dataset, processing_class=tokenizer)
    start = time.perf_counter()
    result = trainer.train()
    runtime = time.perf_counter() - start
    # TRL patches the instance's `forward` with a closure over the *original* bound forward; a deepcopy of the
    # model would keep calling this model's weights (a PPO reference that moves with the policy). Undo it.
    lm.__dict__.pop("forward", None)
    lm.eval()
    loss_after = completion_loss(lm, tokenizer, dataset)
    steps = int(result.global_step)
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps * args.world_size  # per step
    epochs_seen = steps * batch / len(dataset)
    seen_tokens = tokens * epochs_seen
    metrics = {
        "loss_before": loss_before,
        "loss_after": loss_after,
        "train_loss": float(result.training_loss),
        "steps": steps,
        "examples": len(dataset),
        "tokens": tokens,
        "trained_tokens": trained_tokens,
        "train_runtime_s": runtime,
        "tokens_per_s": seen_tokens / runtime if runtime > 0 else math.nan,
        "log_history": list(trainer.state.log_history),
    }
    return metrics
