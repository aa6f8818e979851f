"""``csrl chat``: the session and its commands with a taught tiny policy, and the real CLI through a pseudo-terminal."""

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import SUNNY, taught_replier

from csrl.dialogue.serving.chat import ChatSession, chat_loop
from csrl.dialogue.serving.reply import Decoding


@pytest.fixture(scope="module")
def session(one_thread):
    return ChatSession(taught_replier())


def _converse(session, lines):
    """Run the chat loop on scripted input; returns the exit status and everything it wrote."""
    script, written = iter(lines), []

    def read(prompt):
        written.append(prompt)
        try:
            return next(script)
        except StopIteration:
            raise EOFError from None

    return chat_loop(session, read, written.append), "\n".join(written)


def test_a_conversation_shows_each_turns_process_and_scores(session):
    session.reset()
    status, shown = _converse(session, ["Weather in Detroit?", "", "And tomorrow?", "/quit", "never read"])
    assert status == 0
    first, blank, second = shown.split("customer: ")[1:4]  # what follows each prompt (the blank line: nothing)
    assert blank == "\n"
    assert first.endswith(
        "  intent: weather\n  search: weather Detroit\n    [1] k-sunny  weather: sunny\n"
        "agent: Sunny all day in Detroit.\n"
        "  reward 1.000 = intent 1.000 x 0.3 + retrieval 1.000 x 0.5 + satisfaction 1.000 x 0.2\n"
    )
    assert "\nagent: " in second and "  reward " in second  # the taught policy knows only the first moment
    # the history holds both turns as the environment keeps them: the lookup before the agent turn that made it
    assert [t.role for t in session.history[:3]] == ["customer", "tool", "agent"]
    assert session.history[1].results == (SUNNY,)
    assert session.history[3].text == "And tomorrow?" and session.history[-1].role == "agent"


def test_commands(session):
    status, shown = _converse(
        session, ["/decoding best_of_n 3", "/decoding top_p", "/decoding beam x", "/nope", "/reset", "/help"]
    )
    assert status == 0  # end of input leaves like /quit
    assert "(decoding: best_of_n (n=3, temperature 1.0))" in shown
    assert "error: /decoding METHOD [N]: METHOD is one of greedy, sampled, best_of_n, beam" in shown
    assert "error: /decoding beam N: N must be a whole number, not 'x'" in shown
    assert "unknown command '/nope'" in shown and "(new conversation)" in shown
    assert session.decoding == Decoding("best_of_n", n=3) and session.history == []
    with pytest.raises(ValueError, match="the message is empty"):
        session.say("  ")


def _read_prompts(fd, seen: bytearray, prompts: int, timeout: float = 120) -> None:
    """Read the terminal into ``seen`` until it has shown the customer prompt ``prompts`` times."""
    deadline = time.time() + timeout
    while seen.count(b"customer: ") < prompts:
        assert time.time() < deadline, f"waiting for prompt {prompts}: {bytes(seen)[-600:]!r}"
        if select.select([fd], [], [], 1)[0]:
            seen += os.read(fd, 4096)


def test_csrl_chat_in_a_pseudo_terminal(debug_run):
    folder, _, _ = debug_run
    csrl = Path(sys.executable).parent / "csrl"
    main, child = pty.openpty()
    process = subprocess.Popen([str(csrl), "chat", "--run", str(folder), "--decoding", "best_of_n", "--n", "2"],
                               stdin=child, stdout=child, stderr=child, close_fds=True)  # fmt: skip
    os.close(child)
    seen = bytearray()
    try:
        _read_prompts(main, seen, 1)
        assert b"csrl chat: best_of_n (n=2, temperature 1.0)" in seen
        for shown, message in enumerate((b"Hi, what will the weather be tomorrow?", b"In Boston please"), start=2):
            os.write(main, message + b"\n")  # the terminal echoes it; the agent's turn, then the next prompt
            _read_prompts(main, seen, shown)
        os.write(main, b"/quit\n")
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        os.close(main)
    turns = bytes(seen).decode("utf-8", "replace").split("customer: ")
    answered = [t for t in turns if "\nagent: " in t.replace("\r\n", "\n")]
    assert len(answered) == 2, turns
    for turn in answered:
        assert "  intent: " in turn and "  reward " in turn and "(best of 2 candidate turns)" in turn
