"""The policy: any transformers causal LM plus a scalar value head on its last hidden state.

Model code only (nanoGPT's ``model.py``): no optimiser, no loss, no environment. The PPO loop
calls :meth:`ActorCritic.generate` for rollouts and :meth:`ActorCritic.evaluate` for the update.

Shapes: ``B`` batch, ``T`` sequence length, ``V`` vocabulary, ``H`` hidden size. Token ``t``'s
log-prob, entropy and value in :meth:`evaluate` are those of the state that *chose* it (positions
``< t``), so an action mask over ``input_ids`` selects the matching entries directly.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from csrl.dialogue.config import PolicyConfig
from csrl.dialogue.models.constraints import IntentConstraint
from csrl.dialogue.models.lora import AdapterDisabled, AdapterSnapshot, add_adapter, is_adapted, resolve_dtype
from csrl.dialogue.models.pretrained import resolve_model

VALUE_HEAD_FILE = "value_head.safetensors"
POLICY_FILE = "policy.json"
Stop = str | re.Pattern


def build_default_lm(
    vocab_size: int,
    config: PolicyConfig | None = None,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
):
    """A small GPT-2 built from config (random weights), sized by ``config`` (default: the ``quick`` preset).

    >>> from csrl.dialogue.pipeline.config import TrainConfig
    >>> lm = build_default_lm(512, TrainConfig.from_preset("debug").policy)
    >>> lm.config.n_layer, lm.config.n_embd, lm.config.vocab_size
    (2, 64, 512)
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = config or PolicyConfig()  # the quick preset's policy is the defaults
    torch.manual_seed(config.seed)
    gpt2_config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    return GPT2LMHeadModel(gpt2_config)


