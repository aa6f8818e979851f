r"""Constrained decoding: a turn's ``intent:`` line limited to the intents the policy was taught.

The policy writes its intent as free text, so a small model fine-tuned for a few hundred steps invents
near-misses (``flight_book`` for the catalogue's ``plane_book``) that the intent stage rightly scores as wrong.
A deployed bot should only declare an intent the business knows: with ``PolicyConfig.constrain_intent`` the
first line of a turn must be ``intent: NAME`` for a NAME of the policy's catalogue. A trie over the tokens of
those lines masks every other token's logit until a name is complete, then decoding is free again (the idea of
transformers' ``prefix_allowed_tokens_fn``; the policy's own sampling loop needs it as a mask).

PPO scores the sampled tokens with the unmasked policy (the rollout's forward pass), as it does under
``top_k``: the constraint decides which tokens are tried, the update moves their unmasked probabilities.

>>> from csrl.dialogue.models.tokenizer import train_tokenizer
>>> tokenizer = train_tokenizer(["intent: plane_book\nreply: ok", "intent: plane_search"] * 20, vocab_size=300)
>>> constraint = IntentConstraint(tokenizer, ["plane_book", "plane_search"])
>>> line = tokenizer("intent: plane_book\n", add_special_tokens=False)["input_ids"]
>>> constraint.allowed([]) == [line[0]]  # the line must start
True
>>> constraint.allowed(line) is None  # a whole name: free again
True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from csrl.env.turn_format import format_agent_turn


class IntentConstraint:
    r"""The ``intent: NAME\n`` lines of a catalogue as a token trie.

    Args:
        tokenizer: the policy's tokenizer (the lines are tokenized as SFT tokenized the turns).
        intents: the names the policy may declare.
    """

    def __init__(self, tokenizer, intents: Sequence[str]):
        if not intents:
            raise ValueError("an intent constraint needs at least one intent name")
        self.intents = tuple(intents)
        self._trie: dict[int, dict] = {}
        for name in self.intents:
            node = self._trie
            line = format_agent_turn(name, "").split("\n", 1)[0] + "\n"  # the turn format's own intent line
            for token in tokenizer(line, add_special_tokens=False)["input_ids"]:
                node = node.setdefault(token, {})

    def allowed(self, tokens: Sequence[int]) -> list[int] | None:
        """The tokens that may follow a turn's first ``tokens``; ``None`` (any) once a name's line is complete."""
        node = self._trie
        for token in tokens:
            node = node.get(token)
            if node is None:  # left the trie (cannot happen while masked): nothing to constrain
                return None
        return list(node) or None

    def mask(self, logits: torch.Tensor, rows: Sequence[Sequence[int] | None]) -> torch.Tensor:
        """``logits`` ``(B, V)`` with ``-inf`` on each token the constraint forbids after row ``b``'s ``rows[b]``.

        A row given as ``None`` (one that stopped) is left as it is.
        """
        allowed = [None if tokens is None else self.allowed(tokens) for tokens in rows]
        if all(a is None for a in allowed):
            return logits
        keep = torch.zeros_like(logits, dtype=torch.bool)  # (B, V)
        for row, tokens in enumerate(allowed):
            if tokens is None:
                keep[row] = True
            else:
                keep[row, tokens] = True
        return logits.masked_fill(~keep, float("-inf"))


__all__ = ["IntentConstraint"]
