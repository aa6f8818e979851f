r"""The agent turn as a process, seen from the policy: prompts, the search pause, and SFT examples from the logs.

The text format itself (``intent:`` / ``search:`` / ``results:`` / ``reply:``, the total parser, the
rendering of results and of the dialogue) is defined once, in :mod:`csrl.env.turn_format`, because the
environment needs it and may not import ``dialogue`` (imports go ``data`` ← ``rewards`` ← ``env`` ←
``dialogue``). This module builds on it with what only the policy needs:

- :func:`build_prompt`: the dialogue so far, as the environment's observation renders it, then the
  agent's turn start; the policy writes the process after it.
- :data:`SEARCH_PAUSE`: where generation pauses, right after the ``search:`` line's newline, so the
  rollout can insert :func:`results_text` and resume; :func:`cut_turn_end` where a turn ends.
- :func:`policy_segments`: a turn's text cut into the policy's own pieces and the environment's
  ``results:`` block (masked out of every loss).
- :func:`conversation_to_examples`: a logged conversation as prompt/completion SFT examples.

A logged turn with a lookup, written as a process:

>>> from csrl.data.schema import KBDocument, Conversation, Turn
>>> conv = Conversation(id="c1", intent="weather", turns=(
...     Turn("customer", "Weather in Detroit on Tuesday?"),
...     Turn("tool", query="weather City=Detroit Day=Tuesday",
...          results=(KBDocument("k1", "Sunny, 30 C.", "weather record"),)),
...     Turn("agent", "It will be sunny, 30 degrees.", intent="weather")))
>>> example = conversation_to_examples(conv)[0]
>>> print(example["prompt"] + example["completion"])
customer: Weather in Detroit on Tuesday?
agent:
intent: weather
search: weather City=Detroit Day=Tuesday
results: [1] weather record: Sunny, 30 C.
reply: It will be sunny, 30 degrees.
>>> [owner for _, owner in policy_segments(example["completion"])]
['policy', 'environment', 'policy']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from csrl.data.schema import Conversation, KBDocument, Turn
from csrl.env.turn_format import AGENT_TURN_START, KEYS, format_agent_turn, render_dialogue, render_results

# Generation pauses once the policy has finished its `search:` line: the rollout then runs the search and
# inserts `results_text(...)`. A regex, not a fixed string, because the query in between is the policy's.
SEARCH_PAUSE = re.compile(r"(?:^|\n)search:[^\n]*\n")
# A turn that starts writing the customer's (or a new agent) line has ended; stop there too.
TURN_END_STOPS = ("\ncustomer:", "\nagent:")
# Strings every tokenizer should see whole: the role prefixes and the process keys.
FORMAT_STRINGS = ("customer: ", "agent:\n", *(f"{key}: " for key in KEYS), "results: (nothing found)")
_RESULTS_BLOCK = re.compile(r"(?ms)^results:.*?(?=^(?:intent|search|reply):|\Z)")


def build_prompt(history: Sequence[Turn], char_budget: int | None = None) -> str:
    r"""The text the policy continues: the dialogue so far, then the start of the agent's turn.

    Args:
        history: the turns so far (customer, agent and tool turns), as the environment keeps them.
        char_budget: keep at most this many characters of dialogue (oldest lines dropped first).

    Returns:
        ``render_dialogue(history)`` followed by ``AGENT_TURN_START``; the same text for the same
        history as the environment's observation, so rollouts and SFT see one format.

    >>> build_prompt([Turn("customer", "Hi")])
    'customer: Hi\nagent:\n'
    >>> build_prompt([])
    'agent:\n'
    """
    dialogue = render_dialogue(history, char_budget)
    return (dialogue + "\n" if dialogue else "") + AGENT_TURN_START


def cut_turn_end(text: str) -> str:
    r"""The turn's text up to where the policy began writing the next role's line (a turn-end stop).

    >>> cut_turn_end("intent: x\nreply: ok\ncustomer: thanks")
    'intent: x\nreply: ok'
    """
    cuts = [text.find(stop) for stop in TURN_END_STOPS if stop in text]
    return text[: min(cuts)] if cuts else text


def results_text(documents: Sequence[KBDocument], char_budget: int = 600) -> str:
    r"""What the rollout inserts after a paused ``search:`` line: the results block and its newline.

    >>> results_text([KBDocument("k1", "Open 9-5.", "hours")])
    'results: [1] hours: Open 9-5.\n'
    """
    return render_results(documents, char_budget) + "\n"


def policy_segments(turn_text: str) -> list[tuple[str, str]]:
    r"""Cut an agent turn's text into consecutive ``(text, owner)`` pieces, owner ``policy`` or ``environment``.

    The environment owns each ``results:`` block (from its line start to the next key line); the
    policy owns the rest. Joining the texts gives back ``turn_text``. Tokenizing the pieces one by
    one reproduces a rollout's tokens, where the results were tokenized apart from the policy's.

    >>> policy_segments("intent: x\nsearch: q\nresults: [1] a\nreply: ok")
    [('intent: x\nsearch: q\n', 'policy'), ('results: [1] a\n', 'environment'), ('reply: ok', 'policy')]
    >>> policy_segments("")
    []
    """
    pieces, start = [], 0
    for match in _RESULTS_BLOCK.finditer(turn_text):
        if match.start() > start:
            pieces.append((turn_text[start : match.start()], "policy"))
        if match.end() > match.start():
            pieces.append((match.group(0), "environment"))
        start = match.end()
    if start < len(turn_text):
        pieces.append((turn_text[start:], "policy"))
    return pieces


def conversation_to_examples(
    conversation: Conversation,
    results_char_budget: int = 600,
    context_char_budget: int | None = None,
) -> list[dict]:
    """Every logged agent turn of ``conversation`` as an SFT example written as a process.

    The history is kept as the environment keeps it (see ``csrl.env.simulators.conversation_slots``):
    customer turns, then for each agent turn the lookup it made (if any) and the agent turn itself.
    Where the agent made several lookups in a row, the last one -- the one its reply used -- is
    the turn's ``search:``; the earlier ones are left out, as the policy searches once a turn.
    Consecutive agent messages are separate turns. A turn without an intent label takes the
    conversation's.

    Args:
        conversation: a logged conversation.
        results_char_budget: characters of results in the block (as the environment renders them).
        context_char_budget: characters of dialogue kept in the prompt (None: all).

    Returns:
        One dict per agent turn: ``prompt`` (:func:`build_prompt` of the history), ``completion``
        (the turn as a process, no end-of-turn token), ``conversation_id``, ``turn_index`` (the
        position of the agent turn in ``conversation.turns``), ``intent`` and ``searched``.
    """
    examples, history, lookup = [], [], None
    for index, turn in enumerate(conversation.turns):
        if turn.role == "customer":
            history.append(turn)
        elif turn.role == "tool":
            lookup = turn
        else:
            intent = turn.intent or conversation.intent
            completion = format_agent_turn(
                intent,
                " ".join(turn.text.split()),  # one line, as render_dialogue shows past replies
                search=lookup.query if lookup else None,
                results=render_results(lookup.results, results_char_budget) if lookup else None,
            )
            examples.append(
                {
                    "prompt": build_prompt(history, context_char_budget),
                    "completion": completion,
                    "conversation_id": conversation.id,
                    "turn_index": index,
                    "intent": intent or "",
                    "searched": lookup is not None,
                }
            )
            if lookup is not None:
                history.append(lookup)
            history.append(Turn(role="agent", text=turn.text, intent=intent))
            lookup = None
    return examples


def corpus_to_examples(
    conversations: Iterable[Conversation],
    split: str | None = "train",
    limit: int | None = None,
    results_char_budget: int = 600,
    context_char_budget: int | None = None,
) -> list[dict]:
    """SFT examples from the conversations of ``split`` (None: all), the first ``limit`` conversations of it.

    >>> from csrl.data.schema import Conversation, Turn
    >>> convs = [Conversation(id="a", split="train", turns=(Turn("customer", "Hi"), Turn("agent", "Hello"))),
    ...          Conversation(id="b", split="test", turns=(Turn("customer", "Hi"), Turn("agent", "Hey")))]
    >>> [e["conversation_id"] for e in corpus_to_examples(convs)]
    ['a']
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: use None (all conversations) or >= 1")
    examples, used = [], 0
    for conversation in conversations:
        if split is not None and conversation.split != split:
            continue
        if limit is not None and used >= limit:
            break
        examples.extend(conversation_to_examples(conversation, results_char_budget, context_char_budget))
        used += 1
    return examples
