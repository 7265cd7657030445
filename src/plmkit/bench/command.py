"""`plmkit bench`: its options (`BenchArgs`, from which the CLI builds them) and what it runs:
the model suite against transformers (`bench.suite`), the data pipeline against BERT's
reference (`bench.data`, --data) or the HTTP server against ONNX Runtime (`bench.serve`,
--modes serve). Importing this module imports none of them."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from plmkit.errors import UserError
from plmkit.jobs.options import cli
from plmkit.training.plot import check_image_name

DATA_PRESETS = ["bert-mini", "bert-base"]  # --data with --models suite


@dataclass
class BenchArgs:
    """The options of `plmkit bench`; `command_line`: recorded in the reports."""

    models: str = field(default="suite", metadata=cli(
        "comma-separated presets, or `suite`: every family at tiny, small, base"))
    modes: str = field(default="train,infer", metadata=cli(
        "comma-separated: %(names)s (serve runs alone; plmkit/bench/suite.py MODES)",
        names="plmkit.bench.suite:MODES"))
    dtypes: str = field(default="float32", metadata=cli(
        "comma-separated: %(names)s (autocast, both sides)", names="plmkit.bench.suite:DTYPES"))
    batch_size: int = field(default=8, metadata=cli("sequences per batch", minimum=1))
    seq_len: int = field(default=128, metadata=cli("tokens per sequence", minimum=1))
    reps: int = field(default=5, metadata=cli("timed runs of each side, alternating",
                                              minimum=1))
    no_mfu: bool = field(default=False, metadata=cli(
        "skip the matmul peak and the FLOP-counted step"))
    device: str = field(default="cpu", metadata=cli(
        "torch device of both sides: cpu (default), cuda, cuda:1"))
    json: Path | None = field(default=None, metadata=cli("write the report as JSON"))
    markdown: Path | None = field(default=None, metadata=cli(
        "write the report's table into this Markdown file's generated section"))
    from_json: Path | None = field(default=None, metadata=cli(
        "print (and --markdown) a saved report"))
    data: Path | None = field(default=None, metadata=cli(
        "instead: raw text -> batches MB/s against a port of BERT's create_pretraining_data, "
        "and the loader's share of a step (--models: BERT presets, default "
        "bert-mini,bert-base)", metavar="CORPUS"))
    tokenizer: Path | None = field(default=None, metadata=cli(
        "with --data: a WordPiece tokenizer (default: trained on CORPUS)"))
    data_sizes: str = field(default="", metadata=cli(
        "with --data, instead: CORPUS's documents repeated and shuffled to each size, "
        "comma-separated MB (e.g. 10,100,1000), each prepared in fresh processes: seconds "
        "and peak RSS"))
    data_ranks: str = field(default="1", metadata=cli(
        "with --data-sizes: comma-separated numbers of processes preparing together (gloo)"))
    seq_lens: str = field(default="", metadata=cli(
        "instead of --seq-len: comma-separated lengths (e.g. 128,256,512,1024,2048), every "
        "model measured at each, position tables widened where shorter: scaling curves"))
    plot: Path | None = field(default=None, metadata=cli(
        "with --seq-lens: a PNG of tokens/s and peak MB against sequence length (with "
        "--markdown, embedded in its curves section)"))
    finetune_train: int = field(default=2000, metadata=cli(
        "--modes finetune: the first N records of sentiment-en's train.csv (0: all 29,749)",
        minimum=0))
    finetune_eval: int = field(default=500, metadata=cli(
        "--modes finetune: the first N records of sentiment-en's dev.csv (0: all 3,718)",
        minimum=0))
    finetune_epochs: float = field(default=1.0, metadata=cli("--modes finetune: epochs"))
    command_line: str = "plmkit bench"


def bench(args: BenchArgs) -> str:
    """Run what `args` ask for; the report to print."""
    for out in (args.json, args.markdown, args.plot):  # before a run of minutes, not after it
        if out is not None and not out.parent.is_dir():
            raise UserError(f"{out}: no such directory {out.parent}")
    if args.plot is not None:
        check_image_name(args.plot, "--plot")
    if args.data:
        return bench_data(args)
    if args.data_sizes:
        raise UserError("--data-sizes needs --data CORPUS: the text to repeat")
    if "serve" in args.modes.split(","):
        return bench_serve(args)
    if "finetune" in args.modes.split(","):
        return bench_finetune(args)
    if args.plot is not None and not (args.seq_lens or args.from_json):
        raise UserError("--plot needs --seq-lens (or a saved report: --from-json)")
    return bench_suite(args)


def _models(args: BenchArgs, suite: list[str] | tuple[str, ...]) -> list[str]:
    return list(suite) if args.models == "suite" else args.models.split(",")


def bench_suite(args: BenchArgs) -> str:
    """The suite's table (`bench.suite`), run now or read from --from-json; with --json and
    --markdown, the report written there too."""
    from plmkit.bench import suite

    if args.from_json:
        report = suite.read_json(args.from_json)
    else:
        dtypes, modes = tuple(args.dtypes.split(",")), args.modes.split(",")
        device = suite.parse_device(args.device)
        seqs = _numbers(args.seq_lens, "--seq-lens", int) if args.seq_lens else [args.seq_len]
        peaks = None if args.no_mfu else {
            d: suite.matmul_peak(d, device=device) for d in suite.peak_dtypes(modes, dtypes)}
        records = [r for seq in seqs for r in suite.run(
            _models(args, suite.SUITE), modes, args.batch_size, seq, args.reps, dtypes=dtypes,
            peaks=peaks, remeasure=True, device=device)]
        if args.json:
            suite.write_json(records, args.json, peaks, args.command_line)
        report = {"command": args.command_line, "machine": suite.machine(),
                  "matmul_peak_flops": peaks or {}, "records": records}
    text = suite.table(report["records"])
    curves = len({r.seq for r in report["records"]}) > 1
    if args.plot:
        from plmkit.bench.curves import plot

        plot(report["records"], args.plot)
        text += f"\nwrote {args.plot}"
    if args.markdown:
        image = _relative(args.plot, args.markdown) if args.plot else None
        markers = curve_markers() if curves else (suite.BEGIN, suite.END)
        suite.update_markdown(args.markdown, suite.markdown(report, markers, image), markers)
        text += f"\nupdated {args.markdown}"
    return text


def curve_markers() -> tuple[str, str]:
    """The markers of the generated curves section (`bench.curves`)."""
    from plmkit.bench.curves import MARKERS

    return MARKERS


def _relative(path: Path, markdown: Path) -> str:
    """`path` as a link from the Markdown file `markdown`."""
    import os

    return Path(os.path.relpath(path.resolve(), markdown.resolve().parent)).as_posix()


def bench_finetune(args: BenchArgs) -> str:
    """--modes finetune: `plmkit finetune` against transformers' Trainer (`bench.finetune`),
    run now or read from --from-json; with --json and --markdown, the report written there too."""
    from plmkit.bench import finetune

    if args.modes != "finetune":
        raise UserError("--modes finetune runs alone")
    if args.from_json:
        rows = finetune.read_report(args.from_json)
    else:
        rows = finetune.report(run_finetune(args), args.command_line)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
    text = finetune.table(finetune.records(rows))
    if args.markdown:
        from plmkit.bench import suite

        suite.update_markdown(args.markdown, finetune.markdown(rows), finetune.MARKERS)
        text += f"\nupdated {args.markdown}"
    return text


def run_finetune(args: BenchArgs) -> list:
    """The `bench.finetune` records of the finetune mode's options."""
    from plmkit.bench import finetune
    from plmkit.tasks.options import FinetuneOptions

    for option, value in (("--reps", args.reps), ("--batch-size", args.batch_size),
                          ("--seq-len", args.seq_len), ("--finetune-epochs", args.finetune_epochs)):
        if value <= 0:
            raise UserError(f"{option} {value:g}: must be positive")
    options = FinetuneOptions(epochs=args.finetune_epochs, batch_size=args.batch_size,
                              max_seq_len=args.seq_len, progress=False)
    return finetune.run(finetune.parse_runs(args.models), args.reps, options,
                        args.finetune_train, args.finetune_eval, tuple(args.dtypes.split(",")))


