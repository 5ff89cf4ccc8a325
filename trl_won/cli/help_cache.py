"""A cache of each subcommand's `--help` text, so that `trl-won rrhf --help` answers without importing torch.

The options of `rrhf` and `west-of-n` come from TRL's training arguments (`transformers.TrainingArguments`), whose
import pulls torch, peft and bitsandbytes: seconds. The text argparse prints is a function of the parser only, so the
first `trl-won <command> --help` builds the parser and stores its `format_help()`; later ones print the stored text.

An entry is found by a digest of everything the text depends on: the command, its `prog` and the `defaults` an example
script sets, the Python version, the installed versions of the libraries whose dataclasses make the options (TRL,
transformers, peft, accelerate, datasets, torch), the terminal width argparse wraps to, and the bytes of every file of
the `trl_won` package (so an edited, upgraded or reinstalled trl_won or library builds the help anew). With one of
those libraries installed in editable mode (its source can change without its version) nothing is cached. The entry
holds the digest and a SHA-256 of its text, checked on every read: an entry that does not match (a truncated or edited
file) is built again, never printed. Entries are written atomically (a temporary file renamed over the entry).

The cache lives in `$TRL_WON_CACHE_DIR/help` if that is set, else in `$XDG_CACHE_HOME/trl-won/help`, else in
`~/.cache/trl-won/help`; deleting the folder clears it. A cache that cannot be read or written is skipped: the help is
then built live, and `--help` never fails because of it.
"""

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable


# Libraries whose dataclasses (fields, defaults, help strings) make up the subcommands' options (trl_won's own files
# are hashed instead: `source_digest`).
LIBRARIES = ("trl", "transformers", "peft", "accelerate", "datasets", "torch")
HEADER = "trl-won help cache 1"
ENTRIES_KEPT = 8  # per command: a few `prog`s and terminal widths; older entries are removed when one is written
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the trl_won folder


def cache_dir() -> str:
    """`$TRL_WON_CACHE_DIR`, else `$XDG_CACHE_HOME/trl-won`, else `~/.cache/trl-won` (as huggingface_hub and pip
    follow XDG on Linux)."""
    if os.environ.get("TRL_WON_CACHE_DIR"):
        return os.path.expanduser(os.environ["TRL_WON_CACHE_DIR"])
    return os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME") or "~/.cache"), "trl-won")


def source_digest(root: str | None = None) -> str:
    """SHA-256 over the relative path and bytes of every file under `root` (the trl_won package by default),
    bytecode left out."""
    root = root or PACKAGE_ROOT
    digest = hashlib.sha256()
    files = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if name != "__pycache__"]
        files += [os.path.join(directory, name) for name in filenames if not name.endswith((".pyc", ".pyo"))]
    for path in sorted(files):
        with open(path, "rb") as f:
            data = f.read()
        digest.update(f"{path[len(root) :]}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def installed_libraries() -> list[list] | None:
    """Where and which version of each of `LIBRARIES` is installed: `[folder on sys.path, metadata folder name (it
    holds the version, e.g. `trl-1.16.0.dist-info`), the modification time of its METADATA]` for every such folder on
    `sys.path`, in order (a reinstall changes the time). None when one of them is an editable install, or has an
    `.egg-info` (a legacy or development install), whose source can change without its version: no help is cached
    then.

    This reads folder names rather than importing `importlib.metadata`, whose import (email parsing) alone costs
    about what all of `trl-won --help` does."""
    found = []
    for folder in sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:  # not a folder (a zip, a missing path)
            continue
        for name in sorted(names):
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            library = name.rpartition(".")[0].split("-")[0].lower().replace(".", "_")  # trl-1.16.0.dist-info: trl
            if library not in LIBRARIES:
                continue
            if name.endswith(".egg-info") or is_editable(os.path.join(folder, name)):
                return None
            metadata = os.path.join(folder, name, "METADATA" if name.endswith(".dist-info") else "PKG-INFO")
            try:
                modified = os.stat(metadata).st_mtime_ns
            except OSError:
                modified = None
            found.append([os.path.abspath(folder or "."), name, modified])
    return found


def is_editable(dist_info: str) -> bool:
    """Whether the `.dist-info` folder records an editable install (PEP 610's `direct_url.json`)."""
    try:
        with open(os.path.join(dist_info, "direct_url.json"), encoding="utf-8") as f:
            return bool(json.load(f).get("dir_info", {}).get("editable"))
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not a JSON object
        return False


def help_key(name: str, prog: str, defaults: dict | None) -> str | None:
    """The digest an entry of `name`'s help is stored under (see the module's docstring), or None when the help is
    not to be cached (a library installed for development)."""
    libraries = installed_libraries()
    if libraries is None:
        return None
    parts = {
        "command": name,
        "prog": prog,
        # repr for values JSON cannot hold: a repr with an address changes every run, so such help is never reused.
        "defaults": json.dumps(defaults or {}, sort_keys=True, default=repr),
        "python": sys.version,
        "libraries": libraries,
        "columns": shutil.get_terminal_size().columns,  # what argparse's HelpFormatter wraps to
        "sources": source_digest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_entry(path: str, key: str) -> str | None:
    """The help text stored at `path` under `key`, or None when there is none, or it is damaged or another key's."""
    try:
        with open(path, encoding="utf-8") as f:
            header, separator, text = f.read().partition("\n")
    except (OSError, UnicodeDecodeError):
        return None
    if separator and header == f"{HEADER} {key} {text_digest(text)}":
        return text
    return None


def write_entry(folder: str, name: str, key: str, text: str) -> None:
    """Store `text` as the entry of the command `name` under `key` in `folder` (atomically), and remove the command's
    oldest entries beyond `ENTRIES_KEPT`."""
    from ..utils import atomic_write_text

    os.makedirs(folder, exist_ok=True)
    path = entry_path(folder, name, key)
    atomic_write_text(path, f"{HEADER} {key} {text_digest(text)}\n{text}")
    entries = []
    for entry in os.listdir(folder):
        stem, _, digest = entry.removesuffix(".txt").rpartition("-")
        if stem == name and entry.endswith(".txt") and len(digest) == 32:
            try:
                entries.append((os.stat(os.path.join(folder, entry)).st_mtime_ns, os.path.join(folder, entry)))
            except OSError:  # removed meanwhile by another process
                pass
    for _, entry in sorted(entries, reverse=True)[ENTRIES_KEPT:]:
        if entry != path:
            try:
                os.unlink(entry)
            except FileNotFoundError:
                pass


def entry_path(folder: str, name: str, key: str) -> str:
    return os.path.join(folder, f"{name}-{key[:32]}.txt")


def cached_help(name: str, prog: str, defaults: dict | None, build: Callable[[], str]) -> str:
    """The help text of the command `name`: the cached entry when there is a valid one, else `build()` (stored for
    the next call when the cache can be written)."""
    try:
        key = help_key(name, prog, defaults)
        folder = os.path.join(cache_dir(), "help")
    except (OSError, RuntimeError):  # a package file unreadable: no cache
        key = None
    if key is not None:
        text = read_entry(entry_path(folder, name, key), key)
        if text is not None:
            return text
    text = build()
    if key is not None:
        try:
            write_entry(folder, name, key, text)
        except OSError:  # read-only or full disk, a file where the folder should be: the help still prints
            pass
    return text
