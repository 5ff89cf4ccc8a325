"""A crash-safe SQLite store of judge labels.

Every label is written as soon as the judge returns it (one transaction per batch), keyed by the judge's fingerprint
and a SHA-256 hash of the content it judged. Running the same labeling again after a crash or Ctrl-C asks the judge
only for what is not stored yet. Several processes can write to one store at once: SQLite's write-ahead log lets
readers and a writer work together, and a busy timeout makes writers wait for each other instead of failing.

A pair is stored once for both of its orientations, as the judge returned it together with the order it was judged
in: the label of `(prompt, b, a)` is read from that of `(prompt, a, b)` by swapping, and the order it was judged in
reads back bit for bit (so a resumed labeling run equals an uninterrupted one). Only the content's hash is stored,
never the text itself. Judgements that are not
final (a failed request, a prompt over the judge's length limit) are not stored, so a rerun asks again.

The store needs a local filesystem: SQLite's locking is unreliable on network filesystems (NFS, SMB). A file that a
crash or a disk damaged raises a [`LabelStoreError`] that names it and says how to recover what is readable.
"""

import functools
import json
import os
import shlex
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data_utils import Completion, Prompt
from ..errors import TrlWonError
from ..identity import json_sha256
from .judgement import PairwiseJudgement, ScoreJudgement