def bench_data(args: BenchArgs) -> str:
    """--data: the data pipeline's table (`bench.data`); with --json, its records there too."""
    from plmkit.bench import data

    if args.markdown or args.from_json:
        raise UserError("--data writes no Markdown and reads no saved report: use --json")
    if args.data_sizes:
        sizes = _numbers(args.data_sizes, "--data-sizes", float)
        ranks = _numbers(args.data_ranks, "--data-ranks", int)
        curve = data.run_curve(args.data, args.tokenizer, sizes, ranks)
        _write_records(args, {"data-curve": curve})
        return data.curve_table(curve)
    records, loader = data.run_data(args.data, args.tokenizer, _models(args, DATA_PRESETS),
                                    args.seq_len, args.batch_size, args.reps)
    _write_records(args, {"data": records, "data-loader": loader})
    return data.table(records, loader)


def _write_records(args: BenchArgs, modes: dict[str, list]) -> None:
    """With --json: the records there (`suite.write_records`)."""
    from plmkit.bench import suite

    if args.json:
        suite.write_records(args.json, modes, args.command_line)


def _numbers(text: str, option: str, kind: type[float] | type[int]) -> list:
    """Comma-separated positive numbers, or a one-line UserError."""
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        raise UserError(f"{option} {text}: expected comma-separated positive numbers")
    return values


def bench_serve(args: BenchArgs) -> str:
    """--modes serve: the server's table (`bench.serve`); with --json, the report there too."""
    from plmkit.bench import serve, suite

    if args.modes != "serve" or args.from_json or args.markdown:
        raise UserError("--modes serve runs alone, without --from-json and --markdown")
    with tempfile.TemporaryDirectory() as root:
        forwards, loads = serve.run(_models(args, serve.MODELS), Path(root), seq=args.seq_len,
                                    reps=args.reps)
    if args.json:
        suite.write_records(args.json, {"serve-forward": forwards, "serve-load": loads},
                            args.command_line)
    return serve.table(forwards, loads)
