"""The ``csrl`` command line: train on chat logs, evaluate, simulate, score, serve and chat with a run.

Each subcommand's options are one dataclass of :mod:`~csrl.dialogue.cli.arguments` (its docstring is the
subcommand's help), turned into a subparser by :class:`~csrl.dialogue.cli.parser.CommandParser`: types,
``None`` defaults, required options, ``choices`` from the field metadata, and a dashed spelling
``--ppo-iterations`` beside ``--ppo_iterations``. Each subcommand imports its heavy dependencies only when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from csrl.dialogue.cli.arguments import (
    ChatArguments,
    DataIngestArguments,
    DataStatsArguments,
    DataValidateArguments,
    EvalArguments,
    ExportArguments,
    IntentsDiscoverArguments,
    ScoreArguments,
    ServeArguments,
    SimulateArguments,
    TrainArguments,
)
from csrl.dialogue.cli.parser import CommandParser
from csrl.dialogue.pipeline.config import DataConfig, TrainConfig, load_config
from csrl.dialogue.pipeline.presets import DEFAULT_PRESET

# -- the subcommands -------------------------------------------------------------------------------


def _data_stats(args: DataStatsArguments) -> int:
    from csrl.data import load_corpus

    corpus = load_corpus(
        args.data, kb=args.kb, seed=args.seed, skip_invalid=args.skip_invalid, mapping=args.column_mapping()
    )
    stats = corpus.stats()
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
        return 0
    print(f"source        {stats['source']}")
    print(f"conversations {stats['conversations']:,}")
    roles = ", ".join(f"{n:,} {role}" for role, n in stats["turns_by_role"].items())
    print(f"turns         {stats['turns']:,} ({roles})")
    print(f"intents       {stats['intents']}")
    print(f"kb documents  {stats['kb_documents']:,}")
    print("splits        " + ", ".join(f"{name} {n:,}" for name, n in stats["splits"].items()))
    print(f"ratings       {stats['ratings']:,}")
    sat = stats["outcome_satisfied"]
    print(f"satisfied     {sat['true']:,} yes, {sat['false']:,} no")
    skipped = stats["skipped"]
    reasons = "; ".join(f"{reason}: {n:,}" for reason, n in skipped["reasons"].items())
    print(f"skipped       {skipped['count']:,}" + (f" ({reasons})" if reasons else ""))
    if "ignored" in stats:  # a CSV export: rows of other roles left out, bursts merged
        ignored = "; ".join(f"{reason}: {n:,}" for reason, n in stats["ignored"]["reasons"].items())
        print(f"ignored rows  {stats['ignored']['count']:,}" + (f" ({ignored})" if ignored else ""))
        print(f"merged        {stats['merged_messages']:,} messages into the turn before them (bursts)")
    return 0


def _data_ingest(args: DataIngestArguments) -> int:
    from csrl.data import InvalidDataError
    from csrl.data.ingest import ingest

    try:
        report = ingest(args.path, args.out, seed=args.seed, mapping=args.column_mapping(),
                        skip_invalid=args.skip_invalid)  # fmt: skip
    except (InvalidDataError, FileExistsError, ValueError) as err:
        print(f"csrl data ingest: {err}", file=sys.stderr)
        return 1
    skipped = f", {len(report.problems):,} invalid record(s) skipped" if report.problems else ""
    print(f"ingested {report.conversations:,} conversations ({report.turns:,} turns) into {args.out} in "
          f"{report.seconds:.1f} s{skipped}; train with --data {args.out}")  # fmt: skip
    return 0


def _data_validate(args: DataValidateArguments) -> int:
    from csrl.data import load_conversations, read_knowledge_base

    if args.kb:
        report = read_knowledge_base(args.path)
        summary = f"{len(report.documents):,} valid knowledge-base documents"
    else:
        report = load_conversations(args.path, skip_invalid=True, mapping=args.column_mapping())
        turns = sum(len(c.turns) for c in report.conversations)
        summary = f"{len(report.conversations):,} valid conversations ({turns:,} turns)"
    for problem in report.problems:
        print(problem, file=sys.stderr)
    ignored = getattr(report, "ignored", [])
    if ignored:  # left out by design (rows of another role, empty files), not errors
        reasons = "; ".join(f"{reason}: {n:,}" for reason, n in report.ignored_reasons().items())
        print(f"{args.path}: ignored {len(ignored):,} row(s) or file(s) ({reasons})", file=sys.stderr)
    if not report.problems:
        print(f"{args.path}: OK, {summary}")
        return 0
    if not args.skip_invalid:
        print(
            f"{args.path}: {len(report.problems)} invalid record(s); fix them or pass --skip-invalid", file=sys.stderr
        )
        return 1
    reasons = "; ".join(f"{reason}: {n}" for reason, n in report.skipped_reasons().items())
    print(f"{args.path}: skipped {len(report.problems)} invalid record(s) ({reasons}); {summary}")
    return 0


def _discovery_texts(args: IntentsDiscoverArguments) -> tuple[list[str], list[str], str]:
    """``(ids, texts, what)`` to cluster: each conversation's need, or each message of a message list."""
    import csv
    import gzip

    from csrl.data import load_conversations, load_messages
    from csrl.dialogue.pipeline.inference import conversation_need

    path = args.data
    plain = path.removesuffix(".gz")
    is_messages = plain.endswith(".txt")
    if plain.endswith(".csv"):  # turns have a conversation id (under its mapped name); a message list does not
        with gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8") as f:
            header = [name.strip().lower() for name in next(csv.reader(f), [])]
        mapping = args.column_mapping()
        column = (mapping.columns.get("conversation_id") if mapping else None) or "conversation_id"
        is_messages = column.strip().lower() not in header
    if is_messages:
        columns = args.column_mapping().columns if args.column_mapping() else None
        ids, texts = load_messages(path, columns=columns)
        return ids, texts, "messages"
    conversations = load_conversations(path, mapping=args.column_mapping()).conversations
    return [c.id for c in conversations], [conversation_need(c) for c in conversations], "conversations"


