"""The policy's next turn from a plain dialogue: greedy, sampled, best-of-N and the step beam, scored by the reward."""

import pytest
import torch
from support import taught_replier

from csrl.data.schema import Turn
from csrl.dialogue.serving.reply import Decoding
from csrl.dialogue.serving.search import INTENT_LINE, _state

HISTORY = (Turn("customer", "Weather in Detroit?"),)


@pytest.fixture(scope="module")
def replier(one_thread):
    return taught_replier()


def test_greedy_writes_the_taught_turn_with_the_kb_results(replier):
    (turn,) = replier.reply([HISTORY], Decoding("greedy"))
    assert (turn.intent, turn.search, turn.reply) == ("weather", "weather Detroit", "Sunny all day in Detroit.")
    assert [d.id for d in turn.documents] == ["k-sunny"] and replier.searcher.queries[-1] == "weather Detroit"
    assert "\nresults: [1] weather: sunny\nreply: " in turn.text
    assert turn.reward.total == pytest.approx(sum(turn.reward.weighted.values()))
    assert turn.candidates == 1
    assert [t.role for t in turn.turns()] == ["tool", "agent"]


def test_best_of_n_keeps_the_best_scored_sample(replier):
    decoding = Decoding("best_of_n", n=6, temperature=1.5, seed=1)  # warm: the samples differ
    (best,) = replier.reply([HISTORY], decoding)
    # the same six candidates, written and scored by hand: the greedy turn and five samples
    written = replier.write([HISTORY], 0.0) + replier.write([HISTORY] * 5, 1.5, torch.Generator().manual_seed(1))
    scored = replier.finish([HISTORY], [0] * 6, [w.action for w in written], [w.documents for w in written])
    totals = [breakdown.total for _, _, breakdown in scored]
    assert len(set(totals)) > 1, "the samples should differ"
    assert best.reward.total >= totals[0]  # never below the greedy turn
    assert best.candidates == 6 and best.reward.total == pytest.approx(max(totals))
    assert best.text == written[totals.index(max(totals))].action
    assert replier.reply([HISTORY], decoding)[0].text == best.text  # the seed makes it reproducible


def test_step_beam_writes_complete_turns_for_every_dialogue(replier):
    histories = [HISTORY, (Turn("customer", "Someone used my card!"),)]
    turns = replier.reply(histories, Decoding("beam", n=3, beam_width=2, temperature=2.0))
    assert len(turns) == 2
    for turn in turns:
        assert 1 <= turn.candidates <= 3 * 2 * 3 + 3  # deduplicated: at most n, then width × n at each step
        assert turn.reward.total == pytest.approx(sum(turn.reward.weighted.values()))
    greedy = replier.reply([HISTORY], Decoding("beam", n=1, beam_width=1, temperature=1e-4))[0]
    assert greedy.reply == "Sunny all day in Detroit." and greedy.search == "weather Detroit"


def test_step_states():
    assert INTENT_LINE.fullmatch("intent: weather\n")
    assert _state("intent: weather\n", "stop", "start") == "intent"
    assert _state("search: weather Detroit\n", "stop", "intent") == "search"
    assert _state("reply: ok", "eos", "intent") == "done"
    assert _state("intent: weather\n", "stop", "intent") == "done"  # only a turn's first line is its intent step


def test_bad_decodings_and_dialogues_are_refused(replier):
    with pytest.raises(ValueError, match="decoding method 'top_p'"):
        Decoding("top_p")
    with pytest.raises(ValueError, match="n=0"):
        Decoding("best_of_n", n=0)
    with pytest.raises(ValueError, match="temperature=0"):
        Decoding("beam", temperature=0)
    with pytest.raises(ValueError, match="dialogue 0: the customer has not said anything"):
        replier.reply([(Turn("agent", "Hello!"),)])


def test_a_trained_run_replies_with_its_kb_and_reward(debug_run):
    from csrl.dialogue.pipeline.runs import open_run

    folder, _, _ = debug_run
    replier = open_run(folder).replier("ppo")
    history = (Turn("customer", "Hi, I would like to check the weather tomorrow"),)
    turns = replier.reply([history, history], Decoding("best_of_n", n=2))
    assert [t.candidates for t in turns] == [2, 2]
    for turn in turns:
        assert set(turn.reward.components) >= {"intent", "retrieval", "satisfaction"}
        assert turn.reward.total == pytest.approx(sum(turn.reward.weighted.values()))
        assert all(doc.id in {d.id for d in replier.searcher.documents} for doc in turn.documents)
