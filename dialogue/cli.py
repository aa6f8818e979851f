"""The ``csrl`` command line. Each subcommand imports its heavy dependencies only when it runs."""

from __future__ import annotations

import argparse
import json
import sys


def _data_stats(args: argparse.Namespace) -> int:
    from csrl.data import load_corpus

    corpus = load_corpus(args.data, kb=args.kb, seed=args.seed, skip_invalid=args.skip_invalid)
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
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from csrl.data import load_conversations, read_knowledge_base

    if args.kb:
        report = read_knowledge_base(args.path)
        summary = f"{len(report.documents):,} valid knowledge-base documents"
    else:
        report = load_conversations(args.path, skip_invalid=True)
        turns = sum(len(c.turns) for c in report.conversations)
        summary = f"{len(report.conversations):,} valid conversations ({turns:,} turns)"
    for problem in report.problems:
        print(problem, file=sys.stderr)
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


def _quiet_libraries() -> None:
    """Silence the progress bars and notices of transformers and datasets (ours stay off with --quiet)."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from csrl.dialogue.pipeline.training import DataConfig, TrainConfig, load_config, train

    out = args.out or f"runs/{args.preset}" + (f"-{args.credit}" if args.credit else "")
    if args.quiet:
        _quiet_libraries()
    if args.resume and args.preset_given is False:
        config = load_config(out)  # --resume alone continues the run as it was configured
    else:
        data = DataConfig(source=args.data, kb=args.kb, seed=args.seed)
        config = TrainConfig.from_preset(args.preset, data=data, credit=args.credit)
    if args.ppo_iterations is not None:  # e.g. continue a finished run for longer with --resume
        config = dataclasses.replace(config, ppo=dataclasses.replace(config.ppo, total_iterations=args.ppo_iterations))
    train(config, out, resume=args.resume, progress=not args.quiet)
    print(f"trained: {out}  (next: csrl eval --run {out} --json)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from csrl.dialogue.evaluation.evaluate import evaluate_run
    from csrl.dialogue.pipeline.runs import open_run

    log = (lambda *_: None) if args.json else (lambda message: print(message, file=sys.stderr))
    result = evaluate_run(open_run(args.run), episodes=args.episodes, seed=args.seed, log=log)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _simulate(args: argparse.Namespace) -> int:
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


def _score(args: argparse.Namespace) -> int:
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


def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from csrl.dialogue.pipeline.runs import open_run
    from csrl.dialogue.serving.server import create_app

    run = open_run(args.run)
    token = args.token or os.environ.get("CSRL_TOKEN") or None
    app = create_app(run.scorer(), run_name=run.path.name, max_body_bytes=args.max_body_bytes, token=token)
    if args.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print("csrl: warning: serving beyond loopback without --token; anyone who can reach it can use it",
              file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``csrl`` subcommand."""
    parser = argparse.ArgumentParser(prog="csrl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="inspect and validate chat logs")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    stats = data_commands.add_parser("stats", help="count conversations, turns, intents, KB documents and splits")
    stats.add_argument("--data", default="star", help="'star' (embedded) or a .jsonl / .csv file of logs")
    stats.add_argument("--kb", default=None, help="a JSON Lines knowledge base (default: STAR's, or the logs' own)")
    stats.add_argument("--seed", type=int, default=0, help="split seed")
    stats.add_argument("--skip-invalid", action="store_true", help="skip and count invalid records")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(handler=_data_stats)
    validate = data_commands.add_parser(
        "validate", help="check a logs file; name the file, line and field of each problem"
    )
    validate.add_argument("path", help="a .jsonl or .csv file of logs (or a KB with --kb)")
    validate.add_argument("--kb", action="store_true", help="the file is a knowledge base, not logs")
    validate.add_argument("--skip-invalid", action="store_true", help="report problems but exit 0")
    validate.set_defaults(handler=_data_validate)

    train = commands.add_parser("train", help="train reward models, SFT and PPO on chat logs (stages cached)")
    train.add_argument("--data", default="star", help="'star' (embedded) or a .jsonl / .csv file of logs")
    train.add_argument("--kb", default=None, help="a JSON Lines knowledge base (default: STAR's, or the logs' own)")
    train.add_argument("--preset", default=None, choices=["debug", "quick", "full"], help="run size (default quick)")
    train.add_argument("--credit", default=None, choices=["process", "turn"], help="PPO credit (default process)")
    train.add_argument("--out", default=None, help="run folder (default runs/PRESET)")
    train.add_argument("--seed", type=int, default=0, help="split seed")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--ppo-iterations", type=int, default=None, help="PPO iterations (default: the preset's)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="held-out metrics of a run's reward models and policies")
    evaluate.add_argument("--run", required=True, help="a run folder written by csrl train")
    evaluate.add_argument("--episodes", type=int, default=None, help="held-out episodes per policy (default: config)")
    evaluate.add_argument("--seed", type=int, default=0, help="episode seed (every policy plays the same ones)")
    evaluate.add_argument("--json", action="store_true", help="one JSON object on stdout, progress silenced")
    evaluate.set_defaults(handler=_eval)

    sim = commands.add_parser("simulate", help="run a policy against simulated customers; transcripts and report")
    sim.add_argument("--run", required=True, help="a run folder written by csrl train")
    sim.add_argument("--episodes", type=int, default=50, help="conversations to simulate")
    sim.add_argument("--simulator", default="replay", choices=["replay", "reactive"], help="customer simulator")
    sim.add_argument("--policy", default="ppo", choices=["ppo", "sft", "human"], help="who plays the agent")
    sim.add_argument("--seed", type=int, default=0, help="episode seed")
    sim.add_argument("--out", default=None, help="transcripts JSONL (default RUN/simulate-POLICY-SIMULATOR.jsonl)")
    sim.add_argument("--report", default=None, help="write an HTML report with plots here")
    sim.set_defaults(handler=_simulate)

    score = commands.add_parser("score", help="score any bot's turns from a JSONL file")
    score.add_argument("--run", required=True, help="a run folder written by csrl train")
    score.add_argument("--input", required=True, help="JSONL: {history, reply, intent?, knowledge?, id?} per line")
    score.add_argument("--out", default=None, help="JSONL of results (default stdout)")
    score.set_defaults(handler=_score)

    serve = commands.add_parser("serve", help="the reward as an HTTP JSON API (POST /v1/score)")
    serve.add_argument("--run", required=True, help="a run folder written by csrl train")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="port")
    serve.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (or set CSRL_TOKEN)")
    serve.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest request body accepted")
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``csrl`` with ``argv`` (default: the process arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "train":
        args.preset_given = args.preset is not None
        args.preset = args.preset or "quick"
    try:
        return args.handler(args)
    except (FileNotFoundError, FileExistsError, IsADirectoryError, ValueError) as err:
        print(f"csrl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
