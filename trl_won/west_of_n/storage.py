"""The offline generator's output directory: a manifest, append-only JSONL shards, a summary and the final dataset.

```
pairs_dir/
  manifest.json          what the results depend on; a rerun must match it to resume
  shards/process-0.jsonl one line per prompt ([`PromptResult`]), appended and fsync'ed after each group of prompts
  summary.json           counts: pairs formed, removed by each filter, kept
  dataset/               the final preference dataset (`datasets.load_from_disk`)
```

Every process appends to its own shard. A crash can leave a partial last line, possibly cut inside a multi-byte UTF-8
character (shards are UTF-8 and not ASCII-escaped); the owner cuts it off before it appends again, and readers skip
lines that do not decode or parse. Results are read back from all shards, whatever number of processes wrote them.
"""

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import TrlWonError
from .pipeline import PromptResult


logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
SHARDS = "shards"
DATASET = "dataset"
FORMAT_VERSION = 1


def prompts_fingerprint(prompts: Sequence) -> str:
    """SHA-256 of the prompts, in order."""
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


class ResumeMismatchError(TrlWonError, ValueError):
    """`pairs_dir` holds results made with different arguments."""


class DamagedPairsDirError(ValueError):
    """A file of `pairs_dir` cannot be read. The message names the file and what to do."""


def read_manifest(path: Path) -> dict:
    """The saved manifest, or an error naming the file and what to do if it is damaged."""
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problem = f"is not valid JSON ({error})"
    else:
        if isinstance(manifest, dict):
            return manifest
        problem = f"holds a {type(manifest).__name__}, not the JSON object of a manifest"
    raise DamagedPairsDirError(
        f"{path} {problem}: the file was damaged (for instance a copy or a disk-full write was cut short), so it is "
        f"unknown how the results in {path.parent} were made and they cannot be resumed. Move the directory aside "
        f"(`mv {path.parent} {path.parent}.damaged`) and rerun to start over, or give a new `pairs_dir`."
    )


def check_or_write_manifest(pairs_dir: Path, manifest: dict, write: bool) -> bool:
    """Compare `manifest` with the one in `pairs_dir` (raise on any difference); write it when absent and `write`.

    Returns:
        `bool`: Whether a manifest was already there (the run resumes).
    """
    path = pairs_dir / MANIFEST
    if path.exists():
        existing = read_manifest(path)
        differences = [
            f"{key}: saved {existing.get(key)!r}, now {manifest.get(key)!r}"
            for key in sorted(set(existing) | set(manifest))
            if existing.get(key) != manifest.get(key)
        ]
        if differences:
            raise ResumeMismatchError(
                f"{pairs_dir} holds West-of-N results made with different arguments, so this run cannot resume "
                f"there ({'; '.join(differences)}). Use a new `pairs_dir`, or delete {pairs_dir} to start over. "
                "(Filters and batch sizes for scoring may change between runs; they are not part of the manifest.)"
            )
        return True
    shards = pairs_dir / SHARDS
    if shards.exists() and any(shards.iterdir()):
        raise ResumeMismatchError(
            f"{pairs_dir} has shards but no {MANIFEST}, so it is unknown how they were made. Use a new `pairs_dir`, "
            f"or delete {pairs_dir} to start over."
        )
    if write:
        pairs_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.replace(tmp, path)
    return False


def shard_path(pairs_dir: Path, process_index: int) -> Path:
    return pairs_dir / SHARDS / f"process-{process_index}.jsonl"


def repair_shard(path: Path) -> None:
    """Cut off a partial last line (left by a crash mid-write) so that appending starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        logger.warning("Dropping a partial line at the end of %s (interrupted write).", path)
        with open(path, "r+b") as f:
            f.truncate(cut)


def append_results(path: Path, results: Iterable[PromptResult]) -> None:
    """Append one JSON line per result and make it durable before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in results)
    with open(path, "a", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def read_results(pairs_dir: Path) -> dict[int, PromptResult]:
    """All results saved in `pairs_dir`'s shards, by prompt index (lines that do not parse are skipped)."""
    results: dict[int, PromptResult] = {}
    shards = pairs_dir / SHARDS
    if not shards.exists():
        return results
    for path in sorted(shards.glob("*.jsonl")):
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            try:  # bytes, decoded line by line: a line cut inside a multi-byte character must not stop the reading
                data = json.loads(line.decode("utf-8"))
                result = PromptResult.from_dict(data)
            except (UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError):
                if number < len(lines):  # not the (partial) last line of an interrupted write
                    logger.warning(
                        "Skipping line %d of %s, which is not a saved result; its group of prompts will be redone.",
                        number,
                        path,
                    )
                continue
            results[result.index] = result
    return results


def done_chunks(results: dict[int, PromptResult], num_prompts: int, prompts_per_chunk: int) -> set[int]:
    """The groups of prompts whose every prompt has a saved result."""
    num_chunks = -(-num_prompts // prompts_per_chunk)
    done = set()
    for chunk in range(num_chunks):
        indices = range(chunk * prompts_per_chunk, min((chunk + 1) * prompts_per_chunk, num_prompts))
        if all(i in results and results[i].chunk == chunk for i in indices):
            done.add(chunk)
    return done


def write_summary(pairs_dir: Path, summary: dict) -> None:
    (pairs_dir / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True))
