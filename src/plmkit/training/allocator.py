"""A fast memory allocator for the `plmkit` command, when one is installed.

Training allocates and frees large tensors every step. With glibc malloc each one above the
mmap threshold is a fresh mapping, so a step pays for page faults and zeroing again and again
(1.2-2x slower and noisy on a 2-core CPU); tcmalloc keeps the memory and reuses it. A library
cannot swap the allocator of a running process, so `plmkit` re-executes itself once with the
allocator in `LD_PRELOAD` before it imports torch.

Opt out with `PLMKIT_ALLOCATOR=system`; name a library with `PLMKIT_ALLOCATOR=/path/lib.so`.
Install tcmalloc on Debian / Ubuntu with `apt-get install libtcmalloc-minimal4`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

ENV = "PLMKIT_ALLOCATOR"
_DONE = "PLMKIT_ALLOCATOR_PRELOADED"  # set in the re-executed process: never loop
CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc.so.4",
)


def fast_allocator() -> str | None:
    """The allocator library to preload: `PLMKIT_ALLOCATOR` if it names a file, None if it
    says `system`, else the first installed tcmalloc."""
    choice = os.environ.get(ENV, "")
    if choice == "system":
        return None
    if choice:
        return choice if Path(choice).is_file() else None
    return next((c for c in CANDIDATES if Path(c).is_file()), None)


def in_use() -> str:
    """The allocator of this process: the preloaded library's file name, or "glibc"."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    for line in maps.splitlines():
        name = line.rsplit("/", 1)[-1]
        if "tcmalloc" in name or "jemalloc" in name or "mimalloc" in name:
            return name
    return "glibc"


def reexec_with_fast_allocator(argv: Sequence[str]) -> None:
    """Replace this process by itself with the fast allocator preloaded, when one is installed
    and not yet loaded; return (doing nothing) otherwise."""
    library = fast_allocator()
    if library is None or os.environ.get(_DONE) or sys.platform != "linux":
        return
    preload = os.environ.get("LD_PRELOAD", "")
    if library in preload.split(":") or in_use() != "glibc":
        return
    env = {**os.environ, _DONE: "1", "LD_PRELOAD": ":".join(p for p in (library, preload) if p)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "plmkit.cli", *argv], env)
