"""The real server on a loopback port, called over HTTP."""

import json
import threading

import httpx
import pytest
from support import serve_app

from csrl.data import KBDocument
from csrl.dialogue.serving.scoring import TurnScorer, score_file
from csrl.dialogue.serving.server import create_app
from csrl.rewards.composite import CompositeReward
from csrl.rewards.rules import FormatReward, LengthReward

KB = [KBDocument("kb-hours", "We are open 9 to 5.", "hours", "store_hours")]
INTENTS = {"store_hours", "bank_fraud_report"}


class KnowledgeCount:
    """Test component: how many knowledge documents the turn used (checks id resolution)."""

    def score(self, contexts):
        return [float(len(c.knowledge or ())) for c in contexts]


def _scorer():
    reward = CompositeReward(
        {"format": FormatReward(), "length": LengthReward(), "knowledge": KnowledgeCount()},
        {"format": 0.5, "length": 0.5, "knowledge": 0.0},
    )
    return TurnScorer(reward, KB, INTENTS)


@pytest.fixture(scope="module")
def server():
    with serve_app(create_app(_scorer(), run_name="test", max_body_bytes=20_000, token=None)) as url:
        yield url


TURN = {
    "history": [{"role": "customer", "text": "When are you open?"}],
    "reply": "We are open 9 to 5.",
    "intent": "store_hours",
}


def test_good_batch(server):
    turns = [TURN, {**TURN, "id": 7, "reply": "", "intent": None, "knowledge": ["kb-hours", "free text"]}]
    r = httpx.post(f"{server}/v1/score", json={"turns": turns})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["reward"] == pytest.approx(1.0)
    assert first["components"] == {"format": 1.0, "length": 1.0, "knowledge": 0.0}
    assert second["id"] == 7 and second["components"]["format"] == 0.0 and second["components"]["knowledge"] == 2.0


def test_non_ascii_round_trips(server):
    turn = {
        "history": [{"role": "customer", "text": "Où est ma carte ? 你好 💳"}],
        "reply": "Votre carte arrive bientôt 😀",
    }
    r = httpx.post(f"{server}/v1/score", json={"turns": [turn]})
    assert r.status_code == 200
    assert r.json()["results"][0]["components"]["length"] == 1.0


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "body is not valid JSON"),
        (json.dumps({"turns": []}), 422, "field 'turns': List should have at least 1 item after validation, not 0"),
        (json.dumps({"turns": [{"reply": "hi"}]}), 422, "field 'turns[0].history': Field required"),
        (
            json.dumps({"turns": [{**TURN, "reply": 5}]}),
            422,
            "field 'turns[0].reply': Input should be a valid string",
        ),
        (
            json.dumps({"turns": [{**TURN, "history": [{"role": "bot", "text": "x"}]}]}),
            422,
            "field 'turns[0].history[0].role': Input should be 'customer' or 'agent'",
        ),
        (
            json.dumps({"turns": [{**TURN, "history": [{"role": "agent", "text": "Hi"}]}]}),
            422,
            "field 'turns[0].history': needs at least one customer message",
        ),
        (json.dumps({"turns": [{**TURN, "intent": "pizza"}]}), 422, "turns[0]: field 'intent': unknown intent 'pizza'"),
        (
            json.dumps({"turns": [{**TURN, "colour": "red"}]}),
            422,
            "field 'turns[0].colour': Extra inputs are not permitted",
        ),
        (json.dumps({"turns": [TURN] * 400}), 413, "over the limit of 20000 bytes"),
    ],
)
def test_bad_requests_get_clear_4xx(server, body, status, message):
    r = httpx.post(f"{server}/v1/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_health_and_openapi(server):
    health = httpx.get(f"{server}/healthz").json()
    assert health["status"] == "ok" and health["components"] == ["format", "knowledge", "length"]
    schema = httpx.get(f"{server}/openapi.json").json()
    assert "/v1/score" in schema["paths"]
    assert "TurnInput" in json.dumps(schema["components"]["schemas"])
    assert httpx.get(f"{server}/nope").json() == {"error": "Not Found"}


def test_concurrent_requests_are_batched(server):
    before = httpx.get(f"{server}/healthz").json()["batches_scored"]
    results = [None] * 16

    def call(i):
        results[i] = httpx.post(f"{server}/v1/score", json={"turns": [{**TURN, "id": i}]}, timeout=30)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 and r.json()["results"][0]["id"] == i for i, r in enumerate(results))
    batches = httpx.get(f"{server}/healthz").json()["batches_scored"] - before
    assert batches < 16


def test_bearer_token():
    app = create_app(_scorer(), token="s3cret")
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.post("/v1/score", json={"turns": [TURN]}).status_code == 401
        ok = client.post("/v1/score", json={"turns": [TURN]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_score_file_reports_bad_lines_and_scores_the_rest(tmp_path):
    source = tmp_path / "turns.jsonl"
    source.write_bytes(
        json.dumps(TURN).encode()
        + b"\n"
        + b"{oops\n"
        + json.dumps({**TURN, "intent": "pizza"}).encode()
        + b"\n\n"
        + json.dumps({"history": [], "reply": "x"}).encode()
        + b"\n"
        + json.dumps({**TURN, "id": "last"}).encode()
        + b"\n"
    )
    out_path = tmp_path / "scores.jsonl"
    with open(out_path, "w") as out:
        scored, problems = score_file(_scorer(), source, out)
    assert scored == 2
    assert problems[0].startswith(f"{source}:2: Invalid JSON")
    assert problems[1].startswith(f"{source}:3: field 'intent': unknown intent 'pizza'")
    assert problems[2] == f"{source}:5: field 'history': List should have at least 1 item after validation, not 0"
    results = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert [r["id"] for r in results] == [None, "last"]
