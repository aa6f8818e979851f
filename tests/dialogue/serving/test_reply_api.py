"""POST /v1/reply and the chat page, on the real server over loopback HTTP, with a taught tiny policy."""

import json
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from support import SUNNY, serve_app, stage_reward, taught_replier

from csrl.dialogue.serving.reply_api import DialogueInput, ReplyService
from csrl.dialogue.serving.scoring import TurnScorer
from csrl.dialogue.serving.server import create_app

CUSTOMER = {"role": "customer", "text": "Weather in Detroit?"}


@pytest.fixture(scope="module")
def replies(one_thread):
    return ReplyService(taught_replier(), [SUNNY])


def _app(replies, **options):
    return create_app(TurnScorer(stage_reward(), [SUNNY], {"weather"}), replies=replies, **options)


@pytest.fixture(scope="module")
def server(replies):
    with serve_app(_app(replies, max_body_bytes=20_000)) as url:
        yield url


def test_greedy_reply_over_http(server):
    r = httpx.post(f"{server}/v1/reply", json={"dialogues": [{"id": "d1", "history": [CUSTOMER]}]}, timeout=60)
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert (result["id"], result["intent"], result["search"]) == ("d1", "weather", "weather Detroit")
    assert result["reply"] == "Sunny all day in Detroit."
    assert result["documents"] == [{"id": "k-sunny", "title": "weather", "text": "sunny"}]
    assert "\nresults: [1] weather: sunny\nreply: " in result["text"]
    assert result["candidates"] == 1
    assert result["reward"] == pytest.approx(sum(result["weighted"].values()))
    assert set(result["components"]) == {"intent", "retrieval", "satisfaction"}


def test_best_of_n_and_an_earlier_turns_knowledge(server):
    history = [CUSTOMER, {"role": "agent", "text": "Sunny.", "knowledge": ["k-sunny"]}, CUSTOMER]
    body = {"dialogues": [{"history": history}, {"history": [CUSTOMER]}], "decoding": {"method": "best_of_n", "n": 3}}
    r = httpx.post(f"{server}/v1/reply", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert [result["candidates"] for result in r.json()["results"]] == [3, 3]
    again = httpx.post(f"{server}/v1/reply", json=body, timeout=60).json()
    assert again == r.json()  # seeded: the same request gets the same turns


def test_an_agent_messages_knowledge_is_the_lookup_before_it(replies):
    dialogue = DialogueInput.model_validate(
        {"history": [CUSTOMER, {"role": "agent", "text": "Sunny.", "knowledge": ["k-sunny"]}]}
    )
    turns = replies.history(dialogue)
    assert [t.role for t in turns] == ["customer", "tool", "agent"]
    assert turns[1].results == (SUNNY,)
    prompt = replies.replier.prompts([turns])[0]
    assert prompt == "customer: Weather in Detroit?\nresults: [1] weather: sunny\nagent: Sunny.\nagent:\n"


def _body(decoding=None, **dialogue):
    body = {"dialogues": [{"history": [CUSTOMER], **dialogue}]}
    return json.dumps({**body, "decoding": decoding} if decoding else body)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{oops", 400, "body is not valid JSON"),
        (json.dumps({"dialogues": []}), 422, "field 'dialogues': List should have at least 1 item"),
        (_body(history=[{"role": "agent", "text": "Hi"}]), 422, "field 'dialogues[0].history': needs at least one"),
        (_body({"method": "top_p"}), 422, "field 'decoding.method': Input should be 'greedy', 'sampled', 'best_of_n'"),
        (_body({"method": "sampled", "temperature": 0}), 422, "field 'decoding.temperature': Input should be greater"),
        (_body({"method": "best_of_n", "n": 65}), 422, "field 'decoding.n': Input should be less than or equal to 64"),
        (
            json.dumps({"dialogues": [{"history": [CUSTOMER]}] * 9, "decoding": {"method": "best_of_n", "n": 8}}),
            422,
            "9 dialogue(s) x 8 sampled turns = 72 candidates: at most 64 a request",
        ),
        (
            _body(history=[{**CUSTOMER, "knowledge": ["k-sunny"]}]),
            422,
            "field 'dialogues[0].history[0]': only agent messages carry knowledge",
        ),
        (
            _body(history=[CUSTOMER, {"role": "agent", "text": "Hm.", "knowledge": ["k-rain"]}]),
            422,
            "dialogues[0]: field 'history[1].knowledge': unknown knowledge-base id 'k-rain'",
        ),
        (_body(colour="red"), 422, "field 'dialogues[0].colour': Extra inputs are not permitted"),
        (_body(history=[{"role": "customer", "text": "x" * 3000}] * 8), 413, "over the limit of 20000 bytes"),
    ],
)
def test_bad_requests_get_clear_4xx(server, body, status, message):
    r = httpx.post(f"{server}/v1/reply", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_concurrent_dialogues_share_generations(server):
    before = httpx.get(f"{server}/healthz").json()["batches_replied"]
    results = [None] * 6

    def call(i):
        body = {"dialogues": [{"id": i, "history": [CUSTOMER]}]}
        results[i] = httpx.post(f"{server}/v1/reply", json=body, timeout=60)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 and r.json()["results"][0]["id"] == i for i, r in enumerate(results))
    assert all(r.json()["results"][0]["reply"] == "Sunny all day in Detroit." for r in results)
    assert httpx.get(f"{server}/healthz").json()["batches_replied"] - before < 6


def test_the_chat_page_and_the_schema(server):
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>csrl chat</title>" in page.text and 'fetch("/v1/reply"' in page.text
    schema = httpx.get(f"{server}/openapi.json").json()
    assert "/v1/reply" in schema["paths"] and "ReplyResult" in schema["components"]["schemas"]


def test_token_and_a_server_without_a_policy(replies):
    with TestClient(_app(replies, token="s3cret")) as client:
        body = {"dialogues": [{"history": [CUSTOMER]}]}
        assert client.post("/v1/reply", json=body).status_code == 401
        assert client.post("/v1/reply", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    with TestClient(_app(None)) as client:
        r = client.post("/v1/reply", json={"dialogues": [{"history": [CUSTOMER]}]})
        assert r.status_code == 404 and "start it with --policy ppo" in r.json()["error"]
        assert client.get("/").status_code == 404
        assert client.get("/healthz").json()["policy"] is False
