"""Intent discovery: clusters of real customer messages, their names, the editable intents.json, the metrics."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from csrl.rewards.discovery import (
    Discovery,
    assign_intents,
    cluster_embeddings,
    cluster_metrics,
    discover_intents,
    k_grid,
    read_intents_json,
    validate_intents,
    write_intents_json,
)
from csrl.rewards.intent_names import cluster_keywords, intent_names, snake_case

LOST_CARD = [
    "I lost my card, can you block it?",
    "My debit card was stolen yesterday",
    "Someone stole my wallet with my bank card in it",
    "I can't find my card anywhere, please freeze it",
    "My credit card is missing, I think I lost it on the train",
    "Please cancel my card, it was stolen",
    "I think my card got stolen at the bar last night",
    "Lost my card while travelling, what should I do?",
    "Block my card please, I have lost it",
    "My card has been stolen and I need a new one",
    "I dropped my card somewhere and can't find it",
    "Help, my bank card is lost",
]
REFUND = [
    "I want a refund for the shoes I returned",
    "When will I get my money back for the returned order?",
    "The item arrived broken, I want my money refunded",
    "I sent the jacket back two weeks ago and still no refund",
    "How long does a refund take after returning an item?",
    "Please refund my order, the package never came",
    "I returned the headphones, where is my refund?",
    "Can I get a refund for a damaged product?",
    "My refund has not arrived yet for the return",
    "I would like to return this dress and get a refund",
    "Still waiting for the refund of my returned laptop",
    "Refund me for the wrong size I sent back",
]
PASSWORD = [
    "I forgot my password and can't log in",
    "How do I reset my password?",
    "The password reset email never arrives",
    "I'm locked out of my account after too many login attempts",
    "Can't sign in, it says my password is wrong",
    "Please help me change my account password",
    "My login doesn't work since I changed my password",
    "I need a new password, I can't remember mine",
    "The reset password link has expired",
    "I keep getting 'incorrect password' when I log in",
    "How can I recover my account if I forgot the password?",
    "Reset my login password please",
]
TEXTS = LOST_CARD + REFUND + PASSWORD
GOLD = ["lost_card"] * len(LOST_CARD) + ["refund"] * len(REFUND) + ["password"] * len(PASSWORD)
SNAKE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")


@pytest.fixture(scope="module")
def discovery(encoder):
    return discover_intents(TEXTS, encoder, max_intents=10, seed=0)


# ---------------------------------------------------------------------------------------------- clustering


def test_three_kinds_of_customer_messages_are_recovered(discovery):
    scores = cluster_metrics(GOLD, discovery.labels)
    assert discovery.k == 3, discovery.selection
    assert scores["ACC"] >= 0.9 and scores["ARI"] >= 0.75 and scores["F1"] >= 0.9, scores


def test_discovery_is_the_same_for_the_same_seed(encoder, discovery):
    again = discover_intents(TEXTS, encoder, max_intents=10, seed=0)
    assert again.labels == discovery.labels and again.intents == discovery.intents


def test_intents_are_named_from_their_own_words(discovery):
    names = [intent["name"] for intent in discovery.intents]
    assert len(set(names)) == len(names)
    for i, intent in enumerate(discovery.intents):
        assert SNAKE.match(intent["name"]), intent["name"]
        words = {
            w for j in np.flatnonzero(np.array(discovery.labels) == i) for w in re.findall(r"\w+", TEXTS[j].lower())
        }
        assert set(intent["name"].split("_")) <= words, (intent["name"], sorted(words))
        assert intent["keywords"] and intent["description"].startswith(intent["keywords"][0])
        assert intent["size"] == discovery.labels.count(i)
        members = {TEXTS[j] for j in np.flatnonzero(np.array(discovery.labels) == i)}
        assert 1 <= len(intent["examples"]) <= 5 and set(intent["examples"]) <= members
    by_gold = {}
    for label, gold in zip(discovery.labels, GOLD, strict=True):
        by_gold.setdefault(gold, []).append(discovery.name_of(label))
    lost, refund, password = (
        max(set(v), key=v.count) for v in (by_gold["lost_card"], by_gold["refund"], by_gold["password"])
    )
    assert "card" in lost and "refund" in refund and "password" in password, (lost, refund, password)


def test_intents_are_numbered_largest_first(discovery):
    sizes = [intent["size"] for intent in discovery.intents]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == len(TEXTS)
    assert discovery.names() == [discovery.name_of(i) for i in discovery.labels]


@pytest.mark.parametrize(("min_intents", "max_intents"), [(4, 6), (2, 2), (5, 5)])
def test_k_respects_the_bounds(encoder, min_intents, max_intents):
    found = discover_intents(TEXTS, encoder, min_intents=min_intents, max_intents=max_intents, min_size=3)
    assert min_intents <= found.k <= max_intents
    assert all(min_intents <= s["k"] <= max_intents for s in found.selection)


def test_min_size_caps_k_and_small_clusters_are_folded(encoder):
    found = discover_intents(TEXTS, encoder, min_intents=2, max_intents=30, min_size=10)
    assert found.k <= len(TEXTS) // 10 and min(i["size"] for i in found.intents) >= 10


def test_impossible_bounds_say_which_to_change(encoder):
    with pytest.raises(ValueError, match="cannot make 5 intents of at least 10 texts"):
        discover_intents(TEXTS, encoder, min_intents=5, max_intents=8, min_size=10)
    with pytest.raises(ValueError, match="min_intents=4 > max_intents=3"):
        discover_intents(TEXTS, encoder, min_intents=4, max_intents=3)
    with pytest.raises(ValueError, match="max_intents=0"):
        discover_intents(TEXTS, encoder, max_intents=0)
    with pytest.raises(ValueError, match="0 texts"):
        discover_intents([], encoder)
    with pytest.raises(TypeError, match="not a single string"):
        discover_intents("I lost my card", encoder)


def test_identical_texts_make_one_intent_when_allowed():
    embeddings = np.tile(np.eye(4, dtype=np.float32)[:1], (8, 1))
    labels, _ = cluster_embeddings(embeddings, min_intents=1, max_intents=5, min_size=2)
    assert labels.tolist() == [0] * 8
    with pytest.raises(ValueError, match="1 distinct"):
        cluster_embeddings(embeddings, min_intents=2, max_intents=5, min_size=2)


def test_k_grid_is_geometric_between_the_bounds():
    assert k_grid(2, 12) == [2, 3, 4, 5, 6, 7, 9, 10, 12]
    assert k_grid(5, 5) == [5]
    grid = k_grid(2, 200)
    assert grid[0] == 2 and grid[-1] == 200 and all(b / a < 1.5 for a, b in zip(grid[3:], grid[4:], strict=False))


# ---------------------------------------------------------------------------------------------- naming


def test_c_tf_idf_ranks_a_clusters_own_words_first():
    texts = ["card lost", "lost card again", "card stolen", "refund please", "refund late", "late refund again"]
    keywords = cluster_keywords(texts, [0, 0, 0, 1, 1, 1], 2, top=2)
    assert keywords == [["card", "lost"], ["refund", "late"]]  # "again" is in both: it ranks lower
    assert cluster_keywords(["is it", "the a"], [0, 1], 2) == [[], []]
    with pytest.raises(ValueError, match="one cluster label per text"):
        cluster_keywords(texts, [0, 1], 2)


@pytest.mark.parametrize(
    ("keywords", "expected"),
    [
        ([["card", "card arrive", "arrive"]], ["card_arrive"]),
        ([["exchange rate", "rate", "exchange", "fee"]], ["exchange_rate_fee"]),
        ([["pin"], ["pin", "change"], ["pin"]], ["pin", "pin_change", "pin_2"]),
        ([["Top-up", "failed"], []], ["top_up_failed", "intent_2"]),
    ],
)
def test_names_are_unique_snake_case(keywords, expected):
    assert intent_names(keywords) == expected


def test_snake_case():
    assert snake_case(" Card ARRIVAL ") == "card_arrival"


# ---------------------------------------------------------------------------------------------- intents.json


def test_intents_json_round_trip(discovery, tmp_path):
    path = write_intents_json(discovery, tmp_path / "intents.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert list(raw) == ["intents"] and all(
        list(e) == ["name", "description", "size", "examples"] for e in raw["intents"]
    )
    assert read_intents_json(path) == discovery.to_dict()["intents"]
    assert json.loads(discovery.to_json()) == raw


def test_the_discovered_intents_label_the_logs(encoder, discovery):
    assert assign_intents(TEXTS, discovery.intents, encoder) == discovery.names()


def test_a_hand_edited_file_reads_and_assigns(encoder, discovery, tmp_path):
    """Rename the card intent, merge refund into password (one entry, both's examples), delete nothing else."""
    by_gold = {g: discovery.name_of(label) for label, g in zip(discovery.labels, GOLD, strict=True)}
    entries = {e["name"]: e for e in discovery.to_dict()["intents"]}
    card, refund, password = entries[by_gold["lost_card"]], entries[by_gold["refund"]], entries[by_gold["password"]]
    edited = {"intents": [
        {**card, "name": "report_lost_card"},
        {"name": "account_or_refund", "description": "refunds and passwords",
         "examples": refund["examples"] + password["examples"]},
    ]}  # fmt: skip
    path = tmp_path / "intents.json"
    path.write_text(json.dumps(edited, indent=2), encoding="utf-8")
    intents = read_intents_json(path)
    assert [i["name"] for i in intents] == ["report_lost_card", "account_or_refund"]
    assert intents[1]["size"] == len(refund["examples"] + password["examples"])  # no size given: its examples
    assigned = assign_intents(TEXTS, intents, encoder)
    expected = ["report_lost_card"] * len(LOST_CARD) + ["account_or_refund"] * (len(REFUND) + len(PASSWORD))
    assert np.mean([a == b for a, b in zip(assigned, expected, strict=True)]) >= 0.9


def test_a_deleted_intent_sends_its_texts_to_the_nearest_kept_one(encoder, discovery):
    by_gold = {g: discovery.name_of(label) for label, g in zip(discovery.labels, GOLD, strict=True)}
    kept = [i for i in discovery.intents if i["name"] != by_gold["password"]]
    assigned = assign_intents(LOST_CARD + REFUND, kept, encoder)
    assert set(assigned) <= {i["name"] for i in kept}
    expected = [by_gold["lost_card"]] * len(LOST_CARD) + [by_gold["refund"]] * len(REFUND)
    assert np.mean([a == b for a, b in zip(assigned, expected, strict=True)]) >= 0.9


def test_a_names_only_file_labels_zero_shot(encoder, tmp_path):
    path = tmp_path / "intents.json"
    path.write_text(json.dumps({"intents": [
        {"name": "lost_or_stolen_card", "description": "the customer's bank card was lost or stolen"},
        {"name": "refund_request", "description": "money back for a returned or faulty order"},
        {"name": "password_reset", "description": "cannot log in, forgot or reset the password"},
    ]}), encoding="utf-8")  # fmt: skip
    intents = read_intents_json(path)
    assert [i["examples"] for i in intents] == [[], [], []] and [i["size"] for i in intents] == [0, 0, 0]
    assigned = assign_intents(TEXTS, intents, encoder)
    mapping = {"lost_card": "lost_or_stolen_card", "refund": "refund_request", "password": "password_reset"}
    assert np.mean([a == mapping[g] for a, g in zip(assigned, GOLD, strict=True)]) >= 0.9
    assert assign_intents([], intents, encoder) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"intents": [{"name": "a"}, {"name": "b"}, {"name": "a"}]},
            r'intents\[2\]\.name: "a" is also the name of intents\[0\]',
        ),
        ({"intents": [{"name": "a"}, {"description": "no name"}]}, r"intents\[1\]\.name: missing"),
        ({"intents": [{"name": "  "}]}, r"intents\[0\]\.name: expected a non-empty one-line string"),
        ({"intents": [{"name": 7}]}, r"intents\[0\]\.name: expected a non-empty one-line string, got 7"),
        ({"intents": {"name": "a"}}, r"intents: expected a list of intents, got dict"),
        ({"intents": "a, b"}, r"intents: expected a list of intents, got str"),
        ({"intents": []}, r"the list is empty"),
        ({"intent": []}, r'expected \{"intents": \[\.\.\.\]\}'),
        ("just text", r"intents: expected a list of intents, got str"),
        ({"intents": ["refund"]}, r'intents\[0\]: expected an object with a "name", got str'),
        ({"intents": [{"name": "a", "exampels": ["x"]}]}, r"intents\[0\]: unknown field 'exampels'"),
        ({"intents": [{"name": "a", "examples": "x"}]}, r"intents\[0\]\.examples: expected a list of strings, got str"),
        (
            {"intents": [{"name": "a", "examples": ["x", 3]}]},
            r"intents\[0\]\.examples\[1\]: expected a non-empty string",
        ),
        ({"intents": [{"name": "a", "description": ["x"]}]}, r"intents\[0\]\.description: expected a string, got list"),
        ({"intents": [{"name": "a", "size": -1}]}, r"intents\[0\]\.size: expected a count"),
    ],
)
def test_bad_files_say_which_entry_and_field(tmp_path, content, message):
    path = tmp_path / "intents.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        read_intents_json(path)
    assert str(path) in str(info.value)


