"""Small helpers used across the package: derived seeds, atomic file writes, running a coroutine from any thread, and
the activation-checkpointing default of the training configs."""

import asyncio
import importlib
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path


SEED_MODULUS = 2**63 - 1


def derived_seed(seed: int, index: int, process_index: int = 0) -> int:
    """The seed of one unit of a run's work (a prompt, a group of prompts, a batch, a step).

    A function of the run's `seed`, the unit's `index` and the `process_index` only, so that a resumed run, or a run
    with a different number of processes or batch size, draws the same samples for the same unit. It fits in 63 bits
    (`torch`, `random` and vLLM all accept it):

        (seed * 1_000_003 + process_index * 1_000_000_007 + index) % (2**63 - 1)

    Args:
        seed (`int`):
            The run's seed.
        index (`int`):
            The unit's position (a prompt's index, a group's or a batch's number, a training step).
        process_index (`int`, *optional*, defaults to `0`):
            The process's index in a distributed run, for units that every process numbers on its own.

    Returns:
        `int`: A seed in `[0, 2**63 - 1)`.
    """
    return (seed * 1_000_003 + process_index * 1_000_000_007 + index) % SEED_MODULUS


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` so that a reader (or a run resumed after a crash) sees the old file or the new, whole.

    The text goes to a temporary file beside `path`, which is flushed to disk (`fsync`) and then renamed over `path`
    (`os.replace`, atomic on POSIX and Windows). The parent directory must exist.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding=encoding) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


_daemon_loop: asyncio.AbstractEventLoop | None = None
_daemon_lock = threading.Lock()


def _event_loop_in_daemon() -> asyncio.AbstractEventLoop:
    global _daemon_loop
    with _daemon_lock:
        if _daemon_loop is None:
            from trl.trainer.utils import start_event_loop_in_daemon

            _, loop, ready = start_event_loop_in_daemon(name="trl_won-async")
            ready.wait()
            _daemon_loop = loop
    return _daemon_loop


def run_coroutine(coroutine):
    """Run `coroutine` to completion and return its result, from synchronous code called from anywhere.

    Without a running event loop in this thread it runs with `asyncio.run`. Inside one (a Jupyter cell, an async
    server calling synchronous code) `asyncio.run` is not allowed, so it runs on an event loop in a daemon thread
    (started once, with TRL's `start_event_loop_in_daemon`) while this thread waits for it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    return asyncio.run_coroutine_threadsafe(coroutine, _event_loop_in_daemon()).result()


@dataclass
class CheckpointingOnByDefault:
    """Mixin for a TRL training config, listed before it among the bases: activation checkpointing on by default, as
    in TRL, set under transformers' current name, so that building the config warns about nothing the user did.

    TRL 1.16's configs default `gradient_checkpointing=True`, the name transformers 5.23 deprecated in favour of
    `activation_checkpointing`, so each of them prints transformers' deprecation warning when built with its
    defaults. Here `gradient_checkpointing` is back to transformers' unset default (`None`), and when neither name is
    given `activation_checkpointing` is set to `True`. A user's own `gradient_checkpointing=...` (or
    `--gradient_checkpointing false`) still decides, with transformers' warning; given both names,
    `activation_checkpointing` wins, as in transformers. After `__post_init__` both names hold the same value, which is
    what the trainers read.
    """

    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Deprecated alias of `activation_checkpointing` (transformers). Checkpointing is on unless "
            "`--activation_checkpointing false` turns it off.",
            "nargs": "?",
            "const": True,
        },
    )

    def __post_init__(self):
        if self.gradient_checkpointing is None and self.activation_checkpointing is None:
            self.activation_checkpointing = True
        super().__post_init__()


def lazy_exports(package: str, submodules: dict[str, list[str]], namespace: dict):
    """`__getattr__` and `__dir__` for a package whose public names are imported from their submodules when first
    used (so that importing the package, e.g. for a command's `--help`, imports no trainer).

    Args:
        package (`str`): The package's `__name__`.
        submodules (`dict[str, list[str]]`): Submodule (relative to `package`) -> the public names it defines.
        namespace (`dict`): The package's `globals()`; a name is stored there once imported.

    Example: `__getattr__, __dir__ = lazy_exports(__name__, {"trainer": ["RRHFTrainer"]}, globals())`.
    """
    where = {name: module for module, names in submodules.items() for name in names}

    def __getattr__(name: str):
        if name in where:
            value = getattr(importlib.import_module(f".{where[name]}", package), name)
            namespace[name] = value  # import once
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
