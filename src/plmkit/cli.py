"""The `plmkit` command line: subcommands parse arguments and call typed functions.

Exit codes: 0 success, 2 a usage or input error (one line on stderr, no traceback),
1 an internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from plmkit.bench.command import BenchArgs
from plmkit.data.builders import TASK_DATASETS
from plmkit.errors import Interrupted, UserError
from plmkit.jobs.distill_options import DistillArgs
from plmkit.jobs.options import PretrainArgs
from plmkit.tasks.options import COLUMN_FIELDS, TASK_ONLY, FinetuneOptions, Registry

Handler = Callable[[argparse.Namespace], None]


def _paths(text: str) -> list[Path]:
    """An argparse type: comma-separated paths."""
    return [Path(p) for p in _names(text)]


def _names(text: str) -> list[str]:
    """An argparse type: a comma-separated list (empty items dropped)."""
    return [name for name in text.split(",") if name]


def _control(text: str) -> str | None:
    """An argparse type: compare's --control, None for "none"."""
    return None if text == "none" else text


def _lists(action: argparse.Action, ref: str) -> None:
    """Let `action`'s help name the entries of registry `ref` as %(names)s."""
    action.names = Registry(ref)  # type: ignore[attr-defined]  # argparse formats help with vars(action)


def add_options(p: argparse.ArgumentParser, cls: type, names: Sequence[str] | None = None
                ) -> None:
    """An option for each field of the dataclass `cls` that has help (`tasks.options.cli`
    metadata), or for the fields in `names`: the flag is the field's name (a bool that defaults
    to True: --no-NAME), the type, default and required-ness are the field's."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("help")}
    for name in names or list(fields):
        _add_field(p, fields[name], hints[name])


def _add_field(p: argparse.ArgumentParser, f: dataclasses.Field, hint: Any) -> None:
    flag = "--" + f.name.replace("_", "-")
    text = f.metadata["help"].replace("%", "%%").replace("%%(names)s", "%(names)s")
    kwargs: dict[str, Any] = {"help": text, "dest": f.name}
    if f.metadata.get("choices"):
        kwargs["choices"] = Registry(f.metadata["choices"])
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    if default is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = default
    kind = _unoptional(hint)
    if kind is bool:
        actions = {False: "store_true", True: "store_false", None: argparse.BooleanOptionalAction}
        flag = "--no-" + flag[2:] if default is True else flag
        action = p.add_argument(flag, action=actions[default], **kwargs)
    else:
        parse = {list[Path]: _paths, str: None}.get(kind, kind)
        if f.metadata.get("minimum") is not None:
            parse = _at_least(f.metadata["minimum"])
        action = p.add_argument(flag, type=parse, metavar=f.metadata.get("metavar"), **kwargs)
    if f.metadata.get("names"):
        _lists(action, f.metadata["names"])


def _fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values in `args` of the fields of the dataclass `cls`."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def _unoptional(hint: Any) -> Any:
    """`X` of a type hint `X | None`; other hints as they are."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(t for t in typing.get_args(hint) if t is not type(None))
    return hint


def _add(sub: argparse._SubParsersAction, name: str, help: str, examples: str,
         handler: Handler) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name, help=help, description=help,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def _overwrite(p: argparse.ArgumentParser) -> None:
    """--overwrite of a command that claims its --out (plmkit.outputs.claim)."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out that plmkit did not write for this command")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`."""
    def integer(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}"
                                              if minimum != 1 else
                                              f"must be a positive number, not {value}")
        return value
    return integer


_positive = _at_least(1)


