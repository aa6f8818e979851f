"""The byte-level BPE tokenizer trained on the logs."""

import pytest

from csrl.dialogue.models.tokenizer import (
    EOS_TOKEN,
    PAD_TOKEN,
    corpus_texts,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
    train_tokenizer_on_corpus,
)

NON_ASCII = ["Grüße aus Köln — ça coûte 12,50 €", "東京の天気は？", "Привет 🙂👍", "naïve café\tdéjà vu\n\nok"]


@pytest.fixture(scope="module")
def star_tokenizer(star_corpus):
    conversations = [c for c in star_corpus.conversations if c.split == "train"][:60]
    return train_tokenizer_on_corpus(conversations, vocab_size=600)


def test_trains_to_the_requested_vocabulary(star_tokenizer):
    assert len(star_tokenizer) == 600
    assert star_tokenizer.eos_token == EOS_TOKEN and star_tokenizer.pad_token == PAD_TOKEN
    assert len({star_tokenizer.pad_token_id, star_tokenizer.bos_token_id, star_tokenizer.eos_token_id}) == 3
    assert star_tokenizer.padding_side == "left"


@pytest.mark.parametrize("text", NON_ASCII)
def test_round_trips_text_it_never_saw(star_tokenizer, text):
    ids = star_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert star_tokenizer.decode(ids) == text


def test_learns_the_format_keywords(star_tokenizer):
    # frequent in the training text, so short: the policy writes them every turn
    for word in ("intent", "reply", "search", "customer"):
        assert len(star_tokenizer.tokenize(word)) == 1, word


def test_save_and_load_round_trip(star_tokenizer, tmp_path):
    loaded = load_tokenizer(save_tokenizer(star_tokenizer, tmp_path / "tok"))
    text = "customer: Hi 🙂\nagent:\nintent: weather\nreply: Sunny."
    assert loaded(text)["input_ids"] == star_tokenizer(text)["input_ids"]
    assert (loaded.eos_token_id, loaded.pad_token_id, loaded.padding_side) == (
        star_tokenizer.eos_token_id,
        star_tokenizer.pad_token_id,
        "left",
    )


def test_corpus_texts_cover_prompts_and_processes(star_corpus):
    texts = list(corpus_texts(star_corpus.conversations[:2]))
    assert any(t.startswith("intent: ") for t in texts)
    assert any("customer: " in t for t in texts)


@pytest.mark.parametrize(
    "texts, vocab_size, error, match",
    [
        (["a b c"], 100, ValueError, "vocab_size=100"),
        ([], 300, ValueError, "no training text"),
        ("a plain string", 300, TypeError, "not one string"),
        ([1, 2], 300, TypeError, "must be strings"),
    ],
)
def test_rejects_bad_input(texts, vocab_size, error, match):
    with pytest.raises(error, match=match):
        train_tokenizer(texts, vocab_size=vocab_size)


def test_load_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_tokenizer"):
        load_tokenizer(tmp_path)
