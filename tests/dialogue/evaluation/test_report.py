import base64
import re

import pytest

from csrl.dialogue.evaluation.report import paired_difference, stage_curves, summarize, write_report


def _episode(policy, rewards, cid="c1"):
    return {
        "policy": policy,
        "conversation_id": cid,
        "intent": "bank_fraud_report",
        "terminated": True,
        "turns": [
            {
                "customer": ["Someone used my card <b>!</b> Ünïcödé"],
                "intent": "bank_fraud_report",
                "search": "fraud" if i == 0 else None,
                "reply": f"reply {i} & more",
                "reward": r,
                "components": {"intent": 1.0, "retrieval": r, "satisfaction": 0.5},
            }
            for i, r in enumerate(rewards)
        ],
    }


def test_summarize_mean_and_normal_ci_over_episode_means():
    result = summarize([_episode("ppo", [0.2, 0.4]), _episode("ppo", [0.6])])
    assert result["reward"] == pytest.approx(0.45)
    half = 1.96 * 0.21213203 / 2**0.5  # std of (0.3, 0.6) with ddof=1, over sqrt(2)
    assert result["ci95"] == pytest.approx([0.45 - half, 0.45 + half], abs=1e-4)
    assert result["n"] == 2


def test_paired_difference_cancels_what_the_conversations_share():
    # each conversation has its own level; the agent is always 0.1 better: a zero-width interval
    base = [_episode("sft", [level]) for level in (0.1, 0.5, 0.9)]
    better = [_episode("ppo", [level + 0.1]) for level in (0.1, 0.5, 0.9)]
    for a, b, name in zip(better, base, "xyz", strict=True):
        a["conversation_id"] = b["conversation_id"] = name
    result = paired_difference(better, base)
    assert result["difference"] == pytest.approx(0.1) and result["ci95"] == pytest.approx([0.1, 0.1], abs=1e-4)
    assert result["n"] == 3
    assert summarize(better)["ci95"][0] < summarize(base)["ci95"][1], "unpaired intervals overlap here"
    better[1]["conversation_id"] = "other"
    with pytest.raises(ValueError, match="episode 1 is conversation 'other' for one agent and 'y' for the other"):
        paired_difference(better, base)
    with pytest.raises(ValueError, match="must match one to one, got 2 and 3"):
        paired_difference(better[:2], base)


def test_stage_curves_average_per_turn_index():
    curves = stage_curves([_episode("ppo", [0.2, 0.4]), _episode("ppo", [0.6])])
    assert curves["retrieval"] == {"mean": [0.4, 0.4], "n": [2, 1]}


def test_report_is_self_contained_html_with_plots_and_escaped_text(tmp_path):
    path = write_report([_episode("ppo", [0.2, 0.4]), _episode("human", [0.6, 0.7], "c2")], tmp_path / "r.html")
    page = path.read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    assert "&lt;b&gt;!&lt;/b&gt; Ünïcödé" in page and "<b>!</b>" not in page
    assert "reply 1 &amp; more" in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched


def test_report_without_episodes_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no episodes to report"):
        write_report([], tmp_path / "r.html")