def _dtype_name(lm) -> str:
    return str(next(lm.parameters()).dtype).removeprefix("torch.")


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Token id lists as a left-padded batch: returns ``(input_ids, attention_mask)``, each ``(B, T)``.

    >>> ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for b, row in enumerate(rows):
        if row:
            input_ids[b, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            attention_mask[b, width - len(row) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def _cache_of(output):
    """The KV cache of a model output, under its new (``cache``) or old (``past_key_values``) name."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting real tokens only, so left padding does not shift them.

    >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])).tolist()
    [[0, 0, 0, 1], [0, 1, 2, 3]]
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)


def repeats_itself(tokens: Sequence[int], copies: int = 3, longest: int = 12) -> bool:
    """Whether ``tokens`` end in a loop: a model writing ``Day=Saturday Day=Saturday Day=Saturday ...``.

    A loop is ``copies`` back-to-back copies of one block of 2 to ``longest`` tokens, or ``2 * copies + 2`` copies of
    one token (digits repeat legitimately: "1000").

    >>> repeats_itself([7, 1, 2, 1, 2, 1, 2]), repeats_itself([7, 1, 2, 1, 2]), repeats_itself([5] * 7)
    (True, False, False)
    """
    if len(tokens) >= 2 * copies + 2 and len(set(tokens[-(2 * copies + 2) :])) == 1:
        return True
    for period in range(2, longest + 1):
        span = period * copies
        if len(tokens) < span:
            break
        tail = tokens[-span:]
        if len(set(tail[:period])) > 1 and all(tail[i] == tail[i % period] for i in range(period, span)):
            return True
    return False


def action_scores(
    logits: torch.Tensor, values: torch.Tensor, input_ids: torch.Tensor, action_mask: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:meth:`ActorCritic.evaluate` from what its ``forward`` returned (the PPO update calls ``forward`` through DDP).

    ``logits`` ``(B, T, V)`` and ``values`` ``(B, T)`` as ``forward`` returns them; the rest as ``evaluate`` takes.
    """
    logits = logits[:, :-1].float() / temperature  # (B, T-1, V): position t-1 chose token t
    log_dist = F.log_softmax(logits, dim=-1)  # (B, T-1, V)
    taken = log_dist.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    entropy = -(log_dist.exp() * log_dist).sum(-1)  # (B, T-1)
    mask = action_mask[:, 1:].to(taken.dtype)  # (B, T-1)
    zero = taken.new_zeros(input_ids.shape[0], 1)  # (B, 1): nothing chose the first token
    logprobs = torch.cat([zero, taken * mask], dim=1)  # (B, T)
    entropy = torch.cat([zero, entropy * mask], dim=1)  # (B, T)
    values = torch.cat([zero, values[:, :-1].float() * mask], dim=1)  # (B, T)
    return logprobs, entropy, values


@dataclass
class Generation:
    """What :meth:`ActorCritic.generate` wrote for each row of the batch.

    Attributes:
        tokens: the new token ids of each row, up to and including the token that stopped it
            (the eos token included: ending the turn is an action).
        texts: each row's new tokens decoded, without the eos token.
        stop_reasons: ``"eos"``, ``"stop"`` (a stop string or pattern matched), ``"repetition"`` (a loop, see
            :func:`repeats_itself`) or ``"length"``.
        logprobs: log-probability of each new token under the sampling distribution.
    """

    tokens: list[list[int]]
    texts: list[str]
    stop_reasons: list[str]
    logprobs: list[list[float]]


class ActorCritic(nn.Module):
    """A causal LM (the actor) with a scalar value head (the critic) on its last hidden state.

    Args:
        lm: any transformers causal LM (``GPT2LMHeadModel``, ``LlamaForCausalLM``, ...), or one with a LoRA adapter
            (a ``peft`` ``PeftModel``, see :mod:`csrl.dialogue.models.lora`).
        tokenizer: its tokenizer; used to encode prompts, decode and detect stop strings.
        base: the model ``lm`` was loaded from (a packaged name, folder or hub id); an adapted policy is saved as
            its adapters and rebuilt from this base.
        merged: the adapters already merged into ``lm``'s weights, oldest first (the SFT adapter, during PPO).

    ``intents`` (saved in ``policy.json``) are the names the policy was taught to declare, for
    ``PolicyConfig.constrain_intent``; training sets them.
    """

    def __init__(self, lm: nn.Module, tokenizer, *, base: str | None = None, merged: Sequence[AdapterSnapshot] = ()):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.base = base
        self.merged = list(merged)
        self.intents: list[str] = []
        hidden_size = lm.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden_size, 1)
        # zero: every state starts at value 0, so the first advantages are the returns themselves. Random
        # weights on GPT-2's last hidden state gave values of std ~0.9 against returns of std ~0.3
        # (explained variance -4 to -11 at PPO's first iteration): noise that moved the policy at random.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # left padding needs a pad id; it is always masked
        tokenizer.padding_side = "left"
        tokenizer.truncation_side = "left"
        # transformers 5.2x renamed `past_key_values` to `cache`; older versions and some models keep the old name
        inner = lm.get_base_model() if is_adapted(lm) else lm  # a PeftModel's forward takes **kwargs
        self._cache_argument = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"

    # -- construction and persistence --------------------------------------------------------------

    @classmethod
    def from_config(cls, tokenizer, config: PolicyConfig) -> ActorCritic:
        """The default policy: a fresh small GPT-2 sized by ``config`` over ``tokenizer``'s vocabulary."""
        lm = build_default_lm(
            len(tokenizer), config, tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id
        )
        return cls(lm, tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, dtype: str | None = None, log=print, **lm_kwargs):
        """Load a policy folder written by :meth:`save`, or any causal LM (fresh value head).

        Args:
            name_or_path: a policy folder, a packaged model name (``smollm2-135m-instruct``, see
                :mod:`csrl.dialogue.models.pretrained`), any causal LM folder or a hub id.
            dtype: the LM's weights, ``"auto"`` / ``"float32"`` / ``"bfloat16"`` (default: the dtype the policy
                was saved with; float32 for other models). The value head stays float32.
            log: hears a first-use conversion of a packaged model.
            lm_kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (e.g. ``gguf_file=...``).
        """
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(name_or_path)
        meta = json.loads((folder / POLICY_FILE).read_text()) if (folder / POLICY_FILE).is_file() else {}
        dtype = dtype or meta.get("dtype", "float32")
        lm_kwargs.setdefault("dtype", resolve_dtype(dtype))
        if meta.get("base"):  # an adapted policy: rebuild it from its base, merged adapters and live adapter
            tokenizer = AutoTokenizer.from_pretrained(folder)
            lm = AutoModelForCausalLM.from_pretrained(resolve_model(meta["base"], log=log), **lm_kwargs)
            merged = [AdapterSnapshot.read(folder / sub) for sub in meta.get("merged", [])]
            for snapshot in merged:
                lm = snapshot.merge_into(lm)
            if meta.get("adapter"):
                from peft import PeftModel

                lm = PeftModel.from_pretrained(lm, str(folder / meta["adapter"]), is_trainable=True)
            policy = cls(lm, tokenizer, base=meta["base"], merged=merged)
        else:
            source = resolve_model(str(name_or_path), log=log)
            tokenizer_kwargs = {"gguf_file": lm_kwargs["gguf_file"]} if "gguf_file" in lm_kwargs else {}
            tokenizer = AutoTokenizer.from_pretrained(source, **tokenizer_kwargs)
            lm = AutoModelForCausalLM.from_pretrained(source, **lm_kwargs)
            policy = cls(lm, tokenizer, base=str(name_or_path))
        policy.intents = meta.get("intents", [])
        head = folder / VALUE_HEAD_FILE
        if head.exists():
            policy.value_head.load_state_dict(load_file(head))
        return policy

    load = from_pretrained

    def save(self, folder: str | Path) -> Path:
        """Write the policy: LM (or its adapters), value head and tokenizer, each in its own safetensors file.

        A full model is ``save_pretrained``'s folder. An adapted one holds no base weights: ``adapter/`` (the live
        LoRA adapter), ``merged/N/`` (adapters merged before it) and ``policy.json`` naming the base to rebuild from.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"class": "ActorCritic", "value_head": VALUE_HEAD_FILE, "dtype": _dtype_name(self.lm),
                "intents": self.intents}  # fmt: skip
        if self.is_adapted:
            self.lm.save_pretrained(folder / "adapter")
            meta |= {"base": self.base, "adapter": "adapter", "merged": []}
            for n, snapshot in enumerate(self.merged):
                meta["merged"].append(str(snapshot.write(folder / "merged" / str(n)).relative_to(folder)))
        else:
            self.lm.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.value_head.state_dict().items()},
            folder / VALUE_HEAD_FILE,
        )
        (folder / POLICY_FILE).write_text(json.dumps(meta) + "\n")
        return folder

    def save_merged(self, folder: str | Path) -> Path:
        """The LM with every adapter merged in, as a plain transformers folder with the tokenizer (for serving)."""
        folder = Path(folder)
        if folder.exists():
            raise FileExistsError(f"{folder} already exists: choose a new folder (nothing is overwritten)")
        lm = self.lm
        if self.is_adapted:
            lm = AdapterSnapshot.of(self.lm).merge_into(copy.deepcopy(self.lm.get_base_model()))
        lm.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return folder

    # -- LoRA ----------------------------------------------------------------------------------------

    @property
    def is_adapted(self) -> bool:
        """Whether the LM trains through a LoRA adapter (the base weights frozen)."""
        return is_adapted(self.lm)

    def add_adapter(self, r: int, alpha: int) -> ActorCritic:
        """Put a fresh LoRA adapter on the LM (see :func:`csrl.dialogue.models.lora.add_adapter`); returns self."""
        if self.is_adapted:
            raise ValueError("the policy already has an adapter: merge_adapter() it first")
        self.lm = add_adapter(self.lm, r, alpha)
        return self

    def merge_adapter(self) -> ActorCritic:
        """Merge the adapter into the LM's weights, keeping its snapshot for :meth:`save`; returns self."""
        if self.is_adapted:
            snapshot = AdapterSnapshot.of(self.lm)
            self.lm = self.lm.merge_and_unload()
            self.merged.append(snapshot)
        return self

    def frozen_reference(self) -> AdapterDisabled:
        """The policy with its adapter disabled: PPO's frozen reference, sharing these weights."""
        if not self.is_adapted:
            raise ValueError("only an adapted policy has a built-in reference: add_adapter() first")
        return AdapterDisabled(self)

    @property
    def context_length(self) -> int | None:
        """The most positions the LM accepts (``n_positions`` / ``max_position_embeddings``), if it says."""
        config = self.lm.config.get_text_config()
        return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)

    @property
    def device(self) -> torch.device:
        """Where the LM's parameters are."""
        return next(self.lm.parameters()).device

    # -- text in, tensors out ----------------------------------------------------------------------

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize, left-padded and left-truncated to ``max_length``: returns ``(input_ids, attention_mask)``."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            add_special_tokens=False,
            return_tensors="pt",
        )
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)  # (B, T), (B, T)

    # -- the maths the PPO loop needs ----------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits and state values at every position.

        Args:
            input_ids: ``(B, T)`` token ids, left- or right-padded.
            attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.

        Returns:
            ``logits`` ``(B, T, V)``: position ``t`` predicts token ``t + 1``; ``values`` ``(B, T)``:
            the value of the state that ends at token ``t``.
        """
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states[-1]  # (B, T, H)
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)  # (B, T)
        return out.logits, values

    def evaluate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        action_mask: torch.Tensor,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs, entropies and values for the tokens of ``input_ids`` that are actions.

        Args:
            input_ids: ``(B, T)`` prompt and turn tokens.
            attention_mask: ``(B, T)``.
            action_mask: ``(B, T)`` 1 where the token was written by the policy (0 for prompt,
                inserted results and padding); the first position can never be an action.
            temperature: the sampling temperature the tokens were drawn at.

        Returns:
            ``logprobs``, ``entropy``, ``values``, each ``(B, T)`` and 0 where ``action_mask`` is 0:
            ``logprobs[:, t] = log π(input_ids[:, t] | input_ids[:, :t])``, ``entropy[:, t]`` the
            entropy of that distribution and ``values[:, t] = V(input_ids[:, :t])``.
        """
        return action_scores(*self(input_ids, attention_mask), input_ids, action_mask, temperature)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_k: int = 0,
        stop: Sequence[Stop] = (),
        generator: torch.Generator | None = None,
        stop_on_repetition: bool = False,
        constraint: IntentConstraint | None = None,
    ) -> Generation:
        """Sample continuations of a left-padded batch with the KV cache; each row stops on its own.

        A row stops at the eos token, when its new text contains a stop string or matches a stop
        pattern (e.g. ``csrl.dialogue.models.prompts.SEARCH_PAUSE``, after the ``search:`` line), or after
        ``max_new_tokens``. The token that completes a stop is kept: the rollout continues from
        exactly the tokens the policy wrote.

        Args:
            input_ids: ``(B, T)`` left-padded prompts (see :meth:`encode`).
            attention_mask: ``(B, T)``.
            max_new_tokens: the most tokens written per row.
            temperature: softmax temperature; ``0`` picks the most likely token (greedy).
            top_k: sample among the ``k`` most likely tokens (0: all).
            stop: strings or compiled regexes searched in each row's new text.
            generator: a seeded ``torch.Generator`` for reproducible rollouts.
            stop_on_repetition: also stop a row whose newest tokens loop (:func:`repeats_itself`).
            constraint: limits each row's first tokens to the ``intent:`` lines of a catalogue.

        Returns:
            A :class:`Generation`.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 1")
        if temperature < 0:
            raise ValueError(f"temperature={temperature}: use 0 for greedy or a positive temperature")
        limit = self.context_length
        if limit is not None and input_ids.shape[1] + max_new_tokens > limit:
            raise ValueError(
                f"prompt of {input_ids.shape[1]} tokens + max_new_tokens={max_new_tokens} exceeds the model's "
                f"context of {limit}: encode with max_length={limit - max_new_tokens} (keeps the newest tokens)"
            )
        batch_size = input_ids.shape[0]
        eos_id, pad_id = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        attention_mask = attention_mask.long()
        position_ids = position_ids_from_mask(attention_mask)  # (B, T)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
        past, logits = _cache_of(out), out.logits[:, -1].float()  # (B, V)
        next_position = position_ids[:, -1:] + 1  # (B, 1)

        tokens: list[list[int]] = [[] for _ in range(batch_size)]
        logprobs: list[list[float]] = [[] for _ in range(batch_size)]
        reasons: list[str | None] = [None] * batch_size
        for step in range(max_new_tokens):
            if constraint is not None:
                active_rows = [t if r is None else None for t, r in zip(tokens, reasons, strict=True)]
                logits = constraint.mask(logits, active_rows)
            if temperature == 0:
                log_dist = F.log_softmax(logits, dim=-1)  # (B, V)
                next_token = log_dist.argmax(-1)  # (B,)
            else:
                scaled = logits / temperature  # (B, V)
                if top_k:
                    kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                log_dist = F.log_softmax(scaled, dim=-1)  # (B, V)
                next_token = torch.multinomial(log_dist.exp(), 1, generator=generator).squeeze(-1)  # (B,)
            token_logprob = log_dist.gather(-1, next_token[:, None]).squeeze(-1)  # (B,)
            active = torch.tensor([r is None for r in reasons], device=input_ids.device)  # (B,)
            next_token = torch.where(active, next_token, torch.full_like(next_token, pad_id))
            for row in range(batch_size):
                if reasons[row] is not None:
                    continue
                token = int(next_token[row])
                tokens[row].append(token)
                logprobs[row].append(float(token_logprob[row]))
                if token == eos_id:
                    reasons[row] = "eos"
                elif stop and self._stopped(tokens[row], stop):
                    reasons[row] = "stop"
                elif stop_on_repetition and repeats_itself(tokens[row]):
                    reasons[row] = "repetition"
                elif step == max_new_tokens - 1:
                    reasons[row] = "length"
            if all(r is not None for r in reasons):
                break
            # the new token is real for rows that were active when it was sampled, padding otherwise
            attention_mask = torch.cat([attention_mask, active.long()[:, None]], dim=1)  # (B, T + step + 1)
            out = self.lm(
                input_ids=next_token[:, None],
                attention_mask=attention_mask,
                position_ids=next_position,
                use_cache=True,
                **{self._cache_argument: past},
            )
            past, logits = _cache_of(out), out.logits[:, -1].float()  # (B, V)
            next_position = next_position + 1

        texts = [self.tokenizer.decode([t for t in row if t != eos_id], skip_special_tokens=False) for row in tokens]
        return Generation(tokens=tokens, texts=texts, stop_reasons=[str(r) for r in reasons], logprobs=logprobs)

    def _stopped(self, row_tokens: list[int], stop: Sequence[Stop]) -> bool:
        text = self.tokenizer.decode(row_tokens, skip_special_tokens=False)
        return any((s in text) if isinstance(s, str) else bool(s.search(text)) for s in stop)
