"""The actor-critic: shapes, log-probs against a manual gather, batched generation with stops, save/load."""

import copy
import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from csrl.dialogue.models.policy import ActorCritic, build_default_lm
from csrl.dialogue.models.tokenizer import train_tokenizer
from csrl.dialogue.pipeline.config import TrainConfig

TEXTS = [
    "customer: Hi, my card was stolen!\nagent:\nintent: bank_fraud_report\nreply: Could I get your name, please?",
    "customer: What's the weather in Detroit?\nagent:\nintent: weather\nsearch: weather City=Detroit\n"
    "results: [1] weather record: Sunny.\nreply: It will be sunny.",
    "customer: Grüße! Ich brauche ein Taxi 🚕\nagent:\nintent: ride_book\nreply: Where would you like to go?",
] * 20
PROMPTS = ["customer: Hi\nagent:\n", "customer: I need the weather for Tuesday in Detroit, please\nagent:\n"]


@pytest.fixture(scope="module")
def tiny_policy():
    tokenizer = train_tokenizer(TEXTS, vocab_size=320)
    debug = TrainConfig.from_preset("debug").policy
    config = dataclasses.replace(debug, n_embd=32, n_head=2, n_layer=2, n_positions=128, max_new_tokens=32)
    return ActorCritic.from_config(tokenizer, config).eval()


@pytest.fixture
def policy(tiny_policy):
    return copy.deepcopy(tiny_policy)  # each test may change it


def test_build_default_lm_sizes():
    lm = build_default_lm(400, TrainConfig.from_preset("debug").policy)
    assert (lm.config.vocab_size, lm.config.n_layer, lm.config.n_embd, lm.config.n_positions) == (400, 2, 64, 256)


def test_forward_and_evaluate_shapes(policy):
    input_ids, attention_mask = policy.encode(PROMPTS)
    B, T = input_ids.shape
    assert attention_mask[0, 0] == 0 and attention_mask[1].all(), "left padding"
    logits, values = policy(input_ids, attention_mask)
    assert logits.shape == (B, T, len(policy.tokenizer)) and values.shape == (B, T)
    logprobs, entropy, values = policy.evaluate(input_ids, attention_mask, attention_mask)
    assert logprobs.shape == entropy.shape == values.shape == (B, T)
    assert (logprobs <= 0).all() and (entropy >= 0).all()


def test_evaluate_matches_a_manual_log_softmax_gather(policy):
    input_ids, attention_mask = policy.encode(PROMPTS)
    action_mask = attention_mask.clone()
    action_mask[:, :-3] = 0  # the last three tokens are the actions
    logprobs, entropy, values = policy.evaluate(input_ids, attention_mask, action_mask, temperature=0.7)
    logits, all_values = policy(input_ids, attention_mask)
    for b in range(input_ids.shape[0]):
        for t in range(input_ids.shape[1]):
            if not action_mask[b, t]:
                assert logprobs[b, t] == 0 and entropy[b, t] == 0 and values[b, t] == 0
                continue
            dist = F.log_softmax(logits[b, t - 1] / 0.7, dim=-1)
            torch.testing.assert_close(logprobs[b, t], dist[input_ids[b, t]])
            torch.testing.assert_close(entropy[b, t], -(dist.exp() * dist).sum())
            torch.testing.assert_close(values[b, t], all_values[b, t - 1])


def test_evaluate_gradients_reach_lm_and_value_head(policy):
    input_ids, attention_mask = policy.encode(PROMPTS)
    logprobs, _, values = policy.evaluate(input_ids, attention_mask, attention_mask)
    (logprobs.sum() + values.sum()).backward()
    assert policy.value_head.weight.grad is not None
    assert policy.lm.transformer.h[0].attn.c_attn.weight.grad.abs().sum() > 0


def test_batched_left_padded_generation_equals_one_by_one(policy):
    input_ids, attention_mask = policy.encode(PROMPTS)
    batched = policy.generate(input_ids, attention_mask, max_new_tokens=12, temperature=0)
    for row, prompt in enumerate(PROMPTS):
        alone = policy.generate(*policy.encode([prompt]), max_new_tokens=12, temperature=0)
        assert alone.tokens[0] == batched.tokens[row]
        assert alone.logprobs[0] == pytest.approx(batched.logprobs[row], abs=1e-4)