# 2: `judged_reversed` keeps the order a pair was judged in (version 1 stored every pair swapped to its key's order).
# 3: `batch_jobs` and `batch_lines`, the judge's batch files (OpenAI's Batch API, vLLM's run-batch), and the tokens
#    each label cost (`prompt_tokens`, `completion_tokens`).
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS judges (
    fingerprint TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pairwise_labels (
    fingerprint TEXT NOT NULL,
    content_key TEXT NOT NULL,
    probability REAL,
    probability_first REAL,
    probability_second REAL,
    reason TEXT,
    rationale_first TEXT,
    rationale_second TEXT,
    created_at REAL NOT NULL,
    judged_reversed INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    PRIMARY KEY (fingerprint, content_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS score_labels (
    fingerprint TEXT NOT NULL,
    content_key TEXT NOT NULL,
    score REAL,
    expected_score REAL,
    reason TEXT,
    rationale TEXT,
    created_at REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    PRIMARY KEY (fingerprint, content_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batch_jobs (
    job_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    input_file_id TEXT,
    batch_id TEXT,
    status TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_lines (
    custom_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    content_key TEXT NOT NULL,
    job_key TEXT NOT NULL,
    answer TEXT,
    error TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batch_lines_of_job ON batch_lines (job_key);
CREATE INDEX IF NOT EXISTS batch_lines_of_label ON batch_lines (fingerprint, content_key);
"""


# What the store keeps of one batch job: a file of request lines sent to OpenAI's Batch API (`kind="openai"`,
# `target` the API root) or written for vLLM's run-batch (`kind="file"`, `target` the file). `state` is "prepared"
# (lines recorded, nothing sent), "uploaded" (`input_file_id` known; a batch may exist on the server, found by its
# metadata), "submitted" (`batch_id` known), "finished" (results read) or "written" (a request file).
BATCH_JOB_COLUMNS = (
    "job_key",
    "fingerprint",
    "kind",
    "target",
    "state",
    "input_file_id",
    "batch_id",
    "status",
    "created_at",
    "updated_at",
)
# The states of a Batch API job whose batch may exist on the server and not be finished: its lines stay with it.
RUNNING_JOB_STATES = ("uploaded", "submitted")


def content_key(*items: Any) -> str:
    """SHA-256 of the JSON of `items` (prompts and completions, in either dataset format)."""
    return json_sha256(items, compact=True)


def pair_key(prompt: Prompt, completion_a: Completion, completion_b: Completion) -> tuple[str, bool]:
    """The stored key of a pair and whether the stored orientation is `(b, a)` rather than `(a, b)`."""
    forward = content_key(prompt, completion_a, completion_b)
    backward = content_key(prompt, completion_b, completion_a)
    return (forward, False) if forward <= backward else (backward, True)


class LabelStoreError(RuntimeError):
    """A label store file cannot be read: damaged by a crash or a disk, or not a label store. The message names the
    file, what is wrong and what to do."""


# What SQLite says of a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB), by its message as Python 3.10 has no error codes.
_DAMAGED = {
    "database disk image is malformed": "its pages are damaged (overwritten or truncated)",
    "file is not a database": "it is not a SQLite database (its header is overwritten, or it is another kind of file)",
}


class RunningBatchError(TrlWonError, RuntimeError):
    """Request lines cannot move to another batch job: they belong to a Batch API batch that is not finished (it
    would be paid for twice, or its results lost). The message names the batch and what to do."""


def _damaged_file_error(path: Path, error: sqlite3.DatabaseError) -> LabelStoreError | None:
    if "unable to open database file" in str(error):
        return LabelStoreError(
            f"The label store {path} cannot be opened (SQLite: {error}). Give the path of a file (not a folder) in a "
            "folder you can write to."
        )
    what = next((what for message, what in _DAMAGED.items() if message in str(error)), None)
    if what is None:
        return None
    file, aside = shlex.quote(str(path)), shlex.quote(f"{path}.damaged")
    return LabelStoreError(
        f"The label store {path} cannot be read: {what} (SQLite: {error}). Stop every process using it, then either "
        f"move it aside (`mv {file} {aside}`, with its -wal and -shm files if any) and start again with a new store "
        f"(pairs whose labels were in it are judged again), or first recover what is readable into a new file at "
        f"its place: `sqlite3 {aside} .recover | sqlite3 {file}` (SQLite 3.29 or later, built with `.recover`), or "
        f"else `sqlite3 {aside} .dump | sed 's/^ROLLBACK;/COMMIT;/' | sqlite3 {file}`."
    )


def _reports_damage(method):
    """Turn SQLite's errors about a damaged file into a [`LabelStoreError`] naming the file and the fix."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            damaged = _damaged_file_error(self.path, error)
            if damaged is None:
                raise
            raise damaged from error

    return wrapper


class LabelStore:
    """SQLite file of judge labels.

    Args:
        path (`str` or `os.PathLike`):
            The database file; created (with its folder) if missing.
        timeout (`float`, *optional*, defaults to `60.0`):
            Seconds a writer waits for another process's transaction before giving up.

    Example:

    ```python
    store = LabelStore("labels.sqlite")
    judgements = judge_pairs_cached(judge, prompts, chosen, rejected, store=store)  # asks only for new pairs
    ```
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._local = threading.local()
        self._create_or_upgrade()

    @_reports_damage
    def _create_or_upgrade(self) -> None:
        with self._write() as connection:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                connection.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif row[0] in ("1", "2"):
                if row[0] == "1":
                    # Version 1 stored every pair in its key's order, which is what `judged_reversed = 0` means.
                    connection.execute(
                        "ALTER TABLE pairwise_labels ADD COLUMN judged_reversed INTEGER NOT NULL DEFAULT 0"
                    )
                # Version 3 adds the batch tables, created above, and the tokens of each label.
                for table in ("pairwise_labels", "score_labels"):
                    present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
                    for column in ("prompt_tokens", "completion_tokens"):
                        if column not in present:  # a table created above already has it
                            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER")
                connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise ValueError(
                    f"The label store {self.path} has schema version {row[0]}, this version of trl_won reads version "
                    f"{SCHEMA_VERSION}. Use another file or a matching trl_won version."
                )

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r})"

    # One connection per process and thread: SQLite connections must not cross a fork or be shared by threads.
    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid():
            connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _write(self) -> "_Transaction":
        return _Transaction(self._connection())

    def __getstate__(self):
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state):
        self.path, self.timeout = state["path"], state["timeout"]
        self._local = threading.local()

    def close(self) -> None:
        """Close this thread's connection (a later call reopens it)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    @_reports_damage
    def is_empty(self) -> bool:
        """Whether the store holds nothing paid for: no label, no batch job and no batch request line (judges
        registered without a label do not count)."""
        connection = self._connection()
        tables = ("pairwise_labels", "score_labels", "batch_jobs", "batch_lines")
        return all(connection.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None for table in tables)

    @_reports_damage
    def register_judge(self, fingerprint: str, description: dict[str, Any]) -> None:
        """Record what a fingerprint stands for (for people reading the file; labels do not need it)."""
        with self._write() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO judges VALUES (?, ?, ?)",
                (fingerprint, json.dumps(description, sort_keys=True, default=str), time.time()),
            )

    @_reports_damage
    def get_pairs(
        self,
        fingerprint: str,
        prompts: Sequence[Prompt],
        completions_a: Sequence[Completion],
        completions_b: Sequence[Completion],
    ) -> list[PairwiseJudgement | None]:
        """Stored judgements of each pair (`None` where nothing is stored)."""
        keys = [pair_key(p, a, b) for p, a, b in zip(prompts, completions_a, completions_b, strict=True)]
        rows = self._fetch("pairwise_labels", fingerprint, [k for k, _ in keys])
        results = []
        for key, flipped in keys:
            row = rows.get(key)
            if row is None:
                results.append(None)
                continue
            judgement = PairwiseJudgement(
                probability=row[0],
                probability_a_first=row[1],
                probability_a_second=row[2],
                reason=row[3],
                rationale_a_first=row[4],
                rationale_a_second=row[5],
                prompt_tokens=row[7],
                completion_tokens=row[8],
            )
            # Swapped only when asked in the other order than it was judged in: the judged order reads back exactly.
            results.append(judgement.swapped() if flipped != bool(row[6]) else judgement)
        return results

    @_reports_damage
    def put_pairs(
        self,
        fingerprint: str,
        prompts: Sequence[Prompt],
        completions_a: Sequence[Completion],
        completions_b: Sequence[Completion],
        judgements: Sequence[PairwiseJudgement],
    ) -> int:
        """Store the final judgements of these pairs in one transaction; return how many were final."""
        rows = []
        now = time.time()
        for p, a, b, judgement in zip(prompts, completions_a, completions_b, judgements, strict=True):
            if not judgement.final:
                continue
            _check_range(
                [judgement.probability, judgement.probability_a_first, judgement.probability_a_second], 0.0, "pair"
            )
            key, flipped = pair_key(p, a, b)
            rows.append(
                (
                    fingerprint,
                    key,
                    judgement.probability,
                    judgement.probability_a_first,
                    judgement.probability_a_second,
                    judgement.reason,
                    judgement.rationale_a_first,
                    judgement.rationale_a_second,
                    now,
                    int(flipped),
                    judgement.prompt_tokens,
                    judgement.completion_tokens,
                )
            )
        with self._write() as connection:
            connection.executemany(
                "INSERT INTO pairwise_labels (fingerprint, content_key, probability, probability_first, "
                "probability_second, reason, rationale_first, rationale_second, created_at, judged_reversed, "
                "prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                rows,
            )
        return len(rows)

    @_reports_damage
    def get_scores(
        self, fingerprint: str, prompts: Sequence[Prompt], completions: Sequence[Completion]
    ) -> list[ScoreJudgement | None]:
        """Stored score judgements of each completion (`None` where nothing is stored)."""
        keys = [content_key(p, c) for p, c in zip(prompts, completions, strict=True)]
        rows = self._fetch("score_labels", fingerprint, keys)
        return [
            None
            if key not in rows
            else ScoreJudgement(
                score=rows[key][0],
                expected_score=rows[key][1],
                reason=rows[key][2],
                rationale=rows[key][3],
                prompt_tokens=rows[key][4],
                completion_tokens=rows[key][5],
            )
            for key in keys
        ]

    @_reports_damage
    def put_scores(
        self,
        fingerprint: str,
        prompts: Sequence[Prompt],
        completions: Sequence[Completion],
        judgements: Sequence[ScoreJudgement],
    ) -> int:
        """Store the final score judgements in one transaction; return how many were final."""
        now = time.time()
        for j in judgements:
            if j.final:
                _check_range([j.score], -1.0, "score")
        rows = [
            (
                fingerprint,
                content_key(p, c),
                j.score,
                j.expected_score,
                j.reason,
                j.rationale,
                now,
                j.prompt_tokens,
                j.completion_tokens,
            )
            for p, c, j in zip(prompts, completions, judgements, strict=True)
            if j.final
        ]
        with self._write() as connection:
            connection.executemany(
                "INSERT INTO score_labels (fingerprint, content_key, score, expected_score, reason, rationale, "
                "created_at, prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                rows,
            )
        return len(rows)

    @_reports_damage
    def count(self, fingerprint: str | None = None, kind: str = "pairwise") -> int:
        """Number of stored labels (of one judge when `fingerprint` is given); `kind` is `"pairwise"` or `"score"`."""
        table = {"pairwise": "pairwise_labels", "score": "score_labels"}[kind]
        connection = self._connection()
        if fingerprint is None:
            return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        query = f"SELECT COUNT(*) FROM {table} WHERE fingerprint = ?"
        return connection.execute(query, (fingerprint,)).fetchone()[0]

    # ------------------------------------------------------------------------------------------- batch files

    @_reports_damage
    def record_batch_job(
        self, job_key: str, fingerprint: str, kind: str, target: str, lines: Sequence[tuple[str, str]]
    ) -> None:
        """Record a batch job and its request lines (`(custom_id, content_key)`) in one transaction, before anything
        is sent. A line recorded before without an answer (a failed one, or one of a job that never reached the
        server) moves to this job. A line of a Batch API job that is uploaded or submitted and not finished never
        moves: a [`RunningBatchError`] names its batch, and nothing is recorded."""
        now = time.time()
        with self._write() as connection:
            running = self._running_batch_lines(connection, [custom_id for custom_id, _ in lines])
            if running:
                custom_id, (job_key, batch_id, target) = next(iter(running.items()))
                batch = f"batch {batch_id}" if batch_id else f"the batch of job {job_key} (its id is not recorded yet)"
                raise RunningBatchError(
                    f"{len(running)} request line(s) (first: {custom_id}) belong to {batch} on {target}, recorded in "
                    f"the label store {self.path} and not finished: moving them to another job would pay for them "
                    "twice or lose that batch's results. Let a Batch API labeling run with this store finish it (it "
                    "resumes the batch and stores its results), or cancel it (`cancel_batches`) and run again."
                )
            connection.execute(
                "INSERT INTO batch_jobs VALUES (?, ?, ?, ?, 'prepared', NULL, NULL, NULL, ?, ?)",
                (job_key, fingerprint, kind, target, now, now),
            )
            connection.executemany(
                "INSERT INTO batch_lines VALUES (?, ?, ?, ?, NULL, NULL, NULL, NULL, ?) ON CONFLICT (custom_id) DO "
                "UPDATE SET job_key = excluded.job_key, error = NULL, updated_at = excluded.updated_at "
                "WHERE batch_lines.answer IS NULL",
                [(custom_id, fingerprint, key, job_key, now) for custom_id, key in lines],
            )

    @_reports_damage
    def update_batch_job(self, job_key: str, **fields: Any) -> None:
        """Set some of a batch job's columns (`state`, `input_file_id`, `batch_id`, `status`)."""
        unknown = set(fields) - {"state", "input_file_id", "batch_id", "status"}
        if unknown:
            raise ValueError(f"Unknown batch job fields {sorted(unknown)}.")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._write() as connection:
            connection.execute(
                f"UPDATE batch_jobs SET {assignments}, updated_at = ? WHERE job_key = ?",
                (*fields.values(), time.time(), job_key),
            )

    @_reports_damage
    def delete_batch_job(self, job_key: str) -> None:
        """Forget a batch job that never reached a server, and its lines that have no answer."""
        with self._write() as connection:
            connection.execute("DELETE FROM batch_lines WHERE job_key = ? AND answer IS NULL", (job_key,))
            connection.execute("DELETE FROM batch_jobs WHERE job_key = ?", (job_key,))

    @_reports_damage
    def forget_batch(self, batch_id: str) -> int:
        """Give up a batch the server no longer knows: its job is deleted and its lines without an answer are sent
        again by the next run. Returns how many jobs were forgotten."""
        with self._write() as connection:
            keys = [
                row[0] for row in connection.execute("SELECT job_key FROM batch_jobs WHERE batch_id = ?", (batch_id,))
            ]
            for key in keys:
                connection.execute("DELETE FROM batch_lines WHERE job_key = ? AND answer IS NULL", (key,))
                connection.execute("DELETE FROM batch_jobs WHERE job_key = ?", (key,))
        return len(keys)

    @_reports_damage
    def batch_jobs(self, fingerprint: str | None = None) -> list[dict[str, Any]]:
        """The recorded batch jobs (of one judge when `fingerprint` is given), oldest first."""
        query = f"SELECT {', '.join(BATCH_JOB_COLUMNS)} FROM batch_jobs"
        arguments: tuple = ()
        if fingerprint is not None:
            query, arguments = query + " WHERE fingerprint = ?", (fingerprint,)
        rows = self._connection().execute(query + " ORDER BY created_at, job_key", arguments).fetchall()
        return [dict(zip(BATCH_JOB_COLUMNS, row, strict=True)) for row in rows]

    @_reports_damage
    def batch_lines(self, custom_ids: Sequence[str]) -> dict[str, tuple[str, str | None, str | None, str]]:
        """`custom_id -> (job_key, answer, error, fingerprint)` of the recorded lines among `custom_ids`."""
        found: dict[str, tuple] = {}
        unique = list(dict.fromkeys(custom_ids))
        connection = self._connection()
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = (
                f"SELECT custom_id, job_key, answer, error, fingerprint FROM batch_lines WHERE custom_id IN ({marks})"
            )
            for row in connection.execute(query, chunk):
                found[row[0]] = tuple(row[1:])
        return found

    @_reports_damage
    def running_batch_lines(self, custom_ids: Sequence[str]) -> dict[str, tuple[str, str | None, str]]:
        """`custom_id -> (job_key, batch_id, target)` of the lines among `custom_ids` without an answer that belong to
        a Batch API job not finished (uploaded or submitted): their batch may still answer them."""
        return self._running_batch_lines(self._connection(), custom_ids)

    @staticmethod
    def _running_batch_lines(connection: sqlite3.Connection, custom_ids: Sequence[str]) -> dict[str, tuple]:
        found: dict[str, tuple] = {}
        unique = list(dict.fromkeys(custom_ids))
        states = ",".join("?" * len(RUNNING_JOB_STATES))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            query = (
                "SELECT l.custom_id, j.job_key, j.batch_id, j.target FROM batch_lines AS l JOIN batch_jobs AS j "
                f"ON l.job_key = j.job_key WHERE l.custom_id IN ({','.join('?' * len(chunk))}) AND l.answer IS NULL "
                f"AND j.kind = 'openai' AND j.state IN ({states})"
            )
            for row in connection.execute(query, (*chunk, *RUNNING_JOB_STATES)):
                found[row[0]] = tuple(row[1:])
        return found

    @_reports_damage
    def lines_of_job(self, job_key: str) -> dict[str, tuple[str | None, str | None]]:
        """`custom_id -> (answer, error)` of a job's lines."""
        query = "SELECT custom_id, answer, error FROM batch_lines WHERE job_key = ?"
        return {row[0]: (row[1], row[2]) for row in self._connection().execute(query, (job_key,))}

    @_reports_damage
    def put_batch_results(self, results: Sequence[tuple[str, str | None, str | None, int, int]]) -> None:
        """Store result lines `(custom_id, answer, error, prompt_tokens, completion_tokens)` in one transaction. A
        line that has an answer keeps it (a file read twice changes nothing)."""
        now = time.time()
        with self._write() as connection:
            connection.executemany(
                "UPDATE batch_lines SET answer = ?, error = ?, prompt_tokens = ?, completion_tokens = ?, "
                "updated_at = ? WHERE custom_id = ? AND answer IS NULL",
                [(answer, error, pt, ct, now, custom_id) for custom_id, answer, error, pt, ct in results],
            )

    @_reports_damage
    def usage(self, fingerprint: str, kind: str = "pairwise") -> dict[str, int]:
        """Tokens the stored labels of a judge cost, live or batch (`usage` of its answers):
        `{"prompt_tokens": ..., "completion_tokens": ..., "labels": ...}`, `labels` counting those whose cost is
        known."""
        table = {"pairwise": "pairwise_labels", "score": "score_labels"}[kind]
        row = (
            self._connection()
            .execute(
                f"SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COUNT(prompt_tokens) "
                f"FROM {table} WHERE fingerprint = ?",
                (fingerprint,),
            )
            .fetchone()
        )
        return {"prompt_tokens": int(row[0]), "completion_tokens": int(row[1]), "labels": int(row[2])}

    @_reports_damage
    def batch_usage(self, fingerprint: str, content_keys: Sequence[str] | None = None) -> dict[str, int]:
        """Tokens the answered batch lines cost (of these labels' `content_keys`, else of every label of the
        judge): `{"prompt_tokens": ..., "completion_tokens": ..., "lines": ...}`."""
        connection = self._connection()
        query = (
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COUNT(*) FROM batch_lines "
            "WHERE fingerprint = ? AND answer IS NOT NULL"
        )
        if content_keys is None:
            totals = connection.execute(query, (fingerprint,)).fetchone()
        else:
            totals = [0, 0, 0]
            unique = list(dict.fromkeys(content_keys))
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                row = connection.execute(query + f" AND content_key IN ({marks})", (fingerprint, *chunk)).fetchone()
                totals = [t + v for t, v in zip(totals, row, strict=True)]
        return {"prompt_tokens": int(totals[0]), "completion_tokens": int(totals[1]), "lines": int(totals[2])}

    def _fetch(self, table: str, fingerprint: str, keys: Sequence[str]) -> dict[str, tuple]:
        columns = {
            "pairwise_labels": "probability, probability_first, probability_second, reason, rationale_first, "
            "rationale_second, judged_reversed, prompt_tokens, completion_tokens",
            "score_labels": "score, expected_score, reason, rationale, prompt_tokens, completion_tokens",
        }[table]
        found: dict[str, tuple] = {}
        unique = list(dict.fromkeys(keys))
        connection = self._connection()
        for start in range(0, len(unique), 500):  # SQLite limits the number of bound parameters
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT content_key, {columns} FROM {table} WHERE fingerprint = ? AND content_key IN ({marks})"
            for row in connection.execute(query, (fingerprint, *chunk)):
                found[row[0]] = tuple(row[1:])
                self._check_values(table, row)
        return found

    def _check_values(self, table: str, row: tuple) -> None:
        """Refuse a stored label outside its range: SQLite has no checksums, so this catches some damaged values."""
        low, count = (0.0, 3) if table == "pairwise_labels" else (-1.0, 1)
        values = row[1 : 1 + count]
        if all(v is None or (isinstance(v, float) and low - _SLACK <= v <= 1.0 + _SLACK) for v in values):
            return
        file, aside = shlex.quote(str(self.path)), shlex.quote(f"{self.path}.damaged")
        raise LabelStoreError(
            f"The label store {self.path} holds a damaged label: {values} for content key {row[0]} in {table}, "
            f"outside [{low:g}, 1]. Move the file aside (`mv {file} {aside}`) and start a new store, or delete that "
            f"row: `sqlite3 {file} \"DELETE FROM {table} WHERE content_key = '{row[0]}'\"` (it is judged again)."
        )


_SLACK = 1e-6  # rounding in a judge's normalization is not damage


def _check_range(values: list, low: float, kind: str) -> None:
    for value in values:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not low - _SLACK <= value <= 1 + _SLACK
        ):
            raise ValueError(
                f"A judge returned {value!r} in a {kind} judgement, outside [{low:g}, 1]; it is not stored. Fix the "
                "judge."
            )


class _Transaction:
    """`with` block that runs in one SQLite transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error)."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, exc_type, exc, tb) -> None:
        self.connection.execute("ROLLBACK" if exc_type else "COMMIT")