def _temperature(text: str) -> float:
    """An argparse type: a finite number >= 0 (0: greedy)."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be 0 (greedy) or more, not {text}")
    return value


def _claim(args: argparse.Namespace, command: str, *inputs: Path | None) -> bool:
    """Check `args.out` for `command` (plmkit.outputs.claim) and that it is none of `inputs`."""
    from plmkit.outputs import claim, refuse_inside

    refuse_inside(args.out, *inputs)
    return claim(args.out, command, overwrite=args.overwrite)


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from plmkit.data.corpus import CorpusStats
    from plmkit.data.shards import train_on_corpus
    from plmkit.outputs import staged

    if args.vocab_size < 1:
        raise UserError(f"--vocab-size must be a positive number, not {args.vocab_size}")
    _claim(args, "tokenizer train", *args.corpus)
    stats = CorpusStats()
    tok = train_on_corpus(args.kind, args.corpus, args.vocab_size, text_field=args.text_field,
                          stats=stats, lowercase=not args.cased,
                          min_frequency=args.min_frequency)
    for message in stats.messages():
        print(message, file=sys.stderr)
    with staged(args.out, "tokenizer train") as tmp:
        tok.save(tmp)
    print(f"trained a {args.kind} tokenizer with {tok.vocab_size} tokens -> {args.out}")


def cmd_data_prepare(args: argparse.Namespace) -> None:
    from plmkit.data.shards import prepare_out

    _claim(args, "data prepare", *args.corpus, args.tokenizer)
    corpus = prepare_out(args.corpus, args.tokenizer, args.out, args.text_field)
    print(f"{corpus.num_documents} documents, {corpus.num_tokens} tokens -> {args.out}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from plmkit.jobs.pretrain import pretrain

    pretrain(PretrainArgs(**_fields(args, PretrainArgs)))


def cmd_translate(args: argparse.Namespace) -> None:
    from plmkit.jobs.seq2seq import translate

    for line in translate(args.model, _input_lines(args), beam=args.beam):
        print(line)


def cmd_chat(args: argparse.Namespace) -> None:
    from plmkit.jobs.seq2seq import chat

    chat(args.model, beam=args.beam)


def cmd_plot(args: argparse.Namespace) -> None:
    from plmkit.outputs import staged_file
    from plmkit.training.plot import check_image_name, plot_metrics

    source = args.metrics / "metrics.jsonl" if args.metrics.is_dir() else args.metrics
    out = args.out or source.with_name("curves.png")  # the run's own plot: redrawn in place
    check_image_name(out, "--out")
    with staged_file(out, "--out", overwrite=args.overwrite or args.out is None) as tmp:
        plot_metrics(source, tmp)
    print(f"wrote {out}")


def cmd_bench(args: argparse.Namespace) -> None:
    from plmkit.bench.command import bench

    line = "plmkit " + " ".join(sys.argv[1:])
    print(bench(BenchArgs(**_fields(args, BenchArgs), command_line=line)))


def cmd_export(args: argparse.Namespace) -> None:
    if args.format == "onnx":
        return export_onnx(args)
    from plmkit.interop.start import export_hf
    from plmkit.outputs import staged
    from plmkit.tasks.embed import EmbeddingSetup

    for option in ("int8", "opset"):
        if getattr(args, option):
            raise UserError(f"--{option} is an option of --format onnx")
    if args.normalize and not args.sentence_transformers:
        raise UserError("--normalize goes with --sentence-transformers POOLING")
    _claim(args, "export", args.model)
    sentence = None
    if args.sentence_transformers:
        sentence = EmbeddingSetup(args.sentence_transformers, args.normalize)
    with staged(args.out, "export") as tmp:
        export_hf(args.model, tmp, sentence)
    print(f"wrote a Hugging Face {args.format} directory -> {args.out}")


def export_onnx(args: argparse.Namespace) -> None:
    """`plmkit export --format onnx` (plmkit.deploy.onnx)."""
    from plmkit.deploy.onnx import export_onnx, require
    from plmkit.outputs import staged

    if args.sentence_transformers or args.normalize:
        raise UserError("--sentence-transformers and --normalize are options of --format hf")
    require()
    _claim(args, "export", args.model)
    with staged(args.out, "export") as tmp:
        parity = export_onnx(args.model, tmp, int8=args.int8, opset=args.opset)
    print(parity.line())
    print(f"wrote an ONNX model{' (float32 and int8)' if args.int8 else ''} -> {args.out}")


def cmd_demo(args: argparse.Namespace) -> None:
    from plmkit.jobs.demo import run_demo

    run_demo(args.out, steps=args.steps, finetune_examples=args.finetune_examples)


def cmd_finetune(args: argparse.Namespace) -> None:
    from plmkit.jobs.finetune import finetune
    from plmkit.outputs import written_in_place
    from plmkit.tasks.base import load_task

    options = FinetuneOptions(**_fields(args, FinetuneOptions))
    given = [name for name in TASK_ONLY if args.task not in TASK_ONLY[name]
             and getattr(args, name) not in (None, False, getattr(FinetuneOptions, name, None))]
    if given:
        tasks = " or ".join(TASK_ONLY[given[0]])
        raise UserError(f"--{given[0].replace('_', '-')} is an option of --task {tasks} only")
    extra: dict[str, Any] = {k: v for k in ("pooling", "regression", "head")
                             if (v := getattr(args, k))}
    if args.task in TASK_ONLY["label_field"]:
        extra["columns"] = options.columns()
    task = load_task(args.task).make_task(train=args.train, **extra)
    existing = _claim(args, "finetune", args.model, args.train, args.eval)
    with written_in_place(args.out, "finetune", replace=existing):
        best = finetune(task, args.model, args.train, args.eval, args.out, options)
    print(json.dumps(best) if best else f"fine-tuned model (no --eval) -> {args.out}")


def cmd_distill(args: argparse.Namespace) -> None:
    from plmkit.jobs.distill import distill

    print(json.dumps(distill(DistillArgs(**_fields(args, DistillArgs)), args.overwrite)))


def cmd_evaluate(args: argparse.Namespace) -> None:
    if args.predictions is not None:
        if args.task != "squad":
            raise UserError("--predictions needs --task squad")
        from plmkit.tasks.squad import evaluate_predictions

        print(json.dumps(evaluate_predictions(args.eval, args.predictions)))
        return
    if args.model is None:
        raise UserError("give --model OUT (or --task squad --predictions PRED.json)")
    from plmkit.jobs.finetune import evaluate_dir, majority_baseline

    given = _given(args)
    scores = evaluate_dir(args.model, args.eval, given)
    print(json.dumps({**scores, **majority_baseline(args.model, args.eval, given)}))


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The fine-tuning options given to evaluate or predict (None: as fine-tuned)."""
    return {name: getattr(args, name) for name in ("batch_size", *COLUMN_FIELDS)}


