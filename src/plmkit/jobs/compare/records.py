"""`plmkit compare --records DIR`: what a study keeps beyond its run folders.

A study of many pretraining runs can outlast the machine it started on. With `--records`, each
pretraining seed's record (learning curve, scores and fine-tuning results: a few KB, no weights)
is written to DIR/ARM/seed-N.json once that seed is fully scored, beside the study's setup,
each arm's steps and the shared tokenizer. A later call with the same DIR, on any machine and
with any --out, takes the recorded seeds from DIR instead of training them again: DIR is small
enough to commit beside the study's results, and a study resumes from it where its run folders
are gone.

Several processes (cores, machines sharing a file system) can run one study together, each
with its own --out and the same DIR: a process holds the seed it trains by a claim file
(DIR/ARM/.seed-N.claim: its machine, boot and pid, touched every `HEARTBEAT` seconds), the
others pass that seed by and wait for its record once nothing else is left. A claim is taken
over where its process has died (same boot of the same machine: a paused process keeps it) or,
from another machine, where it has not been touched for `STALE` seconds.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plmkit.errors import UserError
from plmkit.outputs import fix_modes

SETUP = "compare-setup.json"
ARM = "arm.json"  # an arm's FLOPs per step and steps
TOKENIZER = "tokenizer"
LOCK = ".claims.lock"  # held while a claim is looked at or taken
HEARTBEAT = 60.0  # seconds between two touches of a held claim
STALE = 600.0  # seconds untouched after which a claim's process is taken as gone


def setup_difference(saved: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The first setup key on which `saved` and `wanted` differ (a key either side names)."""
    keys = [*wanted, *(k for k in saved if k not in wanted)]
    return next((k for k in keys if saved.get(k) != wanted.get(k)), None)


def check_records(records: Path, wanted: dict[str, Any], out: Path) -> None:
    """Refuse DIR where it lies in OUT (`out`), keeps another setup's study, or is a file or a
    folder of something else."""
    if out.resolve() in [records.resolve(), *records.resolve().parents]:
        raise UserError(f"--records {records}: inside --out {out}, which it must outlive; "
                        "give a folder elsewhere")
    if (saved := read_json(records / SETUP)) is not None:
        if diff := setup_difference(saved, wanted):
            raise UserError(f"--records {records}: the records of a study with {diff} "
                            f"{saved.get(diff)}, not {wanted.get(diff)}; give another "
                            "--records")
    elif records.exists() and (not records.is_dir() or
                               any(p.name != LOCK for p in records.iterdir())):
        raise UserError(f"--records {records}: not empty and not the records of a compare "
                        "study; give another --records")


@contextmanager
def locked(records: Path) -> Iterator[None]:
    """Hold DIR's lock while the block runs: other calls sharing DIR wait for it."""
    records.mkdir(parents=True, exist_ok=True)
    with open(records / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def start_records(records: Path, wanted: dict[str, Any], tokenizer: Path | None) -> None:
    """Take DIR (checked by `check_records`) for a study of setup `wanted`; keep its trained
    `tokenizer` where DIR has none, refuse one that differs from DIR's."""
    if read_json(records / SETUP) is None:
        write_json(records / SETUP, wanted)
    kept = records / TOKENIZER / "tokenizer.json"
    if tokenizer is not None and kept.is_file() and (
            kept.read_bytes() != (tokenizer / "tokenizer.json").read_bytes()):
        raise UserError(f"--records {records}: its tokenizer is not {tokenizer}'s (trained "
                        "before the records had one); give another --out")
    if tokenizer is not None and not kept.is_file():
        staging = Path(tempfile.mkdtemp(prefix=f".{TOKENIZER}.", dir=records))
        shutil.copytree(tokenizer, staging, dirs_exist_ok=True)
        fix_modes(staging)
        shutil.rmtree(records / TOKENIZER, ignore_errors=True)
        os.replace(staging, records / TOKENIZER)


def keep_arms(records: Path, arms: dict[str, dict[str, Any]]) -> None:
    """Keep each arm's FLOPs per step and steps (`arms`) where DIR has none yet."""
    for arm, state in arms.items():
        if arm_state(records, arm) is None:
            write_json(records / arm / ARM, state)


def write_json(path: Path, content: dict[str, Any]) -> None:
    """`content` to `path` whole or not at all (a temporary file renamed onto it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(content, indent=1) + "\n")
        fix_modes(Path(name))
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, None where there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def arm_state(records: Path, arm: str) -> dict[str, Any] | None:
    """The kept FLOPs per step and steps of `arm`."""
    return read_json(records / arm / ARM)


def seed(records: Path, arm: str, number: int) -> dict[str, Any] | None:
    """The kept record of pretraining seed `number` of `arm`."""
    return read_json(records / arm / f"seed-{number}.json")


def keep_seed(records: Path, arm: str, number: int, record: dict[str, Any]) -> None:
    write_json(records / arm / f"seed-{number}.json", record)


def restore_tokenizer(records: Path, folder: Path) -> None:
    """Copy the kept tokenizer into `folder` (one not there yet): every call trains on the
    same vocabulary."""
    kept = records / TOKENIZER
    if (kept / "tokenizer.json").is_file() and not (folder / "tokenizer.json").is_file():
        shutil.copytree(kept, folder, dirs_exist_ok=True)


@contextmanager
def claim(records: Path, arm: str, number: int) -> Iterator[str | None]:
    """Hold seed `number` of `arm` for this process while the block runs and yield None; where
    another live process holds it, yield that holder ("host pid N") and take nothing."""
    path = records / arm / f".seed-{number}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(records):
        if (holder := live_holder(path)) is None:
            path.write_text(json.dumps({"host": socket.gethostname(), "boot": this_boot(),
                                        "pid": os.getpid(), "since": time.time()}) + "\n")
    if holder is not None:
        yield holder
        return
    stop = threading.Event()
    beat = threading.Thread(target=heartbeat, args=(path, stop), daemon=True)
    beat.start()
    try:
        yield None
    finally:
        stop.set()
        beat.join()
        path.unlink(missing_ok=True)


def live_holder(path: Path) -> str | None:
    """The process holding claim `path` ("host pid N"), None where there is none or it is
    gone: dead (a process of this boot of this machine) or silent for `STALE` seconds (one of
    another machine or boot, whose pid says nothing here)."""
    try:
        held, touched = json.loads(path.read_text()), path.stat().st_mtime
    except (FileNotFoundError, ValueError):
        return None
    if held.get("boot") == this_boot():
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return None
    elif time.time() - touched > STALE:
        return None
    return f"{held['host']} pid {held['pid']}"


def this_boot() -> str:
    """This boot of this machine: the kernel's boot id (host names repeat across machines),
    the host name where the system has none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


def heartbeat(path: Path, stop: threading.Event) -> None:
    """Touch claim `path` every `HEARTBEAT` seconds until `stop` is set."""
    while not stop.wait(HEARTBEAT):
        try:
            os.utime(path)
        except FileNotFoundError:
            return
