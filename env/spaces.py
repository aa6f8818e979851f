"""The text space of chat messages.

Gymnasium's ``spaces.Text`` defaults to alphanumerics and checks membership against an explicit
character set, so a real chat message ("Quelqu'un a utilisé ma carte ! 💳") is not in it. A chat
accepts any printable Unicode text, so ``ChatText`` checks *printability* instead and samples from
a deliberate mix of ASCII, accented Latin, Cyrillic, CJK and emoji.
"""

from __future__ import annotations

import string
import unicodedata
from typing import Any

from gymnasium import spaces

# What `sample()` draws from: enough of the world's scripts to exercise a policy's tokenizer.
SAMPLE_CHARSET = (
    string.ascii_letters
    + string.digits
    + string.punctuation
    + " \n"
    + "àáâäçèéêëíïñóöúüßøåæœÀÉÑÖÜ€£¥"
    + "абвгдежзийклмнопрстуфхцчшщыэюя"
    + "你好谢谢账户银行卡"
    + "😀🙂😡👍💳"
)

_ALLOWED_CONTROL = {"\n", "\t"}


def is_chat_text(text: str) -> bool:
    r"""True for text a person could type: no control characters (bar newline and tab), no lone surrogates.

    >>> is_chat_text("Grüße, 你好 💳\nbye")
    True
    >>> is_chat_text("bell\x07")
    False
    """
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs" or (category == "Cc" and char not in _ALLOWED_CONTROL):
            return False
    return True


def clean_chat_text(text: str) -> str:
    """Replace characters that are not chat text (control bytes, lone surrogates) with spaces."""
    return "".join(c if is_chat_text(c) else " " for c in text)


class ChatText(spaces.Text):
    """A string of printable Unicode text of at most ``max_length`` characters."""

    def __init__(self, max_length: int, *, min_length: int = 0, seed: int | None = None):
        super().__init__(max_length=max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        """Any printable string of allowed length, whatever its script."""
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length and is_chat_text(x)

    def __repr__(self) -> str:
        return f"ChatText({self.min_length}, {self.max_length})"
