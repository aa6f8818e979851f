"""The whole pipeline on the debug preset (train, resume, eval, simulate, score: one run per session); the presets."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from csrl.dialogue.cli import main
from csrl.dialogue.pipeline.config import DataConfig, TrainConfig
from csrl.dialogue.pipeline.presets import PRESETS, preset_overrides
from csrl.dialogue.pipeline.training import subset_corpus, train


def _weights(folder):
    return load_file(folder / "model.safetensors")


def test_debug_run_writes_every_stage_and_ppo_changes_the_policy(debug_run):
    out, config, summary = debug_run
    for stage in ("rewards", "sft"):
        assert (out / stage / "DONE").exists()
    assert "search_steps" not in json.loads((out / "sft" / "sft_metrics.json").read_text())  # STAR logs its lookups
    metrics = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == list(range(1, config.ppo.total_iterations + 1))
    for m in metrics:
        for key in ("losses/policy_loss", "losses/value_loss", "losses/approx_kl", "losses/clipfrac"):
            assert math.isfinite(m[key]), key
    # the frozen reference stays at the SFT policy: after one update the KL to it is no longer exactly 0
    assert metrics[0]["charts/kl_to_ref"] == 0.0 and metrics[-1]["charts/kl_to_ref"] != 0.0
    sft, ppo = _weights(out / "sft"), _weights(out / "ppo" / "policy")
    assert sft.keys() == ppo.keys()
    assert any(not torch.equal(sft[k], ppo[k]) for k in sft), "PPO left every policy parameter unchanged"
    assert (out / "ppo" / "plots" / "ppo.png").read_bytes().startswith(b"\x89PNG")
    reward_metrics = json.loads((out / "rewards" / "metrics.json").read_text())
    for key in ("intent.accuracy", "satisfaction.auc", "retrieval.recall@5", "integrity.parrot"):
        assert 0 <= reward_metrics[key]["value"] <= 1 and reward_metrics[key]["n"] > 0, key


def test_an_existing_run_is_never_overwritten_and_resumes_with_the_same_config(debug_run):
    out, config, _ = debug_run
    before = (out / "ppo" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="already holds a run; pass --resume"):
        train(config, out, progress=False, log=lambda *_: None)
    other = TrainConfig.from_preset("debug", credit="turn")
    with pytest.raises(ValueError, match=r"another config \(differs in \['ppo'\]\)"):
        train(other, out, resume=True, progress=False, log=lambda *_: None)
    assert (out / "ppo" / "metrics.jsonl").read_text() == before


def test_eval_prints_one_json_object_with_every_metric(debug_run, capsys):
    out, _, _ = debug_run
    assert main(["eval", "--run", str(out), "--json", "--episodes", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("intent.accuracy", "intent.macro_f1", "satisfaction.auc", "satisfaction.macro_f1",
                "retrieval.recall@1", "retrieval.recall@5", "integrity.other_intent", "integrity.same_conversation",
                "integrity.generic", "integrity.parrot", "integrity.wrong_intent", "integrity.rude",
                "integrity.garbled"):  # fmt: skip
        assert "n" in result[key], key
    for agent in ("human", "sft", "ppo"):
        summary = result[f"policy.{agent}.reward"]
        assert summary["n"] == 4 and summary["ci95"][0] <= summary["reward"] <= summary["ci95"][1]
    paired = result["policy.ppo.minus_sft"]  # the same 4 conversations, so the difference of the means
    expected = result["policy.ppo.reward"]["reward"] - result["policy.sft.reward"]["reward"]
    assert paired["n"] == 4 and paired["difference"] == pytest.approx(expected, abs=2e-4)
    kl = result["policy.ppo.kl"]  # a Monte-Carlo estimate: a 2-iteration run sits at ~0, either sign
    assert abs(kl["kl_per_token"]) < 0.5 and kl["tokens"] > 0
    for prefix in ("policy.human", "policy.sft", "policy.ppo", "policy.sft.greedy", "policy.ppo.greedy"):
        seen = result[f"{prefix}.behaviour"]
        assert seen["turns"] >= 4 and 0 <= seen["search_rate"] <= 1 and 0 <= seen["distinct_1"] <= 1, prefix
    assert result["policy.sft.greedy.reward"]["n"] == result["policy.ppo.greedy.reward"]["n"] == 4
    assert result["policy.ppo.greedy.minus_sft"]["n"] == 4 and "policy.ppo.greedy.gap_closed" in result
    assert result["policy.human.behaviour"]["intent_match"] > 0.5  # the logged agents name the labelled intent
    played = [json.loads(line) for line in (out / "eval_transcripts.jsonl").read_text().splitlines()]
    assert len(played) == 5 * 4 and {(e["policy"], e.get("decoding")) for e in played} == {
        ("human", None),
        ("sft", "sampled"),
        ("sft", "greedy"),
        ("ppo", "sampled"),
        ("ppo", "greedy"),
    }


def test_eval_greedy_is_deterministic_and_shows_progress(debug_run, capsys):
    out, _, _ = debug_run
    runs = []
    for _ in range(2):
        assert main(["eval", "--run", str(out), "--json", "--episodes", "3", "--decoding", "greedy"]) == 0
        captured = capsys.readouterr()
        runs.append(json.loads(captured.out))
    assert "policy.ppo.reward" not in runs[0] and "policy.ppo.greedy.reward" in runs[0]
    assert runs[0]["policy.ppo.greedy.reward"] == runs[1]["policy.ppo.greedy.reward"]
    assert "eval: ppo (greedy): 3/3 episodes" in captured.err


def test_export_writes_a_plain_transformers_folder_of_the_policy(debug_run, tmp_path, capsys):
    out, _, _ = debug_run
    assert main(["export", "--run", str(out), "--out", str(tmp_path / "export")]) == 0
    from transformers import AutoModelForCausalLM

    from csrl.dialogue.pipeline.runs import open_run

    policy = open_run(out).policy("ppo")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    input_ids, attention_mask = policy.encode(["customer: Hi\nagent:\n"])
    with torch.no_grad():
        expected = policy.lm(input_ids=input_ids, attention_mask=attention_mask).logits
        torch.testing.assert_close(exported(input_ids=input_ids, attention_mask=attention_mask).logits, expected)
    assert main(["export", "--run", str(out), "--out", str(tmp_path / "export")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_simulate_writes_transcripts_and_report(debug_run, tmp_path, capsys):
    out, _, _ = debug_run
    transcripts, report = tmp_path / "t.jsonl", tmp_path / "r.html"
    args = ["simulate", "--run", str(out), "--episodes", "3", "--out", str(transcripts), "--report", str(report)]
    assert main(args) == 0
    episodes = [json.loads(line) for line in transcripts.read_text().splitlines()]
    assert sorted(e["policy"] for e in episodes) == ["human"] * 3 + ["ppo"] * 3
    turn = episodes[0]["turns"][0]
    assert set(turn["components"]) >= {"intent", "retrieval", "satisfaction"}
    assert math.isclose(turn["reward"], sum(turn["weighted"].values()), abs_tol=1e-9)
    assert "data:image/png;base64" in report.read_text()


def test_score_scores_valid_lines_and_reports_invalid_ones_by_line(debug_run, tmp_path, capsys):
    out, _, _ = debug_run
    turns = tmp_path / "turns.jsonl"
    good = {"history": [{"role": "customer", "text": "I want to book a doctor appointment"}], "reply": "Sure."}
    turns.write_text(json.dumps(good) + "\n" + '{"history": [], "reply": 3}\n', encoding="utf-8")
    scores = tmp_path / "scores.jsonl"
    assert main(["score", "--run", str(out), "--input", str(turns), "--out", str(scores)]) == 0
    results = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(results) == 1 and set(results[0]["components"]) >= {"intent", "retrieval", "satisfaction"}
    err = capsys.readouterr().err
    assert f"{turns}:2: field 'history'" in err and "scored 1 turn(s), 1 invalid line(s) skipped" in err


def test_subset_keeps_the_most_frequent_intents_and_their_documents(star_corpus):
    small = subset_corpus(star_corpus, max_intents=2, max_conversations=10)
    assert len({c.intent for c in small.conversations}) == 2
    assert all(n <= 10 for n in [len(small.split(s)) for s in ("train", "validation", "test")])
    ids = {d.id for d in small.knowledge_base}
    assert all(d.id in ids for c in small.conversations for t in c.turns for d in t.results)


def test_config_round_trips_and_refuses_unknown_keys():
    config = TrainConfig.from_preset("quick", data=DataConfig(seed=3), credit="turn")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"unknown config keys \['rewardz'\]"):
        TrainConfig.from_dict({**config.to_dict(), "rewardz": {}})
    with pytest.raises(ValueError, match="preset='fast'"):
        TrainConfig.from_preset("fast")


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_is_its_overrides_over_the_dataclass_defaults(name):
    overrides = preset_overrides(name)
    config = TrainConfig.from_preset(name)
    parts = [f.name for f in dataclasses.fields(TrainConfig) if dataclasses.is_dataclass(f.default_factory)]
    assert set(overrides) == {*parts, "eval_episodes"}, "a preset names every part, even one it leaves as is"
    for part in parts:
        section = getattr(config, part)
        defaults = dataclasses.asdict(type(section)())
        assert dataclasses.asdict(section) == {**defaults, **overrides[part]}, part
        for key, value in overrides[part].items():  # only overrides: a value equal to the default is noise
            assert defaults[key] != value, f"{name}.{part}.{key} repeats the default {value!r}"
    assert config.eval_episodes == overrides["eval_episodes"] and config.preset == name


def test_a_preset_keeps_the_data_choice_and_credit_it_is_given():
    data = DataConfig(source="logs.jsonl", kb="kb.jsonl", seed=3)
    config = TrainConfig.from_preset("debug", data=data, credit="turn")
    assert config.data == DataConfig(source="logs.jsonl", kb="kb.jsonl", seed=3, max_intents=2, max_conversations=24)
    assert config.ppo == dataclasses.replace(TrainConfig.from_preset("debug").ppo, credit="turn")
    assert TrainConfig.from_preset("debug", data=DataConfig(max_intents=5)).data.max_intents == 5
    assert TrainConfig.from_preset("quick", data=data).data == data


def _off_topic(conversations, intent):
    """What a logged agent said in a conversation about another intent."""
    other = next(c for c in conversations if c.intent != intent)
    return "reply: " + next(t.text for t in other.turns if t.role == "agent" and len(t.text.split()) > 4)


def test_reactive_customer_sours_on_off_topic_replies_and_leaves(debug_run):
    from csrl.dialogue.pipeline.runs import open_run
    from csrl.env import ConversationEnv, EnvConfig

    out, _, _ = debug_run
    run = open_run(out)
    test = run.corpus.split("test")

    def make(leave_threshold):
        config = EnvConfig(simulator="reactive", leave_threshold=leave_threshold)
        return ConversationEnv(test, run.stack.reward, run.stack.retriever, config, encoder=run.stack.encoder)

    env = make(0.0)
    logged, off = [], []
    for seed in range(6):
        env.reset(seed=seed)
        off_topic = _off_topic(test, env.current_intent)
        logged.append(env.step(env.logged_action())[4]["sentiment"])
        env.reset(seed=seed)
        off.append(env.step(off_topic)[4]["sentiment"])
    assert sum(off) < sum(logged), (off, logged)

    # a customer who leaves below the midpoint stays with the logged agent but walks out on the off-topic one
    env = make((sum(off) + sum(logged)) / (2 * len(off)))
    left = []
    for seed in range(6):
        env.reset(seed=seed)
        off_topic = _off_topic(test, env.current_intent)
        for _ in range(8):
            _, _, terminated, _, info = env.step(off_topic)
            if terminated:
                break
        left.append(info["customer_left"])
    assert any(left), "the customer never left"
