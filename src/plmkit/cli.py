"""The `plmkit` command line: subcommands parse arguments and call typed functions.

Exit codes: 0 success, 2 a usage or input error (one line on stderr, no traceback),
1 an internal error.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from plmkit.errors import UserError

Handler = Callable[[argparse.Namespace], None]


def _paths(text: str) -> list[Path]:
    return [Path(p) for p in text.split(",") if p]


def _add(sub: argparse._SubParsersAction, name: str, help: str, examples: str,
         handler: Handler) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name, help=help, description=help,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from plmkit.data.corpus import read_documents
    from plmkit.tokenizers import train_tokenizer

    texts = (s for doc in read_documents(args.corpus) for s in doc)
    tok = train_tokenizer(args.kind, texts, args.vocab_size, lowercase=not args.cased,
                          min_frequency=args.min_frequency)
    tok.save(args.out)
    print(f"trained a {args.kind} tokenizer with {tok.vocab_size} tokens -> {args.out}")


def cmd_data_prepare(args: argparse.Namespace) -> None:
    from plmkit.pipeline import prepare

    corpus = prepare(args.corpus, args.tokenizer, args.out)
    print(f"{corpus.num_documents} documents, {corpus.num_tokens} tokens -> {args.out}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from plmkit.pipeline import PretrainArgs, pretrain

    options = {k: v for k, v in vars(args).items() if k not in ("handler", "command")}
    pretrain(PretrainArgs(**options))


def cmd_plot(args: argparse.Namespace) -> None:
    from plmkit.training.plot import plot_metrics

    source = args.metrics / "metrics.jsonl" if args.metrics.is_dir() else args.metrics
    out = args.out or source.with_name("curves.png")
    plot_metrics(source, out)
    print(f"wrote {out}")


def cmd_bench(args: argparse.Namespace) -> None:
    from plmkit import bench

    records = bench.run(args.models.split(","), args.modes.split(","), args.batch_size,
                        args.seq_len, args.reps)
    print(bench.table(records))
    if args.json:
        bench.write_json(records, args.json)


def cmd_export(args: argparse.Namespace) -> None:
    import plmkit

    plmkit.save_hf(plmkit.load(args.model), args.out)
    print(f"wrote a Hugging Face {args.format} directory -> {args.out}")


def cmd_demo(args: argparse.Namespace) -> None:
    from plmkit.demo import run_demo

    run_demo(args.out, steps=args.steps)


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    top = argparse.ArgumentParser(
        prog="plmkit",
        description="Pretrain, fine-tune, compare and ship classic Transformer language models.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add(sub, "demo", "the whole pipeline on the default data (English tweets), in minutes",
             "plmkit demo\nplmkit demo --out runs/demo --steps 300", cmd_demo)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--steps", type=int, default=600, help="pretraining steps")

    tok = _add(sub, "tokenizer", "train tokenizers", "plmkit tokenizer train --help", None)
    tsub = tok.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _add(tsub, "train", "train a tokenizer on a corpus",
             "plmkit tokenizer train --kind wordpiece --corpus a.txt,b.txt --vocab-size 8000 "
             "--out tok/", cmd_tokenizer_train)
    p.add_argument("--kind", required=True, choices=["wordpiece", "bpe", "unigram"])
    p.add_argument("--corpus", type=_paths, required=True, help="comma-separated txt/jsonl files")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cased", action="store_true", help="keep case (default: lowercase)")
    p.add_argument("--min-frequency", type=int, default=2)

    data = _add(sub, "data", "prepare corpora", "plmkit data prepare --help", None)
    dsub = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _add(dsub, "prepare", "tokenize a corpus once into memory-mapped token shards",
             "plmkit data prepare --corpus corpus.txt --tokenizer tok/ --out shards/",
             cmd_data_prepare)
    p.add_argument("--corpus", type=_paths, required=True)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)

    p = _add(sub, "pretrain", "pretrain a model with its objective on a corpus",
             """
             plmkit pretrain --model bert-tiny --corpus corpus.txt --out runs/bert --steps 200
             plmkit pretrain --model bert-mini --objective mlm --corpus a.txt,b.jsonl \\
                 --tokenizer tok/ --out runs/mini --batch-size 32 --seq-len 128 --resume
             """, cmd_pretrain)
    add_pretrain_arguments(p)

    p = _add(sub, "plot", "plot loss and accuracy curves of a run as PNG",
             "plmkit plot --metrics runs/bert\nplmkit plot --metrics runs/bert/metrics.jsonl "
             "--out curves.png", cmd_plot)
    p.add_argument("--metrics", type=Path, required=True, help="run directory or metrics.jsonl")
    p.add_argument("--out", type=Path)

    p = _add(sub, "bench", "plmkit vs transformers, interleaved in one run: tokens/s and ratio",
             "plmkit bench\nplmkit bench --models bert-mini,bert-base --json bench.json",
             cmd_bench)
    p.add_argument("--models", default="bert-tiny,bert-mini,bert-base")
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path)

    p = _add(sub, "export", "write a model as a Hugging Face transformers directory",
             "plmkit export --format hf --model runs/bert --out hf-bert/", cmd_export)
    p.add_argument("--format", choices=["hf"], default="hf")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    return top


def add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `plmkit pretrain` (DESIGN.md, public interface)."""
    p.add_argument("--model", required=True, help="preset, e.g. bert-tiny, bert-base")
    p.add_argument("--objective", help="mlm, mlm+nsp (default: the model's own)")
    p.add_argument("--corpus", type=_paths, required=True, help="comma-separated txt/jsonl files")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--heldout", type=_paths, default=[],
                   help="comma-separated held-out files, evaluated every --eval-every steps")
    p.add_argument("--eval-batches", type=int, default=20)
    p.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: train one)")
    p.add_argument("--vocab-size", type=int, default=30522, help="when training a tokenizer")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=None, help="warmup steps (default 1%% of steps)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--masking", choices=["static", "dynamic"], default="static")
    p.add_argument("--whole-word", action="store_true", help="whole-word masking")
    p.add_argument("--long-fraction", type=float, default=0.0,
                   help="fraction of steps at sequence length 512 (BERT: 0.1)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--bad-utf8", choices=["skip", "error"], default="skip")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `plmkit` console script."""
    args = parser().parse_args(argv)
    if args.handler is None:  # a group such as `plmkit tokenizer` without its action
        parser().parse_args([*(argv or sys.argv[1:]), "--help"])
    try:
        args.handler(args)
    except UserError as e:
        print(f"plmkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("plmkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
