"""Output directories and files that never lose what was there before.

Every directory a plmkit command writes carries `.plmkit` (JSON: the command that wrote it), so
a later command can tell its own output from a user's files. The rules (`claim`):

- a missing or empty directory is taken;
- a directory written by the same command is rewritten (a pretraining run only with
  `--resume`, which continues it);
- anything else (a user's files, another command's output) is refused in one line, exit 2,
  unless `--overwrite`; even then the old contents are only removed once the new output is
  complete (`staged`), so a refused or failed command loses nothing.

`staged(out, command)` writes into a hidden folder inside `out` and moves the result up when the
block succeeds; a killed process leaves only that hidden folder, which the next claim removes.
Files and folders get the user's umask (temporary-file helpers make them private).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from plmkit.errors import UserError

MARKER = ".plmkit"
STAGING = ".plmkit-staging-"  # prefix of the hidden folders `staged` writes in
OLD = ".plmkit-old-"  # prefix of replaced contents awaiting removal


def owner(directory: Path) -> str | None:
    """The command that wrote `directory` (its `.plmkit` marker), or None."""
    try:
        return json.loads((directory / MARKER).read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def mark(directory: Path, command: str) -> None:
    """Record that `command` wrote `directory`."""
    (directory / MARKER).write_text(json.dumps({"command": command}) + "\n")
    fix_modes(directory / MARKER)


def _ours(path: Path) -> bool:
    return path.name == MARKER or path.name.startswith((STAGING, OLD))


def leftovers(directory: Path) -> list[Path]:
    """Hidden folders that an interrupted plmkit command left in `directory`."""
    return [p for p in directory.iterdir() if p.name.startswith((STAGING, OLD))]


def user_entries(directory: Path) -> list[Path]:
    """What `directory` holds besides plmkit's own bookkeeping."""
    return sorted(p for p in directory.iterdir() if not _ours(p))


def claim(out: Path, command: str, option: str = "--out", *, overwrite: bool = False,
          resume: bool = False) -> bool:
    """Check that `command` may write `out` (see the module docstring); writes nothing.

    Returns whether `out` already holds output (`command`'s own, or anything with `overwrite`).
    """
    if not out.exists():
        _check_parent(out, option)
        return False
    if not out.is_dir():
        raise UserError(f"{option} {out}: exists and is not a directory")
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"{option} {out}: not writable (permission denied)")
    entries = user_entries(out)
    if not entries:
        return False
    mine = owner(out) == command
    if resume and not mine:
        raise UserError(f"{option} {out}: not a plmkit {command} run, nothing to resume")
    if (mine and (resume or command != "pretrain")) or overwrite:
        return True
    if mine:
        raise UserError(f"{option} {out}: holds a {command} run; add --resume to continue it, "
                        "--overwrite to start again, or choose another directory")
    names = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
    what = f"the output of plmkit {owner(out)}" if owner(out) else f"files of its own ({names})"
    raise UserError(f"{option} {out}: not empty, holds {what}; choose another directory "
                    "or add --overwrite")


def refuse_inside(out: Path, *inputs: Path | None, option: str = "--out") -> None:
    """Refuse an output that is, or holds, one of the command's inputs."""
    target = out.resolve()
    for path in filter(None, inputs):
        source = Path(path).resolve()
        if source == target or target in source.parents:
            raise UserError(f"{option} {out}: would replace the input {path}; choose another "
                            "directory")


def _check_parent(out: Path, option: str) -> None:
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise UserError(f"{option} {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {out}: cannot create it, {parent} is not writable")