def _intents_discover(args: IntentsDiscoverArguments) -> int:
    import csv

    from csrl.rewards.config import RewardConfig
    from csrl.rewards.discovery import discover_intents, write_intents_json
    from csrl.rewards.stack import reward_encoder

    ids, texts, what = _discovery_texts(args)
    discovery = discover_intents(texts, reward_encoder(RewardConfig()), max_intents=args.max_intents, seed=args.seed)
    write_intents_json(discovery, args.out)
    print(f"{len(texts):,} {what}: {len(discovery.intents)} intents written to {args.out}")
    for intent in sorted(discovery.intents, key=lambda i: -i["size"])[:10]:
        print(f"  {intent['size']:6,}  {intent['name']}: {intent['examples'][0] if intent['examples'] else ''}")
    if args.assignments:
        with open(args.assignments, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["conversation_id" if what == "conversations" else "id", "intent"])
            writer.writerows((i, discovery.name_of(label)) for i, label in zip(ids, discovery.labels, strict=True))
        print(f"assignments: {args.assignments}")
    logs = args.data if what == "conversations" else "LOGS"
    print(f"next: edit {args.out} (rename, merge, delete intents); csrl train --data {logs} --intents {args.out}")
    return 0


def _quiet_libraries() -> None:
    """Silence the progress bars and notices of transformers and datasets (ours stay off with --quiet)."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _train(args: TrainArguments) -> int:
    from csrl.dialogue.pipeline.training import train
    from csrl.dialogue.trainer.processes import is_main

    preset = args.preset or DEFAULT_PRESET
    out = args.out or f"runs/{preset}" + (f"-{args.credit}" if args.credit else "")
    if args.quiet:
        _quiet_libraries()
    if args.resume and args.preset is None:
        config = load_config(out)  # --resume alone continues the run as it was configured
    else:
        data = DataConfig(source=args.data, kb=args.kb, seed=args.seed, columns=args.columns, roles=args.roles,
                          mapping=args.mapping, intents=args.intents,
                          max_discovered_intents=args.max_discovered_intents)  # fmt: skip
        config = TrainConfig.from_preset(preset, data=data, credit=args.credit)
    if args.model is not None:
        config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, model=args.model))
    if args.need_embedding is not None:
        config = dataclasses.replace(
            config, reward=dataclasses.replace(config.reward, need_embedding=args.need_embedding)
        )
    if args.ppo_iterations is not None:  # e.g. continue a finished run for longer with --resume
        config = dataclasses.replace(config, ppo=dataclasses.replace(config.ppo, total_iterations=args.ppo_iterations))
    train(config, out, resume=args.resume, progress=not args.quiet)
    if is_main():  # one line, not one a process
        print(f"trained: {out}  (next: csrl eval --run {out} --json)")
    return 0


def _eval(args: EvalArguments) -> int:
    from csrl.dialogue.evaluation.evaluate import DECODINGS, evaluate_run
    from csrl.dialogue.pipeline.runs import open_run

    log = (lambda *_: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    decodings = DECODINGS if args.decoding == "both" else (args.decoding,)
    result = evaluate_run(open_run(args.run), episodes=args.episodes, seed=args.seed, decodings=decodings, log=log)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _simulate(args: SimulateArguments) -> int:
    from csrl.dialogue.evaluation.evaluate import simulate, write_transcripts
    from csrl.dialogue.evaluation.report import summarize, write_report
    from csrl.dialogue.pipeline.runs import open_run

    run = open_run(args.run)
    episodes = simulate(run, args.policy, args.episodes, simulator=args.simulator, seed=args.seed)
    if args.policy != "human":  # the report compares the policy with the logged agents on the same conversations
        episodes += simulate(run, "human", args.episodes, simulator="replay", seed=args.seed)
    out = args.out or str(run.path / f"simulate-{args.policy}-{args.simulator}.jsonl")
    write_transcripts(episodes, out)
    for agent in dict.fromkeys(e["policy"] for e in episodes):
        print(f"{agent:6s} {summarize([e for e in episodes if e['policy'] == agent])}")
    print(f"transcripts: {out}")
    if args.report:
        write_report(episodes, args.report, title=f"csrl simulate: {run.path.name} ({args.simulator} customers)")
        print(f"report: {args.report}")
    return 0


def _export(args: ExportArguments) -> int:
    from csrl.dialogue.pipeline.runs import open_run

    open_run(args.run).policy(args.policy).save_merged(args.out)  # refuses an existing --out
    print(f"exported the {args.policy} policy to {args.out}: AutoModelForCausalLM.from_pretrained({args.out!r})")
    return 0


def _score(args: ScoreArguments) -> int:
    from csrl.dialogue.pipeline.runs import open_run
    from csrl.dialogue.serving.scoring import score_file

    scorer = open_run(args.run).scorer()
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        scored, problems = score_file(scorer, args.input, out)
    finally:
        if args.out:
            out.close()
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{args.input}: scored {scored} turn(s), {len(problems)} invalid line(s) skipped", file=sys.stderr)
    return 1 if problems and not scored else 0


SERVE_SETTINGS = "CSRL_SERVE_SETTINGS"  # how `csrl serve --workers N` hands its options to each worker process


def served_app(settings: dict | None = None):
    """The app ``csrl serve`` runs: ``settings`` (run, policy, token, max_body_bytes, threads) or the environment's.

    With ``--workers N`` uvicorn starts N processes, each calling this factory (``factory=True``): every
    worker loads the run itself and uses its share of the cores.
    """
    import os

    import torch

    from csrl.dialogue.pipeline.runs import open_run
    from csrl.dialogue.serving.reply_api import ReplyService
    from csrl.dialogue.serving.server import create_app

    settings = settings if settings is not None else json.loads(os.environ[SERVE_SETTINGS])
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    run = open_run(settings["run"])
    policy = settings["policy"]
    replies = None if policy == "none" else ReplyService(run.replier(policy), run.stack.documents)
    return create_app(run.scorer(), replies=replies, run_name=run.path.name,
                      max_body_bytes=settings["max_body_bytes"], token=settings["token"])  # fmt: skip


def _serve(args: ServeArguments) -> int:
    import os

    import uvicorn

    if args.workers < 1:
        print(f"csrl serve: --workers {args.workers}: give at least 1", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("CSRL_TOKEN") or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print("csrl: warning: serving beyond loopback without --token; anyone who can reach it can use it",
              file=sys.stderr)  # fmt: skip
    settings = {"run": args.run, "policy": args.policy, "token": token, "max_body_bytes": args.max_body_bytes}
    if args.policy != "none":
        print(f"csrl: chat with the {args.policy} policy at http://{args.host}:{args.port}/", file=sys.stderr)
    if args.workers == 1:
        uvicorn.run(served_app(settings), host=args.host, port=args.port, log_level="info")
        return 0
    # each worker a process of its own, with an equal share of the cores (at least one thread)
    settings["threads"] = max(1, (os.cpu_count() or 1) // args.workers)
    os.environ[SERVE_SETTINGS] = json.dumps(settings)
    # a worker loads the run before it answers uvicorn's readiness check (5 s by default): give it time
    uvicorn.run("csrl.dialogue.cli.commands:served_app", factory=True, workers=args.workers, host=args.host,
                port=args.port, log_level="info", timeout_worker_healthcheck=600)  # fmt: skip
    return 0


def _chat(args: ChatArguments) -> int:
    from csrl.dialogue.pipeline.runs import open_run
    from csrl.dialogue.serving.chat import ChatSession, chat_loop

    decoding = args.to_decoding()  # a bad option fails before the models load
    _quiet_libraries()
    return chat_loop(ChatSession(open_run(args.run).replier(args.policy), decoding))


def _add_command(commands, name: str, arguments: type, handler) -> None:
    """Subcommand ``name``: its options are the fields of ``arguments``, its help that dataclass's docstring."""
    parser = commands.add_parser(
        name, dataclass_types=[arguments], help=arguments.__doc__, description=arguments.__doc__
    )
    parser.set_defaults(handler=handler, arguments=arguments)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``csrl`` subcommand."""
    parser = argparse.ArgumentParser(prog="csrl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    data = commands.add_parser("data", help="Inspect and validate chat logs.")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    _add_command(data_commands, "stats", DataStatsArguments, _data_stats)
    _add_command(data_commands, "validate", DataValidateArguments, _data_validate)
    _add_command(data_commands, "ingest", DataIngestArguments, _data_ingest)
    intents = commands.add_parser("intents", help="Find the intents of logs without intent labels.")
    intents_commands = intents.add_subparsers(dest="intents_command", required=True)
    _add_command(intents_commands, "discover", IntentsDiscoverArguments, _intents_discover)
    _add_command(commands, "train", TrainArguments, _train)
    _add_command(commands, "eval", EvalArguments, _eval)
    _add_command(commands, "simulate", SimulateArguments, _simulate)
    _add_command(commands, "score", ScoreArguments, _score)
    _add_command(commands, "serve", ServeArguments, _serve)
    _add_command(commands, "chat", ChatArguments, _chat)
    _add_command(commands, "export", ExportArguments, _export)
    return parser


def parse_arguments(argv: list[str] | None = None):
    """The subcommand's arguments dataclass, filled from ``argv``, and its handler."""
    namespace = build_parser().parse_args(argv)
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(namespace.arguments)}
    return namespace.arguments(**values), namespace.handler


def main(argv: list[str] | None = None) -> int:
    """Run ``csrl`` with ``argv`` (default: the process arguments); returns the exit status."""
    args, handler = parse_arguments(argv)
    try:
        return handler(args)
    except (FileNotFoundError, FileExistsError, IsADirectoryError, ValueError) as err:
        print(f"csrl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
