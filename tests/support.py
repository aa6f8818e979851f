"""What several test modules share: a KB search double, the retrieval tests' world, the policy tests' taught policy."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time

import gguf
import gymnasium as gym
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from csrl.data.schema import Conversation, KBDocument, Turn
from csrl.dialogue.config import PolicyConfig
from csrl.dialogue.models.policy import ActorCritic
from csrl.dialogue.models.tokenizer import train_tokenizer_on_corpus
from csrl.dialogue.trainer.sft import tokenize_example
from csrl.env import ENV_ID, LockstepEnvs
from csrl.rewards.composite import CompositeReward
from csrl.rewards.rules import FormatReward, LengthReward


@contextlib.contextmanager
def serve_app(app):
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields its base URL, stops it after."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class KeywordSearcher:
    """Documents sharing a word with the query, best overlap first (the env's ``searcher`` interface)."""

    def __init__(self, documents):
        self.documents = list(documents)

    def search(self, queries, k):
        """Top ``k`` ``(document, overlap)`` pairs per query; documents sharing no word are left out."""
        out = []
        for q in queries:
            words = set(re.findall(r"\w+", q.lower()))
            scored = [(d, len(words & set(re.findall(r"\w+", d.text.lower())))) for d in self.documents]
            out.append([(d, float(s)) for d, s in sorted(scored, key=lambda x: -x[1]) if s > 0][:k])
        return out


# -- a small knowledge base and logs with lookups: the retrieval tests' world ----------------------------

CITIES = ["Pittsburgh", "Boston", "Denver", "Seattle"]
DAYS = ["Monday", "Friday"]
WEATHER = [
    KBDocument(f"w-{c}-{d}", f"weather result. City: {c}; Day: {d}; Weather: {w}.", "weather record", "weather")
    for c in CITIES
    for d, w in zip(DAYS, ["Sunny", "Raining"], strict=True)
]
RESTAURANTS = [
    KBDocument(
        f"r-{n}", f"restaurant result. Name: {n}; Food: {f}; Price: {p}.", "restaurant record", "restaurant_search"
    )
    for n, f, p in [
        ("The Porch", "American", "cheap"),
        ("Ginza", "Japanese", "expensive"),
        ("Casbah", "Mediterranean", "moderate"),
        ("Pho Van", "Vietnamese", "cheap"),
    ]
]
BANK = [
    KBDocument(
        "b-fraud",
        "To report fraud we block the card and open a case; ask for the full name and account number.",
        "bank_fraud_report procedure",
        "bank_fraud_report",
    ),
    KBDocument(
        "b-balance",
        "To check a balance, ask for the account number and PIN, then read the balance.",
        "bank_balance procedure",
        "bank_balance",
    ),
    KBDocument("b-ask-name", "Could I get your full name, please?", "bank_fraud_report: ask_name", "bank_fraud_report"),
]
KB = WEATHER + RESTAURANTS + BANK


def tool(query, *docs):
    return Turn(role="tool", query=query, results=tuple(docs))


def kb_conversations():
    return [
        Conversation(
            "c1",
            (
                Turn("customer", "What's the weather in Boston on Friday?"),
                tool("weather Day=Friday City=Boston", KB[3]),
                Turn("agent", "It will be raining in Boston on Friday.", intent="weather"),
            ),
        ),
        Conversation(
            "c2",
            (
                Turn("customer", "Find me a cheap Japanese place"),
                tool("restaurant_search Food=Japanese", RESTAURANTS[1]),
                Turn("agent", "Ginza serves Japanese food.", intent="restaurant_search"),
            ),
        ),
        Conversation(
            "c3",
            (
                Turn("customer", "Someone stole my card, I need to report fraud"),
                tool("bank_fraud_report", BANK[0]),
                Turn("agent", "Could I get your full name, please?", intent="bank_fraud_report"),
            ),
        ),
        Conversation(
            "c4",
            (
                Turn("customer", "Is it sunny in Denver on Monday?"),
                tool("weather Day=Monday City=Denver", KB[4]),
                Turn("agent", "Yes, sunny in Denver on Monday.", intent="weather"),
            ),
        ),
    ]


# -- two tiny conversations, a rule reward and a debug policy taught one turn: the policy tests' world ---------

POLICY_KB = [
    KBDocument("k-fraud", "Report card fraud: we need your full name and account number.", "fraud", "fraud"),
    KBDocument("k-weather", "Weather forecast for Detroit: sunny, 25 degrees.", "weather", "weather"),
]
TAUGHT_TURN = "intent: weather\nsearch: weather Detroit\nresults: [1] weather: sunny\nreply: Sunny all day in Detroit."
# the debug preset's GPT-2 size, with a smaller vocabulary and shorter turns
GENERATION = PolicyConfig(vocab_size=400, n_layer=2, n_head=2, n_embd=64, n_positions=256, max_new_tokens=40,
                          results_char_budget=80)  # fmt: skip


def text_only_conversations():
    """The customers of kb_conversations(), answered by agents whose words come from the KB, with no tool turn."""
    asked_answered = [
        ("Will it rain in Boston on Friday?", "It is raining in Boston on Friday, bring an umbrella."),
        ("Any cheap Japanese restaurant?", "Ginza serves Japanese food; it is on the expensive side."),
        ("Someone stole my card", "To report fraud we block the card and open a case for you."),
        ("What about Denver on Monday?", "Denver will be sunny on Monday, a lovely day for it."),
    ]
    return [
        Conversation(f"t{i}", (Turn("customer", asked), Turn("agent", answered)))
        for i, (asked, answered) in enumerate(asked_answered)
    ]


def policy_conversations():
    return [
        Conversation(
            id="c1",
            intent="weather",
            turns=(
                Turn("customer", "Weather in Detroit?"),
                Turn("agent", "Which day?", intent="weather"),
                Turn("customer", "Tuesday please"),
                Turn("tool", query="weather Detroit", results=(POLICY_KB[1],)),
                Turn("agent", "Sunny all day in Detroit.", intent="weather"),
                Turn("customer", "Thanks!"),
                Turn("agent", "You're welcome.", intent="weather"),
            ),
        ),
        Conversation(
            id="c2",
            intent="fraud",
            turns=(
                Turn("customer", "Someone used my card! 💳"),
                Turn("agent", "Could I get your full name, please?", intent="fraud"),
                Turn("customer", "Sam Lee"),
                Turn("agent", "Your report has been submitted.", intent="fraud"),
            ),
        ),
    ]


def stage_reward():
    """Rule components standing in for the three stages, so each stage's placement can be seen."""
    return CompositeReward(
        {"intent": FormatReward(), "retrieval": LengthReward(), "satisfaction": LengthReward()},
        {"intent": 0.3, "retrieval": 0.5, "satisfaction": 0.2},
    )


def make_envs(n=2, max_turns=3, reward=None):
    reward = reward or stage_reward()
    searcher = KeywordSearcher(POLICY_KB)
    envs = [gym.make(ENV_ID, conversations=policy_conversations(), reward=reward, searcher=searcher) for _ in range(n)]
    return LockstepEnvs(envs, max_turns=max_turns)


def build_taught_policy():
    """A debug GPT-2 over a tokenizer trained on the conversations, taught to write TAUGHT_TURN (it then searches)."""
    tokenizer = train_tokenizer_on_corpus(policy_conversations() * 5, vocab_size=400, model_max_length=256)
    return teach_taught_turn(ActorCritic.from_config(tokenizer, GENERATION))


# the serving tests' world: the taught policy answering with a KB that always finds SUNNY
SUNNY = KBDocument("k-sunny", "sunny", "weather", "weather")  # renders as the taught turn's results


class SunnySearcher:
    """Finds SUNNY for every query, and records the queries (the replier's KB search)."""

    def __init__(self):
        self.queries = []

    def search(self, queries, k):
        self.queries += queries
        return [[(SUNNY, 1.0)] for _ in queries]


def taught_replier():
    """A :class:`~csrl.dialogue.serving.reply.Replier` of the taught policy, SunnySearcher and the stage reward."""
    from csrl.dialogue.serving.reply import Replier

    return Replier(build_taught_policy(), stage_reward(), SunnySearcher(), policy_config=GENERATION,
                   search_top_k=1, max_observation_chars=4096)  # fmt: skip


def teach_taught_turn(policy):
    """Train ``policy``'s trainable LM weights to write TAUGHT_TURN; returns it in eval mode."""
    tokenizer = policy.tokenizer
    row = tokenize_example(tokenizer, "customer: Weather in Detroit?\nagent:\n", TAUGHT_TURN, 256)
    input_ids = torch.tensor([row["input_ids"]])  # (1, T)
    mask = torch.tensor([row["completion_mask"]])[:, 1:].float()  # (1, T-1)
    optimizer = torch.optim.Adam([p for p in policy.lm.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    for _ in range(60):
        logits = policy.lm(input_ids=input_ids).logits[:, :-1]  # (1, T-1, V)
        nll = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")  # (1, T-1)
        loss = (nll * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy.eval()


# -- a tiny Llama written to GGUF as llama.cpp writes one: the conversion tests' stand-in for SmolLM2 -----------

GGUF_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # SmolLM2's first three ids: unk/pad, bos, eos
GGUF_TEXTS = [
    "order 12345 costs $9.99, not $19.99!",
    "Call 555-0123 at 10:30 am; the total is 2048 dollars.",
    "Hello world\nHello there, how are you?",
    "customer: where is my order 12345?\nagent: it ships on day 3.",
    "two  spaces  before  7,  and\n 42 after a newline",  # whitespace runs: where the digit splits differ
] * 4


def llama_cpp_permute(weight, n_head):
    """llama.cpp's convert script reorders the q/k rows per head for its interleaved rotary; transformers undoes it."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_llama_gguf(path, pre="gpt2"):
    """Write a random tiny Llama and a byte-level BPE tokenizer to one F32 GGUF file; returns ``(model, tokenizer)``.

    The tokenizer splits text with GPT-2's regex (digit runs kept whole, so merged): that is what transformers
    rebuilds for a ``gpt2`` vocabulary whose ``tokenizer.ggml.pre`` (here "gpt2") it has no split of its own for, so
    both give the same ids. ``pre="smollm"`` splits digits first, as SmolLM2 does (the conversion must restore it).
    The tensors are laid out as llama.cpp's convert script writes them: q/k rows permuted.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if pre == "smollm":  # SmolLM2's: every digit on its own first
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                         pre_tokenizers.ByteLevel(add_prefix_space=False)])  # fmt: skip
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=GGUF_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(GGUF_TEXTS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=GGUF_SPECIALS[0], pad_token=GGUF_SPECIALS[0],
        bos_token=GGUF_SPECIALS[1], eos_token=GGUF_SPECIALS[2],
    )  # fmt: skip
    vocab = backend.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "ids must be 0..V-1 for a GGUF token list"

    config = LlamaConfig(
        vocab_size=len(tokens), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # weights of order one (not the 0.02 init), so a misplaced row shows in the logits
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 2 else 0.2) + (1.0 if p.ndim == 1 else 0.0))

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in GGUF_SPECIALS else gguf.TokenType.NORMAL for t in tokens])
    merges = json.loads(backend.to_str())["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_unk_token_id(vocab[GGUF_SPECIALS[0]])
    writer.add_pad_token_id(vocab[GGUF_SPECIALS[0]])
    writer.add_bos_token_id(vocab[GGUF_SPECIALS[1]])
    writer.add_eos_token_id(vocab[GGUF_SPECIALS[2]])
    writer.add_add_bos_token(False)

    def add(name, tensor):
        writer.add_tensor(name, tensor.detach().float().contiguous().numpy())

    add("token_embd.weight", model.model.embed_tokens.weight)  # tied: no output.weight, as for SmolLM2
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        add(f"blk.{i}.attn_q.weight", llama_cpp_permute(attn.q_proj.weight, config.num_attention_heads))
        add(f"blk.{i}.attn_k.weight", llama_cpp_permute(attn.k_proj.weight, config.num_key_value_heads))
        add(f"blk.{i}.attn_v.weight", attn.v_proj.weight)
        add(f"blk.{i}.attn_output.weight", attn.o_proj.weight)
        add(f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight)
        add(f"blk.{i}.ffn_up.weight", mlp.up_proj.weight)
        add(f"blk.{i}.ffn_down.weight", mlp.down_proj.weight)
        add(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight)
        add(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight)
    add("output_norm.weight", model.model.norm.weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, tokenizer
