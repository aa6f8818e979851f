"""SFT smoke test: a tiny GPT-2 learns from ~50 STAR conversations; the results block stays out of the loss."""

import copy

import pytest
import torch

from csrl.dialogue.models.policy import ActorCritic
from csrl.dialogue.models.prompts import corpus_to_examples
from csrl.dialogue.models.tokenizer import train_tokenizer_on_corpus
from csrl.dialogue.pipeline.config import TrainConfig
from csrl.dialogue.trainer.sft import run_sft, tokenize_example


@pytest.fixture(scope="module")
def star_examples(star_corpus):
    return corpus_to_examples(star_corpus.conversations, split="train", limit=50)


@pytest.fixture(scope="module")
def tiny_star_policy(star_corpus):
    conversations = [c for c in star_corpus.conversations if c.split == "train"][:50]
    tokenizer = train_tokenizer_on_corpus(conversations, vocab_size=512, model_max_length=256)
    return ActorCritic.from_config(tokenizer, TrainConfig.from_preset("debug").policy)


def test_tokenize_example_masks_prompt_and_results(tiny_star_policy, star_examples):
    tokenizer = tiny_star_policy.tokenizer
    example = next(e for e in star_examples if e["searched"])
    row = tokenize_example(tokenizer, example["prompt"], example["completion"], max_length=10_000)
    trained = tokenizer.decode([t for t, m in zip(row["input_ids"], row["completion_mask"], strict=True) if m])
    assert trained.startswith("intent: ") and "\nsearch: " in trained
    assert "results:" not in trained and trained.endswith(tokenizer.eos_token)
    assert "reply: " in trained
    unmasked = tokenize_example(tokenizer, example["prompt"], example["completion"], 10_000, mask_results=False)
    assert "results:" in tokenizer.decode(
        [t for t, m in zip(unmasked["input_ids"], unmasked["completion_mask"], strict=True) if m]
    )


def test_tokenize_example_drops_the_oldest_prompt_tokens(tiny_star_policy, star_examples):
    tokenizer = tiny_star_policy.tokenizer
    example = max(star_examples, key=lambda e: len(e["prompt"]))
    full = tokenize_example(tokenizer, example["prompt"], example["completion"], max_length=10_000)
    short = tokenize_example(tokenizer, example["prompt"], example["completion"], max_length=64)
    assert len(short["input_ids"]) == 64 and short["input_ids"] == full["input_ids"][-64:]


def test_sft_debug_run_changes_parameters_and_lowers_loss(tiny_star_policy, star_examples, tmp_path):
    policy = copy.deepcopy(tiny_star_policy)
    before = {name: p.detach().clone() for name, p in policy.lm.named_parameters()}
    head_before = policy.value_head.weight.detach().clone()
    metrics = run_sft(policy, policy.tokenizer, star_examples, TrainConfig.from_preset("debug").sft, tmp_path / "sft")
    assert metrics["steps"] == 8 and metrics["examples"] == len(star_examples)
    for key in ("loss_before", "loss_after", "train_loss"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    assert metrics["loss_after"] < metrics["loss_before"]
    changed = [name for name, p in policy.lm.named_parameters() if not torch.equal(before[name], p)]
    assert len(changed) == len(before), "every LM parameter is trained"
    assert torch.equal(head_before, policy.value_head.weight), "SFT leaves the value head alone"
    assert any("loss" in entry for entry in metrics["log_history"])
    # a copy (the PPO reference) must not run through this model's weights via TRL's patched forward
    frozen = copy.deepcopy(policy)
    ids = torch.tensor([[5, 6, 7]])
    before_logits = frozen.lm(input_ids=ids).logits.detach().clone()
    with torch.no_grad():
        for p in policy.lm.parameters():
            p.add_(0.1)
    assert torch.equal(before_logits, frozen.lm(input_ids=ids).logits), "the copy moved with the trained model"


def test_sft_rejects_no_examples(tiny_star_policy, tmp_path):
    with pytest.raises(ValueError, match="no SFT examples"):
        run_sft(tiny_star_policy, tiny_star_policy.tokenizer, [], TrainConfig.from_preset("debug").sft, tmp_path)
