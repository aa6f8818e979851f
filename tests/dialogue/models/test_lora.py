"""LoRA on a loaded LM: the reference is the base with the adapter off, PPO trains only adapter and value head,
adapters and value head save and load apart, and the merged export is the same model."""

import dataclasses
import json

import pytest
import torch
from support import GENERATION, make_envs, policy_conversations, teach_taught_turn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from csrl.dialogue.models.policy import ActorCritic
from csrl.dialogue.models.tokenizer import train_tokenizer_on_corpus
from csrl.dialogue.pipeline.config import TrainConfig
from csrl.dialogue.trainer.ppo_trainer import train_ppo

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["customer: Weather in Detroit?\nagent:\n", "customer: Someone used my card!\nagent:\nintent: fraud\n"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny Llama (tied embeddings, grouped KV heads, like SmolLM2) taught one turn, as a transformers folder."""
    tokenizer = train_tokenizer_on_corpus(policy_conversations() * 5, vocab_size=400, model_max_length=256)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny_llama")
    pretrained = teach_taught_turn(ActorCritic(LlamaForCausalLM(config), tokenizer))  # "pretrained": it writes a turn
    pretrained.lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def logprobs_of(policy, prompts=PROMPTS):
    input_ids, attention_mask = policy.encode(prompts)
    logprobs, _, values = policy.evaluate(input_ids, attention_mask, attention_mask)
    return logprobs, values


def adapted(base_dir, r=4):
    return ActorCritic.from_pretrained(base_dir, dtype="float32").add_adapter(r, 2 * r).eval()


def test_adapter_targets_the_block_projections_and_not_the_tied_embeddings(base_dir):
    policy = adapted(base_dir)
    lora = {name for name, _ in policy.named_parameters() if "lora_" in name}
    targets = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in lora}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    assert trainable == lora | {"value_head.weight", "value_head.bias"}
    assert not any("embed" in name or "lm_head" in name for name in trainable)


def test_reference_is_the_base_model_with_the_adapter_disabled(base_dir):
    base = ActorCritic.from_pretrained(base_dir, dtype="float32").eval()
    policy = adapted(base_dir)
    torch.testing.assert_close(logprobs_of(policy)[0], logprobs_of(base)[0])  # B = 0: the adapter starts as a no-op
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    input_ids, attention_mask = policy.encode(PROMPTS)
    for _ in range(5):  # move the adapter: raise the log-prob of the prompts
        logprobs, _, _ = policy.evaluate(input_ids, attention_mask, attention_mask)
        optimizer.zero_grad()
        (-logprobs.sum()).backward()
        optimizer.step()
    with torch.no_grad():
        moved, reference, plain = (
            logprobs_of(policy)[0],
            logprobs_of(policy.frozen_reference())[0],
            logprobs_of(base)[0],
        )
    assert (moved - plain).abs().max() > 1e-2
    torch.testing.assert_close(reference, plain)
    torch.testing.assert_close(logprobs_of(policy)[0], moved)  # the context manager switched it back on


def test_ppo_trains_only_the_adapter_and_value_head(base_dir, tmp_path):
    policy = adapted(base_dir).merge_adapter().add_adapter(4, 8)  # as `csrl train` does between SFT and PPO
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    config = dataclasses.replace(TrainConfig.from_preset("debug").ppo, total_iterations=1, learning_rate=1e-2)
    train_ppo(policy, make_envs(n=2), config, tmp_path, policy_config=GENERATION, progress=False)
    changed = {name for name, p in policy.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all("lora_" in name or name.startswith("value_head.") for name in changed)
    assert any("lora_B" in name for name in changed) and "value_head.bias" in changed
    assert not (tmp_path / "reference").exists()  # no saved copy: the reference is the adapter switched off
    saved = json.loads((tmp_path / "policy" / "policy.json").read_text())
    assert saved["base"] == str(base_dir) and saved["adapter"] == "adapter" and saved["merged"] == ["merged/0"]


def test_adapter_and_value_head_save_apart_and_load_back(base_dir, tmp_path):
    policy = adapted(base_dir)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name or name.startswith("value_head."):
                p.normal_(0, 0.5)
    expected_logprobs, expected_values = logprobs_of(policy)
    folder = policy.save(tmp_path / "policy")
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert (folder / "value_head.safetensors").is_file() and not (folder / "model.safetensors").exists()
    loaded = ActorCritic.load(folder).eval()
    assert loaded.is_adapted
    logprobs, values = logprobs_of(loaded)
    torch.testing.assert_close(logprobs, expected_logprobs)
    torch.testing.assert_close(values, expected_values)


def test_a_merged_adapter_is_kept_and_the_merged_export_is_the_same_model(base_dir, tmp_path):
    policy = adapted(base_dir)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    sft_logprobs, _ = logprobs_of(policy)
    policy.merge_adapter().add_adapter(4, 8)  # as training does between SFT and PPO
    torch.testing.assert_close(logprobs_of(policy.frozen_reference())[0], sft_logprobs, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    expected, _ = logprobs_of(policy)
    folder = policy.save(tmp_path / "ppo")
    assert json.loads((folder / "policy.json").read_text())["merged"] == ["merged/0"]
    loaded = ActorCritic.load(folder).eval()
    torch.testing.assert_close(logprobs_of(loaded)[0], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logprobs_of(loaded.frozen_reference())[0], sft_logprobs, atol=1e-4, rtol=1e-4)

    export = policy.save_merged(tmp_path / "export")
    lm = AutoModelForCausalLM.from_pretrained(export).eval()
    assert not hasattr(lm, "peft_config")
    input_ids, attention_mask = policy.encode(PROMPTS)
    with torch.no_grad():
        logits = policy.lm(input_ids=input_ids, attention_mask=attention_mask).logits
        torch.testing.assert_close(lm(input_ids=input_ids, attention_mask=attention_mask).logits, logits,
                                   atol=1e-4, rtol=1e-4)  # fmt: skip


def test_a_second_adapter_needs_a_merge_first(base_dir):
    with pytest.raises(ValueError, match="merge_adapter"):
        adapted(base_dir).add_adapter(4, 8)
    with pytest.raises(ValueError, match="add_adapter"):
        ActorCritic.from_pretrained(base_dir).frozen_reference()