def clean_leftovers(directory: Path) -> None:
    """Remove what an interrupted command left in `directory` (staging and old contents)."""
    if directory.is_dir():
        for path in leftovers(directory):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def staged(out: Path, command: str) -> Iterator[Path]:
    """A fresh hidden folder inside `out` to write the command's output into; on success its
    contents replace `out`'s (old ones removed last), on error `out` is as it was and a folder
    this block created is removed."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if created:
        fix_modes(out)
    clean_leftovers(out)
    tmp = Path(tempfile.mkdtemp(prefix=STAGING, dir=out))
    try:
        yield tmp
        mark(tmp, command)
        replace_contents(out, tmp)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_contents(out: Path, new: Path) -> None:
    """Make `out` hold exactly the entries of `new` (a folder inside it), each moved by an
    atomic rename; the marker goes last, so an interruption leaves an unmarked directory
    that the next command refuses rather than trusts."""
    old = Path(tempfile.mkdtemp(prefix=OLD, dir=out))
    for path in out.iterdir():
        if path not in (new, old):
            os.replace(path, old / path.name)
    for path in sorted(new.iterdir(), key=lambda p: p.name == MARKER):
        fix_modes(path)
        os.replace(path, out / path.name)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def keep_until_done(out: Path, replace: bool) -> Iterator[None]:
    """With `replace`, move `out`'s contents aside for the block: back on error, gone on
    success (for commands that write into `out` directly, such as a pretraining run)."""
    if not replace:
        yield
        return
    clean_leftovers(out)
    old = Path(tempfile.mkdtemp(prefix=OLD, dir=out))
    for path in out.iterdir():
        if path != old:
            os.replace(path, old / path.name)
    try:
        yield
    except BaseException:
        for path in out.iterdir():
            if path != old:
                _remove(path)
        for path in old.iterdir():
            os.replace(path, out / path.name)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def written_in_place(out: Path, command: str, replace: bool) -> Iterator[None]:
    """For a command that writes into `out` itself (fine-tuning, the preparation of a
    comparison): `keep_until_done`, then `out` marked as `command`'s; on failure, an `out`
    that the block created is removed and one that was empty is emptied again."""
    created = not out.exists()
    empty = created or not user_entries(out)
    try:
        with keep_until_done(out, replace):
            yield
            mark(out, command)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        elif empty:
            for path in user_entries(out):
                _remove(path)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def staged_file(out: Path, option: str = "--output", *, overwrite: bool = False
                ) -> Iterator[Path]:
    """A temporary path beside `out` to write one file to, renamed onto `out` on success;
    an existing `out` is refused unless `overwrite`."""
    if out.exists() and not overwrite:
        raise UserError(f"{option} {out}: exists; choose another file or add --overwrite")
    if out.is_dir():
        raise UserError(f"{option} {out}: is a directory")
    _check_parent(out, option)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fix_modes(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def umask() -> int:
    """The process's umask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fix_modes(path: Path) -> None:
    """Give `path` (recursively) the modes that plain creation under the user's umask gives:
    temporary-file helpers create files 0600 and folders 0700."""
    mask = umask()
    for p in [path, *(path.rglob("*") if path.is_dir() else ())]:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


@contextmanager
def no_space_is_user_error(where: Path, what: str) -> Iterator[None]:
    """Turn a write that failed for lack of disk space into one line naming `where`; torch.save
    reports it as a RuntimeError ("unexpected pos"), safetensors as its own error type."""
    try:
        yield
    except Exception as e:
        if not _no_space(e, where):
            raise
        raise UserError(f"{where}: no space left on device (the disk is full) while saving "
                        f"{what}; the previous one is kept") from None


def _no_space(e: Exception, where: Path) -> bool:
    if isinstance(e, OSError):
        return e.errno == errno.ENOSPC
    if "no space left" in str(e).lower():
        return True
    try:  # torch.save's "unexpected pos" does not say why
        return isinstance(e, RuntimeError) and shutil.disk_usage(where).free < 1 << 20
    except OSError:
        return False


def os_error_message(e: OSError) -> str:
    """One line for an OSError that reached the command line: the file and the problem."""
    name = e.filename if e.filename is not None else "plmkit"
    if e.errno == errno.ENOSPC:
        return f"{name}: no space left on device (the disk is full); nothing was replaced"
    if e.errno == errno.EROFS:
        return f"{name}: read-only file system"
    return f"{name}: {e.strerror or e}"
