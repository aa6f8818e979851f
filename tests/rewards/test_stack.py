"""The run's reward folder: self-contained, reloaded offline to the same scores, refused when unfinished."""

import shutil

import pytest

from csrl.data.files import DONE
from csrl.dialogue.pipeline.runs import open_run
from csrl.rewards.context import contexts_from_conversation
from csrl.rewards.stack import build_reward_stack, load_reward_stack


@pytest.fixture(scope="module")
def held_out_contexts(debug_run):
    corpus = open_run(debug_run[0]).corpus
    return [ctx for c in corpus.split("test")[:3] for ctx in contexts_from_conversation(c)]


def test_a_copied_folder_scores_like_the_original(debug_run, held_out_contexts, tmp_path):
    folder = debug_run[0] / "rewards"
    original = load_reward_stack(folder)
    copy = shutil.copytree(folder, tmp_path / "moved")  # nothing outside the folder is needed
    moved = load_reward_stack(copy, encoder=original.encoder)
    assert held_out_contexts
    before = original.reward.score(held_out_contexts)
    after = moved.reward.score(held_out_contexts)
    assert [b.total for b in before] == [a.total for a in after]
    assert [b.components for b in before] == [a.components for a in after]
    assert moved.intents == original.intents and len(moved.intents) >= 2
    assert [d.id for d in moved.documents] == [d.id for d in original.documents]


def test_an_unfinished_folder_is_refused(debug_run, tmp_path):
    copy = shutil.copytree(debug_run[0] / "rewards", tmp_path / "rewards")
    (copy / DONE).unlink()
    with pytest.raises(FileNotFoundError, match="no complete reward models"):
        load_reward_stack(copy)


def test_a_finished_folder_is_loaded_not_retrained(debug_run):
    folder = debug_run[0] / "rewards"
    files = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    messages = []
    corpus = open_run(debug_run[0]).corpus
    stack = build_reward_stack(corpus, folder, log=messages.append)
    assert messages == [f"rewards: cached in {folder}"]
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == files
    assert stack.intents == load_reward_stack(folder, encoder=stack.encoder).intents


def test_the_gate_and_broken_negatives_reach_the_trained_stack(debug_run, held_out_contexts, tmp_path):
    import dataclasses
    import json

    run = open_run(debug_run[0])
    copy = shutil.copytree(debug_run[0] / "rewards", tmp_path / "rewards")
    for name in ("satisfaction", DONE, "metrics.json"):  # retrain only the satisfaction stage
        shutil.rmtree(copy / name) if (copy / name).is_dir() else (copy / name).unlink()
    config = dataclasses.replace(run.config.reward, retrieval_fit_gate=True)
    training = dataclasses.replace(run.config.reward_training, broken_reply_negatives=True)
    stack = build_reward_stack(run.corpus, copy, config, training, log=lambda *_: None)
    sources = json.loads((copy / "inferred.json").read_text())["satisfaction_labels"]["by_source"]
    assert sources.get("rude", 0) + sources.get("garbled", 0) > 0
    scored = stack.reward.score(held_out_contexts)
    for result in scored:
        parts = result.components
        assert parts["retrieval"] == pytest.approx(parts["retrieval_ungated"] * parts["satisfaction"])
    assert load_reward_stack(copy, encoder=stack.encoder).config.retrieval_fit_gate


def test_a_stack_on_message_embeddings_scores_with_them_and_refuses_the_other_encoder(
    debug_run, held_out_contexts, tmp_path
):
    import dataclasses
    import json

    run = open_run(debug_run[0])
    config = dataclasses.replace(run.config.reward, need_embedding="messages")
    folder = tmp_path / "rewards"
    stack = build_reward_stack(run.corpus, folder, config, run.config.reward_training, log=lambda *_: None)
    assert stack.encoder.need_embedding == "messages"
    assert json.loads((folder / "reward_config.json").read_text())["need_embedding"] == "messages"
    ours = [r.total for r in stack.reward.score(held_out_contexts)]
    theirs = [r.total for r in run.stack.reward.score(held_out_contexts)]
    assert ours != theirs and all(-0.1 <= total <= 1.0 for total in ours)
    with pytest.raises(ValueError, match="the reward models embed the need as 'messages'"):
        load_reward_stack(folder, encoder=run.stack.encoder)
    reloaded = load_reward_stack(folder)
    assert [r.total for r in reloaded.reward.score(held_out_contexts)] == pytest.approx(ours, abs=0.01)


def test_a_folder_from_before_the_need_option_embeds_the_joined_text(debug_run, tmp_path):
    import json

    copy = shutil.copytree(debug_run[0] / "rewards", tmp_path / "rewards")
    values = json.loads((copy / "reward_config.json").read_text())
    del values["need_embedding"]
    (copy / "reward_config.json").write_text(json.dumps(values))
    assert load_reward_stack(copy).encoder.need_embedding == "text"
