r"""A byte-level BPE tokenizer trained on the chat logs, wrapped as a transformers ``PreTrainedTokenizerFast``.

Byte-level BPE (GPT-2's scheme) encodes any Unicode text without an unknown token, so customer
messages in any language round-trip exactly. The tokenizer is trained with the ``tokenizers``
library on the text the policy will read and write: prompts and process-formatted agent turns.

>>> tok = train_tokenizer(["customer: Hi\nagent:\nintent: greet\nreply: Hello!"] * 4, vocab_size=300)
>>> tok.decode(tok("Grüße, 東京 🙂")["input_ids"])
'Grüße, 東京 🙂'
>>> tok.eos_token, tok.pad_token, tok.padding_side
('<|endoftext|>', '<|pad|>', 'left')
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from csrl.data.schema import Conversation
from csrl.dialogue.models.prompts import FORMAT_STRINGS, conversation_to_examples

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"  # ends an agent turn: generation stops on it
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)


def corpus_texts(conversations: Iterable[Conversation], results_char_budget: int = 600) -> Iterator[str]:
    """The training text of the tokenizer: each conversation as the policy sees and writes it.

    Per conversation: the last prompt (the whole dialogue in the observation's format, including
    its ``results:`` lines) and every agent turn as a process (the ``intent:`` / ``search:`` /
    ``reply:`` lines), so the format's keywords become tokens. Then the format strings once.
    """
    for conversation in conversations:
        examples = conversation_to_examples(conversation, results_char_budget)
        if not examples:
            continue
        yield examples[-1]["prompt"]
        for example in examples:
            yield example["completion"]
    yield from FORMAT_STRINGS


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    min_frequency: int = 2,
    model_max_length: int = 512,
):
    """Train a byte-level BPE tokenizer on ``texts``.

    Args:
        texts: training text (e.g. :func:`corpus_texts`); strings, read once.
        vocab_size: final vocabulary including the 256 bytes and the special tokens (>= 300).
        min_frequency: a merge needs a pair seen at least this often.
        model_max_length: the context length recorded in the tokenizer (the policy's ``n_positions``).

    Returns:
        A ``PreTrainedTokenizerFast`` with ``pad``/``bos``/``eos`` tokens, left padding and left
        truncation (the newest dialogue is kept), adding no special tokens when encoding.

    Raises:
        ValueError: on a vocabulary too small for the byte alphabet, or on no text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size={vocab_size}: byte-level BPE needs >= 300 (256 bytes + special tokens)")
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings, not one string (it would be read char by char)")
    seen = [0]

    def counted(items: Iterable[str]) -> Iterator[str]:
        for text in items:
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__}")
            seen[0] += 1
            yield text

    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False: "reply:" at a line start and mid-text tokenize the same way
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(counted(texts), trainer=trainer)
    if not seen[0]:
        raise ValueError("no training text: pass at least one string")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side="left",  # batched generation continues every row from its last real token
        truncation_side="left",  # a long dialogue loses its oldest turns, never the agent turn start
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # exact round trip of the text
    )


def train_tokenizer_on_corpus(
    conversations: Iterable[Conversation], vocab_size: int = 4096, model_max_length: int = 512
):
    """Train the policy's tokenizer on the logs (see :func:`corpus_texts`)."""
    return train_tokenizer(corpus_texts(conversations), vocab_size=vocab_size, model_max_length=model_max_length)


def save_tokenizer(tokenizer, folder: str | Path) -> Path:
    """Write the tokenizer to ``folder`` (``tokenizer.json`` and its config); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return folder


def load_tokenizer(folder: str | Path):
    """Load a tokenizer saved by :func:`save_tokenizer` (or any local transformers tokenizer folder)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer_config.json").exists() and not (folder / "tokenizer.json").exists():
        raise FileNotFoundError(f"{folder}: no tokenizer.json / tokenizer_config.json; save one with save_tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    return tokenizer