def cmd_predict(args: argparse.Namespace) -> None:
    from plmkit.deploy.backend import predict_file

    with _output_file(args) as tmp:
        n = predict_file(args.model, args.input, tmp, _given(args), args.backend, args.int8)
    print(f"{n} predictions -> {args.output}", file=sys.stderr)


@contextlib.contextmanager
def _output_file(args: argparse.Namespace) -> Iterator[Path]:
    """A temporary file to write `args.output` to (plmkit.outputs.staged_file), which is none
    of the inputs."""
    from plmkit.outputs import refuse_inside, staged_file

    refuse_inside(args.output, args.input, args.model, option="--output")
    with staged_file(args.output, overwrite=args.overwrite) as tmp:
        yield tmp


def cmd_embed(args: argparse.Namespace) -> None:
    from plmkit.deploy.backend import EMBEDDING_FORMATS, embed_texts, read_texts, write_embeddings

    if args.output.suffix not in EMBEDDING_FORMATS:
        raise UserError(f"--output {args.output}: expected a file ending in "
                        f"{' or '.join(EMBEDDING_FORMATS)}")
    with _output_file(args) as tmp:
        texts = read_texts(args.input, args.text_field)
        vectors = embed_texts(args.model, texts, args.pooling, args.normalize,
                              args.max_seq_len, args.batch_size, args.backend, args.int8)
        write_embeddings(tmp, texts, vectors)
    print(f"{vectors.shape[0]} x {vectors.shape[1]} embeddings -> {args.output}")


def cmd_compare(args: argparse.Namespace) -> None:
    from plmkit.jobs.compare import CompareArgs, compare

    kind, amount = args.budget
    try:
        budget = (kind, float(amount))
    except ValueError:
        raise UserError(f"--budget {kind} {amount}: {amount!r} is not a number") from None
    results = compare(CompareArgs(**{**_fields(args, CompareArgs), "budget": budget}))
    if results is None:
        print(f"other processes hold seeds of this study (--records {args.records}): no report "
              "yet; a call without --no-wait waits for them and writes it")
        return
    print((args.out / "results.md").read_text(), end="")
    print(f"{len(results['results'])} arms -> {args.out}/results.json, results.md, *.png")


def cmd_env(args: argparse.Namespace) -> None:
    import platform

    import torch

    from plmkit import __version__
    from plmkit.training import allocator, precision

    cpu = torch.device("cpu")
    print(json.dumps({"plmkit": __version__, "torch": torch.__version__,
                      "python": platform.python_version(), "threads": torch.get_num_threads(),
                      "cuda": torch.cuda.is_available(), "allocator": allocator.in_use(),
                      "cpu_bf16_speedup": round(precision.cpu_bf16_speedup(), 2),
                      "cpu_bf16_default": precision.fast_bf16(cpu)}))


def cmd_data_build(args: argparse.Namespace) -> None:
    from plmkit.data.builders import build_dataset
    from plmkit.outputs import staged

    _claim(args, "data build")
    with staged(args.out, "data build") as tmp:
        paths = build_dataset(args.name, tmp, args.seed)
    for path in paths:
        print(args.out / path.relative_to(tmp))


PRESETS_MARK = "{presets}"  # replaced by the preset list when the help is shown


