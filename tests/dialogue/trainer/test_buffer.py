"""The trajectory buffer round-trips through Parquet exactly."""

import math

import pytest

from csrl.dialogue.trainer.buffer import TrajectoryBuffer, TurnRecord


def make_record(episode_id=0, turn_index=0, **overrides):
    fields = dict(
        episode_id=episode_id,
        turn_index=turn_index,
        state="customer: Someone used my card! 🙁\nagent:\n",
        action="intent: bank_fraud_report\nsearch: fraud Sam Lee\nresults: [1] Ask the account number.\nreply: Grüße",
        reward=0.1 + 0.2,  # not exactly representable in decimal: must survive bit for bit
        stage_rewards={"intent": 0.3, "retrieval": 1 / 3, "satisfaction": 0.123456789012345},
        done=False,
        truncated=False,
        query_ids=[11, 12, 13],
        response_ids=[21, 22, 23, 24, 2],
        action_mask=[1, 1, 0, 1, 1],
        logprobs=[-0.5, -1e-12, 0.0, -7.25, -math.pi],
        values=[0.1, -0.2, 0.0, 1e300, 5e-324],
        ref_logprobs=[-0.4, -0.1, 0.0, -7.0, -3.0],
        stage_token_index={"intent": 1, "retrieval": 1, "satisfaction": 4},
    )
    fields.update(overrides)
    return TurnRecord(**fields)


def test_round_trip_is_exact(tmp_path):
    buffer = TrajectoryBuffer()
    buffer.add(make_record(0, 0))
    buffer.add(make_record(0, 1, done=True, reward=-0.1, stage_rewards={}, stage_token_index={}))
    buffer.add(make_record(1, 0, truncated=True, ref_logprobs=[], state="", action=""))
    buffer.add(episode_id=2, turn_index=0, state="s", action="a", reward=1.0)  # keyword form, empty tokens
    path = buffer.save(tmp_path / "iter_0001" / "buffer.parquet")
    loaded = TrajectoryBuffer.load(path)
    assert loaded == buffer
    assert loaded.records[0].reward == 0.1 + 0.2
    assert loaded.records[0].values[4] == 5e-324
    assert type(loaded.records[0].action_mask[0]) is int and type(loaded.records[0].done) is bool


def test_empty_buffer_round_trips(tmp_path):
    assert len(TrajectoryBuffer.load(TrajectoryBuffer().save(tmp_path / "empty.parquet"))) == 0


def test_episodes_groups_and_orders_turns():
    buffer = TrajectoryBuffer([make_record(5, 1), make_record(3, 0), make_record(5, 0)])
    assert [[(r.episode_id, r.turn_index) for r in ep] for ep in buffer.episodes()] == [[(5, 0), (5, 1)], [(3, 0)]]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(logprobs=[-1.0]), "logprobs has 1 entries but response_ids has 5"),
        (dict(action_mask=[1, 1]), "action_mask has 2 entries"),
        (dict(ref_logprobs=[0.0]), "or none for ref_logprobs"),
        (dict(stage_token_index={"intent": 9}), r"stage_token_index\['intent'\]=9"),
        (dict(done=True, truncated=True), "either done"),
    ],
)
def test_rejects_inconsistent_records(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_record(**overrides)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="TrajectoryBuffer.save"):
        TrajectoryBuffer.load(tmp_path / "nope.parquet")