def test_generation_logprobs_match_evaluate(policy):
    input_ids, attention_mask = policy.encode(PROMPTS)
    out = policy.generate(input_ids, attention_mask, max_new_tokens=10, generator=torch.Generator().manual_seed(1))
    for row in range(len(PROMPTS)):
        prompt = input_ids[row][attention_mask[row].bool()]
        full = torch.cat([prompt, torch.tensor(out.tokens[row])])[None]  # (1, T)
        action_mask = torch.zeros_like(full)
        action_mask[0, len(prompt) :] = 1
        logprobs, _, _ = policy.evaluate(full, torch.ones_like(full), action_mask)
        torch.testing.assert_close(logprobs[0, len(prompt) :], torch.tensor(out.logprobs[row]), atol=1e-4, rtol=0)


def test_seeded_sampling_is_reproducible(policy):
    input_ids, attention_mask = policy.encode(PROMPTS)
    a = policy.generate(input_ids, attention_mask, max_new_tokens=8, generator=torch.Generator().manual_seed(7))
    b = policy.generate(input_ids, attention_mask, max_new_tokens=8, generator=torch.Generator().manual_seed(7))
    assert a.tokens == b.tokens and a.stop_reasons == ["length", "length"]


@pytest.mark.parametrize("as_pattern", [False, True])
def test_generate_stops_at_a_stop_string(policy, as_pattern):
    input_ids, attention_mask = policy.encode(PROMPTS)
    free = policy.generate(input_ids, attention_mask, max_new_tokens=12, temperature=0)
    # stop row 0 where its 5th token completes its text; row 1 runs on (the stop never appears in it)
    k = 5
    target = policy.tokenizer.decode(free.tokens[0][:k])
    assert target not in policy.tokenizer.decode(free.tokens[0][: k - 1])
    stop = re.compile(re.escape(target)) if as_pattern else target
    out = policy.generate(input_ids, attention_mask, max_new_tokens=12, temperature=0, stop=[stop])
    assert out.tokens[0] == free.tokens[0][:k] and out.stop_reasons[0] == "stop"
    assert out.texts[0].endswith(target[-3:])
    if target not in free.texts[1]:
        assert out.tokens[1] == free.tokens[1] and out.stop_reasons[1] == "length"


def test_generate_rejects_bad_arguments(policy):
    input_ids, attention_mask = policy.encode(PROMPTS)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        policy.generate(input_ids, attention_mask, max_new_tokens=0)
    with pytest.raises(ValueError, match="encode with max_length=96"):
        policy.generate(*policy.encode(["customer: hello " * 100]), max_new_tokens=32)
    with pytest.raises(TypeError, match="list of texts"):
        policy.encode("one string")


def test_save_and_load_round_trip(policy, tmp_path):
    with torch.no_grad():
        policy.value_head.bias.fill_(0.25)
    folder = policy.save(tmp_path / "policy")
    assert (folder / "model.safetensors").exists() and (folder / "value_head.safetensors").exists()
    loaded = ActorCritic.load(folder).eval()
    input_ids, attention_mask = policy.encode(PROMPTS)
    for a, b in zip(policy(input_ids, attention_mask), loaded(input_ids, attention_mask), strict=True):
        torch.testing.assert_close(a, b)
    assert loaded.tokenizer(PROMPTS[1])["input_ids"] == policy.tokenizer(PROMPTS[1])["input_ids"]
    assert loaded.tokenizer.padding_side == "left"


def test_plain_lm_folder_gets_a_fresh_value_head(policy, tmp_path):
    policy.lm.save_pretrained(tmp_path / "lm")
    policy.tokenizer.save_pretrained(tmp_path / "lm")
    loaded = ActorCritic.from_pretrained(tmp_path / "lm")
    assert loaded.value_head.weight.shape == policy.value_head.weight.shape
