"""Fault injection: kill the process at a named point, so tests can prove that a crash there is harmless.

`fault_point(name)` does nothing unless the environment variable `DDPMKIT_FAULT` names that point. Then it sends
SIGKILL to its own process: no `finally`, no `atexit`, no flush, exactly like a power cut or the OOM killer.

    DDPMKIT_FAULT=save:before_rename            kill the first time `save:before_rename` is reached
    DDPMKIT_FAULT=save:weights@3                kill the third time `save:weights` is reached (counted per process)
    DDPMKIT_FAULT=save:prune,save:weights@2     a comma list: whichever comes first

    DDPMKIT_FAULT=cache:chunk@2!ENOSPC          instead of a kill, raise OSError(ENOSPC) there (any errno name):
                                                a full disk or a failing device, without filling one

The variable is read on every call (one dict lookup), so a test may set it between two saves in one process.
Only tests set it. Two more variables narrow it, for a group of processes under torchrun that restarts:

    DDPMKIT_FAULT_RANK=1                 only the process whose RANK is 1 is killed
    DDPMKIT_FAULT_ONCE=/tmp/x/fired      only if that file does not exist yet; it is created just before the
                                         kill, so the restarted process runs through

The points that exist: one in the training loop (`ddpmkit.train.trainer`),

    train:step            after a training step is done, before any checkpoint of that step

and the rest in `ddpmkit.store.checkpoint.save_checkpoint`:

    save:weights          after each `<name>.safetensors` is written, before the next file (the temp folder
                          holds some of the files, none fsynced, no manifest)
    save:before_fsync     every file written, none fsynced yet, no manifest
    save:before_manifest  every file written and fsynced, no manifest
    save:before_rename    complete temp folder with manifest, not yet renamed to `step_XXXXXXXXX`
    save:after_rename     the new checkpoint is in place; old ones not pruned, stale temp folders not removed
    save:prune            in the middle of pruning: one old checkpoint renamed to `.trash-*`, not yet deleted

the long sampling and evaluation jobs (`ddpmkit.jobs`):

    jobs:shard            after each shard of a job is written and renamed into place

and the decoded-image cache's build (`ddpmkit.data.cache`):

    cache:chunk           after each chunk of images is written to the temporary images file
    cache:before_manifest images file complete and fsynced, no manifest yet
    cache:before_rename   complete temporary entry with manifest, not yet renamed into place
    cache:swap            the old entry moved aside, the new one not yet renamed into place
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV_VAR = "DDPMKIT_FAULT"

_hits: Counter[str] = Counter()


def fault_armed(name: str) -> bool:
    """Count one hit of point `name` and say whether `DDPMKIT_FAULT` asks to kill the process at this hit."""
    return _armed_action(name) is not None


def _armed_action(name: str) -> str | None:
    """Count one hit of `name`; None if nothing fires here, else the action: "" (SIGKILL) or an errno name."""
    _hits[name] += 1
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return None
    rank = os.environ.get(ENV_VAR + "_RANK")
    if rank is not None and os.environ.get("RANK", "0") != rank:
        return None
    for item in spec.split(","):
        item, _, action = item.strip().partition("!")
        point, _, nth = item.partition("@")
        if point != name:
            continue
        if (not nth or (nth.isdigit() and int(nth) == _hits[name])) and _first_time():
            return action
    return None


def _first_time() -> bool:
    """True unless DDPMKIT_FAULT_ONCE names a file that exists; creates that file (atomically, once)."""
    marker = os.environ.get(ENV_VAR + "_ONCE")
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def fault_point(name: str) -> None:
    """SIGKILL this process here if `DDPMKIT_FAULT` names this point (see the module docstring), or raise the
    OSError its `!ERRNO` suffix names; else nothing."""
    action = _armed_action(name)
    if action:
        code = getattr(errno, action)
        raise OSError(code, os.strerror(code))
    if action is not None:
        os.kill(os.getpid(), signal.SIGKILL)
