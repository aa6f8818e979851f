import json
from collections import Counter

from csrl.data import star_tasks
from csrl.data.star import convert_dialogue, render_query


def test_star_corpus_counts(star_corpus):
    stats = star_corpus.stats()
    assert stats["intents"] == 24
    assert stats["conversations"] == 6028  # 6,652 dialogues less 624 that end before the wizard replies
    assert stats["skipped"] == {"count": 624, "reasons": {"turns: no agent turn": 624}}
    assert sum(stats["splits"].values()) == stats["conversations"]
    assert 0.75 < stats["splits"]["train"] / stats["conversations"] < 0.85
    assert stats["turns_by_role"]["tool"] > 20_000
    assert stats["kb_documents"] > 8_000


def test_star_intents_are_the_24_tasks(star_corpus):
    assert len(star_tasks()) == 24
    assert set(star_corpus.intents) == set(star_tasks())
    assert Counter(c.intent for c in star_corpus.conversations)["bank_fraud_report"] > 300


def test_star_tool_results_are_kb_documents(star_corpus):
    kb_ids = {d.id for d in star_corpus.knowledge_base}
    results = [d for c in star_corpus.conversations for t in c.turns for d in t.results]
    assert results and all(d.id in kb_ids for d in results)
    procedure = next(d for d in star_corpus.knowledge_base if d.id == "star-task-bank_fraud_report")
    assert "Could I get your full name, please?" in procedure.text
    assert "Query" not in procedure.text  # the graph's bookkeeping nodes are not steps


def test_convert_dialogue_maps_events_and_drops_hidden_instructions():
    raw = {
        "DialogueID": 7,
        "CompletionLevel": "Complete",
        "Scenario": {"WizardCapabilities": [{"Task": "weather"}, {"Task": "bank_balance"}]},
        "UserQuestionnaire": [{"Question": "Did the assistant stay calm and helpful throughout?", "Answer": False}],
        "Events": [
            {"Agent": "UserGuide", "Action": "instruct", "Text": "Be rude."},
            {"Agent": "User", "Action": "utter", "Text": " Weather in Detroit? "},
            {"Agent": "Wizard", "Action": "request_suggestions", "Text": "draft"},
            {"Agent": "Wizard", "Action": "select_task", "Task": "weather"},
            {"Agent": "Wizard", "Action": "pick_suggestion", "ActionLabel": "weather_ask_day", "Text": "What day?"},
            {"Agent": "User", "Action": "utter", "Text": "Tuesday"},
            {
                "Agent": "Wizard",
                "Action": "query",
                "APIName": "weather",
                "Constraints": [
                    {"Day": '"Tuesday"'},
                    {"City": 'api.is_equal_to("Detroit")'},
                    {"TemperatureCelsius": "api.is_at_least(20)"},
                ],
            },
            {
                "Agent": "KnowledgeBase",
                "Action": "return_item",
                "Item": {"APIName": "weather", "City": "Detroit", "Day": "Tuesday", "Weather": "Sunny", "id": 3},
            },
            {"Agent": "Wizard", "Action": "utter", "Text": "Sunny all day."},
            {"Agent": "Wizard", "Action": "select_task", "Task": "bank_balance"},
            {"Agent": "Wizard", "Action": "utter", "Text": "Anything else?"},
            {"Agent": "User", "Action": "complete"},
        ],
    }
    conv = convert_dialogue(raw)
    assert conv.id == "star-7" and conv.intent == "weather"
    assert [(t.role, t.text, t.intent) for t in conv.turns if t.role != "tool"] == [
        ("customer", "Weather in Detroit?", None),
        ("agent", "What day?", "weather"),
        ("customer", "Tuesday", None),
        ("agent", "Sunny all day.", "weather"),
        ("agent", "Anything else?", "bank_balance"),
    ]
    tool = conv.turns[3]
    assert tool.role == "tool"
    assert tool.query == "weather Day=Tuesday City=Detroit TemperatureCelsius>=20"
    assert tool.results[0].text == "weather result. City: Detroit; Day: Tuesday; Weather: Sunny; id: 3."
    assert tool.results[0].id.startswith("star-kb-")
    assert (conv.outcome.satisfied, conv.outcome.completed) == (False, True)
    assert "Be rude" not in json.dumps(conv.to_dict())


def test_render_query_operators():
    constraints = [{"Cuisine": 'api.is_one_of(["Thai","Indian"])'}, {"Price": "api.is_less_than(30)"}, {"Open": "true"}]
    assert (
        render_query("restaurant_search", constraints)
        == "restaurant_search Cuisine one of Thai, Indian Price<30 Open=yes"
    )