def test_a_file_that_is_not_json_says_where(tmp_path):
    path = tmp_path / "intents.json"
    path.write_text('{"intents": [{"name": "a",}]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"not valid JSON \(line 1, column 27"):
        read_intents_json(path)


def test_a_bare_list_and_null_fields_are_accepted():
    assert validate_intents([{"name": " a ", "description": None, "examples": None}]) == [
        {"name": "a", "description": "", "size": 0, "examples": []}
    ]


# ---------------------------------------------------------------------------------------------- metrics


def test_cluster_metrics_on_a_hand_computed_table():
    """Clusters (rows) x gold (columns a, b, c): cluster 1 = [2, 0, 0], cluster 2 = [1, 2, 1]; n = 6."""
    gold = ["a", "a", "a", "b", "b", "c"]
    predicted = [1, 1, 2, 2, 2, 2]
    scores = cluster_metrics(gold, predicted)
    # ACC: 1 -> a (2), 2 -> b (2): 4/6. P: majorities of the clusters 2 + 2. R: majorities of a, b, c 2 + 2 + 1
    assert scores["ACC"] == pytest.approx(4 / 6) and scores["P"] == pytest.approx(4 / 6)
    assert scores["R"] == pytest.approx(5 / 6) and scores["F1"] == pytest.approx(20 / 27)
    # ARI: sum C(n_ij, 2) = 2, rows C(2,2) + C(4,2) = 7, columns C(3,2) + C(2,2) = 4, pairs 15
    expected_index = 7 * 4 / 15
    assert scores["ARI"] == pytest.approx((2 - expected_index) / ((7 + 4) / 2 - expected_index))
    mutual = math.log(2) / 6 + math.log(1.5) / 2  # sum p_ij log(p_ij / (p_i p_j))
    h_gold = -(0.5 * math.log(0.5) + math.log(1 / 3) / 3 + math.log(1 / 6) / 6)
    h_pred = -(math.log(1 / 3) / 3 + 2 / 3 * math.log(2 / 3))
    assert scores["NMI"] == pytest.approx(mutual / ((h_gold + h_pred) / 2))
    assert (scores["K"], scores["K_gold"]) == (2, 3)


@pytest.mark.parametrize(
    ("gold", "predicted", "expected"),
    [
        (
            ["a", "a", "b", "b"],
            ["x", "x", "y", "y"],
            {"ACC": 1.0, "P": 1.0, "R": 1.0, "F1": 1.0, "ARI": 1.0, "NMI": 1.0},
        ),
        (["a", "a", "b", "b"], [0, 0, 0, 0], {"ACC": 0.5, "P": 0.5, "R": 1.0, "ARI": 0.0, "NMI": 0.0}),
        (["a", "b", "c", "d"], [0, 0, 1, 1], {"ACC": 0.5, "P": 0.5, "R": 1.0}),
        ([1, 1, 2], ["b", "a", "a"], {"ACC": 2 / 3, "P": 2 / 3, "R": 2 / 3}),  # labels of any hashable type
    ],
)
def test_cluster_metrics_table(gold, predicted, expected):
    scores = cluster_metrics(gold, predicted)
    assert {key: scores[key] for key in expected} == pytest.approx(expected)


def test_cluster_metrics_edge_cases():
    assert all(math.isnan(v) for k, v in cluster_metrics([], []).items() if k not in ("K", "K_gold"))
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        cluster_metrics(["a", "b"], [0])


def test_discovery_object_without_an_encoder():
    found = Discovery(labels=[0, 1, 0], intents=[
        {"name": "a", "description": "x", "size": 2, "examples": ["p"], "keywords": ["x"]},
        {"name": "b", "description": "y", "size": 1, "examples": ["q"], "keywords": ["y"]},
    ])  # fmt: skip
    assert found.k == 2 and found.names() == ["a", "b", "a"] and found.name_of(np.int64(1)) == "b"
    assert found.to_dict() == {"intents": [
        {"name": "a", "description": "x", "size": 2, "examples": ["p"]},
        {"name": "b", "description": "y", "size": 1, "examples": ["q"]},
    ]}  # fmt: skip


def test_few_texts_get_a_smaller_default_min_size(encoder):
    few = LOST_CARD[:4] + REFUND[:4]
    found = discover_intents(few, encoder, max_intents=10)
    assert found.k == 2 and cluster_metrics(GOLD[:4] + GOLD[12:16], found.labels)["ACC"] == 1.0


def test_names_leave_out_numbers_and_ids():
    keywords = cluster_keywords(["cancel order 00123842", "cancel my order 4432 now", "invoice 85632", "invoice 00108"],
                                [0, 0, 1, 1], 2)  # fmt: skip
    assert keywords == [["cancel", "cancel order", "order"], ["invoice"]]
