"""Opening a run folder: what each job finds in it, and the message when something is missing."""

import shutil

import pytest

from csrl.dialogue.pipeline.runs import open_run


def test_a_missing_or_unfinished_folder_says_what_to_run(debug_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder; train one with `csrl train"):
        open_run(tmp_path / "nowhere")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(debug_run[0] / "config.json", unfinished / "config.json")
    with pytest.raises(FileNotFoundError, match="reward models are not trained yet; run `csrl train --out"):
        open_run(unfinished)


def test_a_run_without_ppo_names_the_missing_policy(debug_run, tmp_path):
    partial = tmp_path / "partial"
    for part in ("rewards", "sft"):
        shutil.copytree(debug_run[0] / part, partial / part)
    shutil.copy(debug_run[0] / "config.json", partial / "config.json")
    run = open_run(partial)
    assert run.policy_folder("sft") == partial / "sft"
    with pytest.raises(FileNotFoundError, match=r"no trained ppo policy yet; run `csrl train --out .* --resume`"):
        run.policy_folder("ppo")
    with pytest.raises(ValueError, match="policy 'human': expected 'ppo' or 'sft'"):
        run.policy_folder("human")


def test_the_run_reopens_its_own_data_and_scores(debug_run):
    out, config, _ = debug_run
    run = open_run(out)
    assert run.config == config
    assert run.corpus.split("test") and {c.split for c in run.corpus.conversations} <= {"train", "validation", "test"}
    assert run.policy_folder("ppo").is_dir()
    assert not run.policy("sft").training
    scorer = run.scorer()
    conversation = run.corpus.split("test")[0]
    customer = next(t.text for t in conversation.turns if t.role == "customer")
    from csrl.dialogue.serving.scoring import TurnInput

    turn = TurnInput(history=[{"role": "customer", "text": customer}], reply="Could I get your name, please?")
    (result,) = scorer.score([turn])
    assert set(result.components) >= {"intent", "retrieval", "satisfaction"}
    assert result.reward == pytest.approx(sum(result.weighted.values()))