class _DefaultsHelp(argparse.RawDescriptionHelpFormatter):
    """Help that shows the default of every option with a value (unless its text speaks of
    one) and, in place of PRESETS_MARK, the model presets (the registry imported only then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and action.nargs != 0 and "default" not in text
                and default is not None and default != [] and default != argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if PRESETS_MARK in text:
            from plmkit.models.registry import FAMILIES

            lines = [f"  {name}: {' '.join(family.presets)}"
                     for name, family in sorted(FAMILIES.items())]
            text = text.replace(PRESETS_MARK, "presets:\n" + "\n".join(lines))
        return super()._fill_text(text, width, indent)


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    top = argparse.ArgumentParser(
        prog="plmkit",
        description="Pretrain, fine-tune, compare and ship classic Transformer language models.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add(sub, "demo", "the whole pipeline on the default data (English tweets), in minutes",
             "plmkit demo\nplmkit demo --out runs/demo --steps 300", cmd_demo)
    p.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="a new or empty directory, or an earlier demo's (which continues)")
    p.add_argument("--steps", type=_positive, default=600, help="pretraining steps")
    p.add_argument("--finetune-examples", type=_at_least(0), default=6000,
                   help="training tweets for the sentiment fine-tuning (0: skip it)")

    tok = _add(sub, "tokenizer", "train tokenizers", "plmkit tokenizer train --help", None)
    tsub = tok.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _add(tsub, "train", "train a tokenizer on a corpus",
             "plmkit tokenizer train --kind wordpiece --corpus a.txt,b.txt --vocab-size 8000 "
             "--out tok/", cmd_tokenizer_train)
    p.add_argument("--kind", required=True, choices=Registry("plmkit.tokenizers:KINDS"),
                   help="char: every CJK character a token, Latin words in word pieces "
                        "(BERT-Chinese, ERNIE)")
    add_options(p, PretrainArgs, ["corpus", "text_field"])
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cased", action="store_true", help="keep case (default: lowercase)")
    _overwrite(p)
    p.add_argument("--min-frequency", type=int, default=2)

    data = _add(sub, "data", "prepare corpora", "plmkit data prepare --help", None)
    dsub = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _add(dsub, "prepare", "tokenize a corpus once into memory-mapped token shards",
             "plmkit data prepare --corpus corpus.txt --tokenizer tok/ --out shards/",
             cmd_data_prepare)
    add_options(p, PretrainArgs, ["corpus", "text_field"])
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    _overwrite(p)
    p = _add(dsub, "build", "write a task dataset from installed packages (fixed splits)",
             "\n".join(f"plmkit data build --name {name} --out data/{name}  # {d.files}: "
                       f"{d.about}" for name, d in TASK_DATASETS.items()), cmd_data_build)
    p.add_argument("--name", required=True, choices=list(TASK_DATASETS))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle before splitting")
    _overwrite(p)

    p = _add(sub, "pretrain", "pretrain a model with its objective on a corpus",
             """
             plmkit pretrain --model all-MiniLM-L6-v2/ --corpus bible.txt --out runs/dapt
             plmkit pretrain --model bert-tiny --corpus corpus.txt --out runs/bert --steps 200
             plmkit pretrain --model roberta-tiny:mlm:masking=static --corpus c.txt --out runs/r
             plmkit pretrain --model electra-disc/ --generator electra-gen/ --corpus c.txt \
                 --out runs/electra
             plmkit pretrain --model bert-mini --objective mlm --corpus a.txt,b.jsonl \\
                 --tokenizer tok/ --out runs/mini --batch-size 32 --seq-len 128 --resume
             """, cmd_pretrain)
    p.description = f"{p.description}\n\n{PRESETS_MARK}"
    p.formatter_class = _DefaultsHelp
    add_options(p, PretrainArgs)

    add_task_commands(sub)
    add_use_commands(sub)

    p = _add(sub, "distill", "train a small student to imitate a teacher (soft targets, "
             "hidden states, attention)", """
             plmkit distill --teacher runs/sentiment --student-layers 3 --train train.csv \\
                 --eval dev.csv --unlabeled tweets.txt --out runs/sentiment-3l
             plmkit distill --teacher runs/bert --student bert-mini --corpus corpus.txt \\
                 --steps 2000 --out runs/distilled-mini
             plmkit distill --teacher runs/bert --student-layers 2 --corpus corpus.txt \\
                 --alpha-hidden 1 --alpha-attn 1 --out runs/tiny  # TinyBERT's terms too
             """, cmd_distill)
    p.formatter_class = _DefaultsHelp
    add_options(p, DistillArgs)
    _overwrite(p)

    p = _add(sub, "translate", "translate source lines (a file or stdin), one output per line",
             "plmkit translate --model runs/en-es --input verses.txt\n"
             "echo 'In the beginning' | plmkit translate --model runs/en-es", cmd_translate)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--input", type=Path, help="source lines (default: stdin)")
    p.add_argument("--beam", type=_positive, default=4, help="beam size (1: greedy)")

    p = _add(sub, "chat", "talk to a trained sequence-to-sequence model, a line at a time",
             "plmkit chat --model runs/dialogue", cmd_chat)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--beam", type=_positive, default=4)

    p = _add(sub, "plot", "plot loss and accuracy curves of a run as PNG",
             "plmkit plot --metrics runs/bert\nplmkit plot --metrics runs/bert/metrics.jsonl "
             "--out curves.png", cmd_plot)
    p.add_argument("--metrics", type=Path, required=True, help="run directory or metrics.jsonl")
    p.add_argument("--out", type=Path,
                   help="an image file (default: curves.png beside metrics.jsonl, redrawn)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    p = _add(sub, "bench", "plmkit vs transformers, interleaved in one run: tokens/s and ratio",
             "plmkit bench --json bench.json --markdown BENCHMARKS.md\n"
             "plmkit bench --models bert-mini,bert-base --modes train,train-defaults\n"
             "plmkit bench --modes serve --reps 50 --json serve.json  # vs ONNX Runtime",
             cmd_bench)
    add_options(p, BenchArgs)

    p = _add(sub, "compare", "pretrain models at equal compute with several seeds, score, "
             "compare", """
             plmkit compare --models bert-tiny:mlm,electra-tiny --corpus train.txt \\
                 --heldout heldout.txt --budget flops 2e13 --tasks sentiment-en,nsp-en \\
                 --claim 'electra-tiny > bert-tiny:mlm' --out runs/compare
             plmkit compare --models roberta-tiny:mlm:masking=static,roberta-tiny:mlm \\
                 --corpus corpus.txt --budget steps 500 --pretrain-seeds 5 --out runs/masking
             plmkit compare --models albert-tiny::sharing=all,albert-tiny::sharing=none \\
                 --corpus corpus.txt --budget minutes 10 --control none \\
                 --tasks classify:train.csv:dev.csv:test.csv --out runs/sharing
             """, cmd_compare)
    p.add_argument("--models", type=_names, required=True,
                   help="comma-separated PRESET[:OBJECTIVE][:KEY=VALUE...]; KEY is a pretrain "
                        "option of the arm's recipe (masking, input_format, max_ngram, ...; "
                        "docs/compare.md) or a model config field")
    add_options(p, PretrainArgs, ["corpus"])
    p.add_argument("--heldout", type=_paths, default=[],
                   help="comma-separated held-out txt/jsonl files: every arm is scored on one "
                        "fixed mask set made from them (masked-LM loss and accuracy, ...)")
    p.add_argument("--heldout-batches", type=int, default=16,
                   help="held-out batches of --batch-size x --seq-len (default 16)")
    p.add_argument("--budget", nargs=2, metavar=("UNIT", "N"), required=True,
                   help="steps, tokens, flops (model FLOPs) or minutes, and how many")
    _lists(p.add_argument("--tasks", type=_names, default="sentiment-en",
                          help="comma-separated datasets (%(names)s) or TASK:TRAIN:DEV[:TEST] "
                               "(default: sentiment-en)"),
           "plmkit.jobs.compare.downstream:TASK_OF_DATASET")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--records", type=Path,
                   help="also keep each finished pretraining seed's scores (a few KB, no "
                        "weights), the setup and the tokenizer here; a later call with this "
                        "folder, from any --out or machine, reuses them instead of training")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="with --records shared by other calls: train the seeds no other call "
                        "holds, then stop without a report instead of waiting for theirs")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out that is not a compare run of this setup "
                        "(its contents go once the new run starts training)")
    p.add_argument("--pretrain-seeds", type=int, default=3,
                   help="pretraining runs per model, seeds 0..N-1 (default 3)")
    p.add_argument("--seeds", type=int, default=3,
                   help="fine-tuning seeds per pretraining seed and task (default 3)")
    p.add_argument("--control", type=_control, default="auto", metavar="SPEC|none",
                   help="the 1-step control arm: auto (the first model, default), another "
                        "model spec, or none")
    p.add_argument("--claim", dest="claims", action="append", default=[], metavar="'A > B'",
                   help="a claim to test: model A (as given in --models) scores higher than "
                        "B (or control); repeatable. Every model is tested against the control")
    p.add_argument("--tokenizer", type=Path, help="shared tokenizer (default: WordPiece, trained)")
    p.add_argument("--tokenizer-kind", choices=Registry("plmkit.tokenizers:KINDS"),
                   default="wordpiece",
                   help="kind of the shared tokenizer trained without --tokenizer (char: Chinese)")
    p.add_argument("--vocab-size", type=int, default=8000)
    add_options(p, PretrainArgs, ["batch_size", "seq_len"])
    p.add_argument("--lr", type=float, default=1e-3, help="pretraining learning rate")
    p.add_argument("--finetune-examples", type=int, default=2000,
                   help="training records per task (0: all)")
    p.add_argument("--finetune-epochs", type=float, default=2.0)
    p.add_argument("--finetune-lr", type=float,
                   help="default: by model size, as plmkit finetune (tasks.options.default_lr)")
    p.add_argument("--finetune-bf16", action="store_true",
                   help="fine-tune, evaluate and probe in bf16 autocast (about 2x faster where "
                        "`plmkit env` measures bf16 fast, slower elsewhere; part of the setup: "
                        "a study keeps it throughout)")
    add_options(p, FinetuneOptions, COLUMN_FIELDS)  # of TASK:TRAIN:DEV files
    p.add_argument("--progress", action="store_true", help="progress bars")

    _add(sub, "env", "print versions, threads and the memory allocator in use as JSON",
         "plmkit env\nPLMKIT_ALLOCATOR=system plmkit env  # glibc malloc, no tcmalloc", cmd_env)

    p = _add(sub, "export", "write a model as a Hugging Face transformers directory or ONNX",
             """
             plmkit export --format hf --model runs/bert --out hf-bert/
             plmkit export --format onnx --model runs/sentiment --out onnx-sentiment/ --int8
             """, cmd_export)
    p.add_argument("--format", choices=["hf", "onnx"], default="hf",
                   help="hf: a transformers directory; onnx: model.onnx, its tokenizer and "
                        "plmkit-onnx.json, checked against plmkit (pip install plmkit[deploy])")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sentence-transformers", choices=["cls", "mean", "max"], metavar="POOLING",
                   help="also write sentence-transformers files pooling by cls, mean or max")
    p.add_argument("--normalize", action="store_true",
                   help="with --sentence-transformers: unit-length vectors (a Normalize module)")
    p.add_argument("--int8", action="store_true",
                   help="onnx: also model.int8.onnx, dynamically quantised (int8 weights)")
    p.add_argument("--opset", type=_positive, metavar="N",
                   help="onnx: the ONNX opset, 18 to 22 (default: the exporter's, 20)")
    _overwrite(p)
    return top


def _column_options(p: argparse.ArgumentParser) -> None:
    """evaluate's and predict's --text-field, --text-pair-field and --label-field: by default
    the columns the model was fine-tuned with (its finetune.json)."""
    add_options(p, FinetuneOptions, COLUMN_FIELDS)
    p.set_defaults(**dict.fromkeys(COLUMN_FIELDS))
    p.epilog = (f"{p.epilog}\n\n--text-field, --text-pair-field and --label-field default to "
                "those the model was fine-tuned with.")


def add_task_commands(sub: argparse._SubParsersAction) -> None:
    """finetune, evaluate, predict, embed."""
    p = _add(sub, "finetune", "fine-tune a model on a task; OUT keeps the best model",
             """
             plmkit finetune --task classify --model runs/bert --train train.csv --eval dev.csv \
                 --out runs/sentiment
             plmkit finetune --task tag --model hf-bert/ --train train.conll --eval dev.conll \
                 --out runs/ner --epochs 2 --lr 5e-5
             plmkit finetune --task classify --regression --model runs/bert --train sts.tsv \
                 --out runs/sts
             plmkit finetune --task classify --model runs/bert --train reviews.parquet \
                 --text-field sentence --label-field sentiment --out runs/reviews
             """, cmd_finetune)
    p.add_argument("--task", required=True, choices=Registry("plmkit.tasks.base:TASK_MODULES"))
    p.add_argument("--model", type=Path, required=True,
                   help="a plmkit run or a transformers directory")
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--eval", type=Path, help="evaluated every epoch; the best model is kept")
    p.add_argument("--out", type=Path, required=True)
    p.formatter_class = _DefaultsHelp
    add_options(p, FinetuneOptions)
    p.add_argument("--pooling", choices=Registry("plmkit.tasks.base:HEAD_POOLINGS"),
                   help="classify: sentence vector (default: cls)")
    p.add_argument("--regression", action="store_true", help="classify: numeric labels")
    _overwrite(p)

    p = _add(sub, "evaluate", "print a fine-tuned model's metrics on a file as one JSON object",
             """
             plmkit evaluate --model runs/sentiment --eval test.csv
             plmkit evaluate --task squad --eval dev-v1.1.json --predictions predictions.json
             """, cmd_evaluate)
    p.add_argument("--model", type=Path, help="an OUT directory of plmkit finetune")
    p.add_argument("--eval", type=Path, required=True)
    p.add_argument("--task", choices=["squad"], help="with --predictions: score that file")
    p.add_argument("--predictions", type=Path, help="SQuAD predictions {id: answer text}")
    p.add_argument("--batch-size", type=_positive)
    _column_options(p)

    p = _add(sub, "predict", "run a fine-tuned model on a file; one JSON line per record",
             """
             plmkit predict --model runs/sentiment --input texts.txt --output predictions.jsonl
             plmkit predict --model runs/ner --input sentences.conll --output entities.jsonl
             plmkit predict --model onnx-sentiment/ --backend onnx --input t.txt --output p.jsonl
             """, cmd_predict)
    p.add_argument("--model", type=Path, required=True)
    _backend_options(p)
    p.add_argument("--input", type=Path, required=True,
                   help="classify: text lines, csv, tsv or jsonl; tag: CoNLL")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--batch-size", type=_positive)
    _column_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")

    p = _add(sub, "embed", "sentence vectors of text lines (or jsonl/csv `text`): .npy or .jsonl",
             """
             plmkit embed --model runs/bert --input sentences.txt --output vectors.npy
             plmkit embed --model runs/bert --input sentences.txt --output vectors.jsonl
             plmkit embed --model all-MiniLM-L6-v2/ --input docs.jsonl --output v.npy
             plmkit embed --model runs/bert --input s.txt --output v.npy --pooling mean --normalize
             plmkit embed --model onnx-minilm/ --backend onnx --input s.txt --output v.npy
             """, cmd_embed)
    p.add_argument("--model", type=Path, required=True)
    _backend_options(p)
    p.add_argument("--input", type=Path, required=True,
                   help="text lines, or csv / tsv / jsonl / parquet / arrow records")
    p.add_argument("--text-field", default="text", metavar="NAME",
                   help="the field or column holding the text in csv, tsv, jsonl and table "
                        "inputs (default: text)")
    p.add_argument("--output", type=Path, required=True,
                   help=".npy (N x H float32) or .jsonl (one {text, embedding} per line)")
    p.add_argument("--pooling", choices=Registry("plmkit.tasks.embed:POOLINGS"),
                   help="cls: the [CLS] / <s> hidden state; pooler: BERT's tanh pooler over it; "
                        "mean / max over the tokens (default: the directory's "
                        "sentence-transformers pooling, else cls)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="unit-length vectors (default: as the sentence-transformers files say, "
                        "else not)")
    p.add_argument("--max-seq-len", type=_positive,
                   help="tokens per text (default: sentence-transformers' max_seq_length, "
                        "else 512)")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")


def cmd_attention(args: argparse.Namespace) -> None:
    import plmkit
    from plmkit.deploy.inspect import attention_maps, write_attention
    from plmkit.outputs import staged

    _claim(args, "attention", args.model)
    maps = attention_maps(plmkit.load(args.model), _tokenizer(args.model), args.text, args.pair)
    with staged(args.out, "attention") as tmp:
        written = write_attention(maps, tmp)
    layers, heads = maps.weights.shape[:2]
    print(f"{layers} layers x {heads} heads over {len(maps.tokens)} tokens: {len(written)} PNGs "
          f"and attention.npz -> {args.out}")


def _tokenizer(model_dir: Path) -> Any:
    """The tokenizer of a model directory (plmkit's, or a transformers directory's)."""
    from plmkit.interop.native import tokenizer_dir
    from plmkit.tokenizers import Tokenizer

    return Tokenizer.load(tokenizer_dir(model_dir))


def cmd_prune(args: argparse.Namespace) -> None:
    from plmkit.deploy.prune import parse_heads, prune_dir
    from plmkit.outputs import staged

    heads = parse_heads(args.heads) if args.heads is not None else None
    _claim(args, "prune", args.model, args.data)
    with staged(args.out, "prune") as tmp:
        result = prune_dir(args.model, tmp, heads, args.fraction, args.data)
    print(f"{result.summary()} -> {args.out}")


def cmd_fill_mask(args: argparse.Namespace) -> None:
    from plmkit.deploy.fill_mask import (
        fill_mask,
        fill_mask_file,
        fill_mask_lines,
        format_predictions,
        load_mlm,
    )

    model, tok = load_mlm(args.model), _tokenizer(args.model)
    if args.text is not None:
        print(format_predictions(fill_mask(model, tok, [args.text], args.top_k)[0]))
    elif args.input is not None:
        fill_mask_file(model, tok, args.input, sys.stdout, args.top_k)
    else:
        fill_mask_lines(model, tok, sys.stdin, sys.stdout, args.top_k, prompt=sys.stdin.isatty())


def cmd_generate(args: argparse.Namespace) -> None:
    import plmkit
    from plmkit.deploy.generate import check_causal, continue_prompts
    from plmkit.jobs.seq2seq import translate_with

    model, tok = plmkit.load(args.model).eval(), _tokenizer(args.model)
    prompts = [p for p in ([args.text] if args.text is not None else _input_lines(args))
               if p.strip()]
    if hasattr(model, "decode"):  # an encoder-decoder: its output for each input line
        lines = translate_with(model, tok, prompts, beam=args.beam)
    else:
        lines = continue_prompts(check_causal(model, args.model), tok, prompts,
                                 args.max_new_tokens, args.temperature, args.top_k, args.seed)
    for line in lines:
        print(line)


def _input_lines(args: argparse.Namespace) -> list[str]:
    """The lines of `args.input`, or of stdin without it."""
    return (args.input.read_text(encoding="utf-8") if args.input else sys.stdin.read()).splitlines()


def cmd_serve(args: argparse.Namespace) -> None:
    from plmkit.deploy.serve import serve

    serve(args.model, args.host, args.port, args.backend, args.int8)


def _backend_options(p: argparse.ArgumentParser) -> None:
    """--backend and --int8 of serve, predict and embed (plmkit.deploy.backend)."""
    p.add_argument("--backend", choices=Registry("plmkit.deploy.backend:BACKENDS"), default="torch",
                   help="torch: a plmkit or transformers directory; onnx: a directory of "
                        "`plmkit export --format onnx`, run by onnxruntime")
    p.add_argument("--int8", action="store_true",
                   help="torch: Linear layers dynamically quantised to int8; onnx: the "
                        "export's model.int8.onnx (exported with --int8)")


def add_use_commands(sub: argparse._SubParsersAction) -> None:
    """attention, prune, fill-mask, generate, serve."""
    p = _add(sub, "attention", "attention maps of every layer and head on a text, as PNG heatmaps",
             """
             plmkit attention --model runs/bert --text "the cat sat on the mat" --out att/
             plmkit attention --model hf-minilm/ --text "a question" --pair "a passage" --out att/
             """, cmd_attention)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--pair", help="a second segment (sentence pairs)")
    p.add_argument("--out", type=Path, default=Path("attention"),
                   help="layer{L}_head{H}.png, overview.png and attention.npz (weights, tokens)")
    _overwrite(p)

    p = _add(sub, "prune", "remove attention heads physically; save the smaller model",
             """
             plmkit prune --model runs/sentiment --heads 0:1,0:3,5:0 --out runs/pruned
             plmkit prune --model runs/sentiment --fraction 0.3 --data dev.csv --out runs/pruned
             """, cmd_prune)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--heads", help="LAYER:HEAD pairs to remove, comma-separated (0-based)")
    p.add_argument("--fraction", type=float,
                   help="remove this fraction of heads, least important first (Michel et al. "
                        "2019); needs --data and a model fine-tuned with --task classify")
    p.add_argument("--data", type=Path, help="labelled examples to score the heads on")
    _overwrite(p)

    p = _add(sub, "fill-mask", "top-k predictions for each mask token ([MASK] or <mask>)",
             """
             plmkit fill-mask --model runs/bert --text "i love this [MASK]"
             plmkit fill-mask --model runs/bert --input masked.txt  # one JSON line per line
             plmkit fill-mask --model runs/bert  # interactive: type lines
             """, cmd_fill_mask)
    p.add_argument("--model", type=Path, required=True)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--text")
    source.add_argument("--input", type=Path, help="a file of lines (default: stdin)")
    p.add_argument("--top-k", type=_positive, default=5)

    p = _add(sub, "generate", "continue prompts (causal LM) or transform lines (seq2seq)",
             """
             plmkit generate --model runs/txl --text "In the beginning" --max-new-tokens 40
             plmkit generate --model runs/txl --text "And God said" --temperature 0.8 --top-k 40
             plmkit generate --model runs/en-es --input verses.txt --beam 4
             """, cmd_generate)
    p.add_argument("--model", type=Path, required=True)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--text")
    source.add_argument("--input", type=Path, help="prompts, one per line (default: stdin)")
    p.add_argument("--max-new-tokens", type=_positive, default=50)
    p.add_argument("--temperature", type=_temperature, default=0.0, help="0: greedy")
    p.add_argument("--top-k", type=_at_least(0), default=0,
                   help="sample among the k best (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beam", type=_positive, default=4,
                   help="seq2seq models: beam size (1: greedy)")

    p = _add(sub, "serve", "an HTTP JSON service (and a demo page) over a model",
             """
             plmkit serve --model runs/sentiment --port 8000
             curl -s localhost:8000/v1/classify -d '{"texts": ["what a day"]}'
             plmkit serve --model runs/sentiment --int8  # Linear layers in int8 (torch)
             plmkit serve --model onnx-sentiment/ --backend onnx  # plmkit export --format onnx
             """, cmd_serve)
    p.add_argument("--model", type=Path, required=True)
    _backend_options(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `plmkit` console script (`argv` None: the process's own arguments,
    and the process may re-execute itself with a fast allocator, `plmkit.training.allocator`)."""
    try:
        return _run(argv)
    except KeyboardInterrupt:  # during start-up, before a command could save anything
        print("plmkit: interrupted", file=sys.stderr)
        return 130


def _run(argv: Sequence[str] | None) -> int:
    if argv is None:
        from plmkit.training.allocator import reexec_with_fast_allocator

        reexec_with_fast_allocator(sys.argv[1:])
    args = parser().parse_args(argv)
    if args.handler is None:  # a group such as `plmkit tokenizer` without its action
        parser().parse_args([*(argv or sys.argv[1:]), "--help"])
    try:
        args.handler(args)
    except UserError as e:
        print(f"plmkit: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused: a permission, a full disk, a FIFO...
        from plmkit.outputs import os_error_message

        print(f"plmkit: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"plmkit: interrupted: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
