"""Labeling through batch files: OpenAI's Batch API (half price, results within 24 hours) and vLLM's offline
`run-batch` (no server: the fastest way to label with a local GPU).

A served judge ([`OpenAIJudge`], [`OpenAIScoreJudge`]) writes exactly the requests it sends live (both orders of each
pair, the local judge's exact prompt with a `tokenizer`, log-probabilities): the bodies come from the judge's own
`answer_request`, and each answer is read by the live path's `read_answer` and the judge's own parser, so batch
labels equal live labels bit for bit. Each request line's `custom_id` is `{fingerprint}:{key}:{part}`, 56
characters (within the 64 that some batch APIs allow): the first 12 hex digits of the judge's fingerprint, the first 40
of the label store's key of the pair (or completion), and for a pair whether it was judged in the key's order or
reversed and which order the line shows (`"00"`, `"01"`, `"10"`, `"11"`); `"s"` for a score. The store keeps each
line's full fingerprint and key.

Crash safety rests on the [`LabelStore`]: a batch job and its `custom_id`s are recorded before the file is uploaded,
the file id right after the upload, the batch id right after the batch is created (and a batch created by a process
that died before recording its id is found again by the `trl_won_job` metadata set at creation), and result lines
are stored as they are downloaded. A rerun resumes the batches it already paid for instead of submitting again; pairs
already labeled are never sent.
"""

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import TrlWonError
from .cached import _LabelWriter
from .judgement import PairwiseJudgement, ScoreJudgement
from .openai_client import ChatResult, JudgeError, read_answer, sanitize_url, scrub
from .store import LabelStore, content_key, pair_key


logger = logging.getLogger(__name__)

# OpenAI's limits on one Batch input file.
MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200 * 1024 * 1024
# What a batch's status is once it will not change any more.
FINISHED = ("completed", "failed", "expired", "cancelled")
# The metadata key that names a batch's job in the label store (to find a batch whose id a crash did not record).
JOB_METADATA = "trl_won_job"


class BatchFileError(TrlWonError, ValueError):
    """A batch results file, a request line or a batch cannot be used: the message names the file and line (or the
    batch id), what is wrong and what to do."""


@dataclass
class BatchSettings:
    """How a served judge labels through batch files instead of live requests.

    Args:
        results_file (`str` or `os.PathLike`, *optional*):
            Read this results file (vLLM's `run-batch` output, or a Batch API output file) into the store, and label
            from the stored results only, with no server. Without it, the requests go to the judge server's Batch
            API (`base_url`, OpenAI's by default).
        failed (`str`, *optional*, defaults to `"report"`):
            What to do with request lines that got no answer (the error file, lines an expired or cancelled batch did
            not run, non-200 lines): `"report"` (log each pair with the server's reason; the pair is not labeled and
            a rerun sends it again), `"resubmit"` (send them again as a new batch, up to `max_resubmissions` times)
            or `"live"` (ask the judge live for those pairs).
        max_resubmissions (`int`, *optional*, defaults to `2`):
            New batches for failed lines, with `failed="resubmit"`.
        max_requests_per_file (`int`, *optional*, defaults to `50000`):
            Most request lines per batch (OpenAI's limit).
        max_bytes_per_file (`int`, *optional*, defaults to `209715200`):
            Largest batch input file in bytes (OpenAI's limit, 200 MB).
        poll_interval (`float`, *optional*, defaults to `30.0`):
            Seconds between two looks at the running batches, growing by `poll_backoff` up to `max_poll_interval`.
        poll_backoff (`float`, *optional*, defaults to `1.5`):
            Growth of the poll interval while no batch finishes.
        max_poll_interval (`float`, *optional*, defaults to `600.0`):
            Longest poll interval.
        completion_window (`str`, *optional*, defaults to `"24h"`):
            The Batch API's completion window (OpenAI offers `"24h"`).
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar over the requests of the running batches (from their request counts).
    """

    results_file: str | os.PathLike | None = None
    failed: str = "report"
    max_resubmissions: int = 2
    max_requests_per_file: int = MAX_REQUESTS_PER_FILE
    max_bytes_per_file: int = MAX_BYTES_PER_FILE
    poll_interval: float = 30.0
    poll_backoff: float = 1.5
    max_poll_interval: float = 600.0
    completion_window: str = "24h"
    show_progress: bool = True

    def __post_init__(self):
        if self.failed not in ("report", "resubmit", "live"):
            raise ValueError(f"`failed` must be 'report', 'resubmit' or 'live', got {self.failed!r}.")
        if self.max_requests_per_file < 1 or self.max_bytes_per_file < 1:
            raise ValueError("`max_requests_per_file` and `max_bytes_per_file` must be >= 1.")
        if self.poll_interval <= 0 or self.poll_backoff < 1 or self.max_poll_interval < self.poll_interval:
            raise ValueError(
                "`poll_interval` must be > 0, `poll_backoff` >= 1 and `max_poll_interval` >= `poll_interval`."
            )
        if self.max_resubmissions < 0:
            raise ValueError(f"`max_resubmissions` must be >= 0, got {self.max_resubmissions}.")


def custom_id(fingerprint: str, key: str, part: str) -> str:
    """A request line's `custom_id`: judge fingerprint, label key and part (see the module's docstring)."""
    return f"{fingerprint[:12]}:{key[:40]}:{part}"


def split_custom_id(value: Any) -> tuple[str, str, str] | None:
    """`(fingerprint, key, part)` of a `custom_id` written here, else `None`."""
    parts = value.split(":") if isinstance(value, str) else []
    return tuple(parts) if len(parts) == 3 and all(parts) else None


def check_batch_judge(judge: Any, offline: bool) -> None:
    """Refuse a judge that batch files cannot serve, saying why."""
    if not hasattr(judge, "answer_request"):
        raise TypeError(
            f"Batch labeling needs a served judge (OpenAIJudge or OpenAIScoreJudge), got {type(judge).__name__}."
        )
    if judge.chain_of_thought:
        raise ValueError(
            "Batch labeling sends one request per order; with chain of thought the answer request needs the rationale "
            "of an earlier one. Label with chain of thought live (without batch mode)."
        )
    if offline and judge.endpoint != "chat":
        raise ValueError(
            "vLLM's run-batch serves /v1/chat/completions only, and a judge with a `tokenizer` sends the local "
            "judge's exact prompt to /v1/completions: not available in run-batch files. Use the judge without a "
            "tokenizer (chat requests; labels of another fingerprint), or the Batch API / a live vLLM server for "
            "the exact prompt."
        )


class _Requests:
    """The request lines of the items a run labels: per item its `custom_id`s and their bodies."""

    def __init__(self, judge: Any, kind: str, items: list[tuple]):
        self.judge = judge
        self.kind = kind
        self.fingerprint = judge.fingerprint
        path, _ = judge.route
        self.url = "/v1" + path
        if kind == "pairs":
            requests = judge._requests(*[list(column) for column in zip(*items, strict=True)]) if items else []
            keys = [pair_key(*item) for item in items]
            self.ids = [
                [custom_id(self.fingerprint, key, f"{int(flipped)}{order}") for order in (0, 1)]
                for key, flipped in keys
            ]
            self.keys = [key for key, _ in keys]
            self.requests = {cid: requests[2 * i + o] for i, ids in enumerate(self.ids) for o, cid in enumerate(ids)}
        else:
            requests = judge.template.requests_for(
                [p for p, _ in items], [c for _, c in items], judge.chain_of_thought
            )
            self.keys = [content_key(*item) for item in items]
            self.ids = [[custom_id(self.fingerprint, key, "s")] for key in self.keys]
            self.requests = {ids[0]: requests[i] for i, ids in enumerate(self.ids)}
        self.key_of = {cid: self.keys[i] for i, ids in enumerate(self.ids) for cid in ids}

    def line(self, cid: str) -> str:
        """The request line of `cid` (JSON, no newline)."""
        body = self.judge.answer_request(self.requests[cid])
        return json.dumps({"custom_id": cid, "method": "POST", "url": self.url, "body": body}, ensure_ascii=False)

    def judgement(self, position: int, answers: list[str]) -> PairwiseJudgement | ScoreJudgement:
        """The judgement of item `position` from its lines' stored answers, as the live judge makes it."""
        results = [self.judge.checked_answer(ChatResult(**json.loads(answer))) for answer in answers]
        if self.kind == "pairs":
            return self.judge._judgement((results[0], None), (results[1], None))
        return self.judge.judgement_from(results[0])

    def unjudged(self, reason: str) -> PairwiseJudgement | ScoreJudgement:
        cls = PairwiseJudgement if self.kind == "pairs" else ScoreJudgement
        return cls.unjudged(reason, final=False)


def _answer_of_line(data: dict, parse: Callable, secret: str | None) -> tuple[str | None, str | None, int, int]:
    """`(answer, error, prompt_tokens, completion_tokens)` of one result line (OpenAI's and vLLM's schema:
    `{"custom_id", "response": {"status_code", "body"} | null, "error": null | str | {"message", ...}}`)."""
    response = data.get("response") if isinstance(data.get("response"), dict) else {}
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, dict) and not data.get("error"):
        try:
            result, answer = read_answer(json.dumps(body), parse, secret)
        except ValueError as error:
            return None, str(error), 0, 0
        stored = {"content": result.content, "top_logprobs": result.top_logprobs}
        stored.update(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
        return json.dumps(stored), None, result.prompt_tokens, result.completion_tokens
    message = _error_message(data.get("error"), secret) or _error_message(body, secret) or "no answer"
    prefix = f"HTTP {status}: " if status is not None else ""
    return None, scrub(f"{prefix}{message}", secret)[:500], 0, 0


def _error_message(value: Any, secret: str | None) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        inner = value.get("error")
        if isinstance(inner, dict | str):
            return _error_message(inner, secret)
        for key in ("message", "detail", "code"):
            if isinstance(value.get(key), str):
                return value[key]
        return scrub(json.dumps(value), secret)[:300]  # scrubbed before it is cut (a cut key is not found)
    return None


class BatchLabeler:
    """Labels the items a [`judge_pairs_cached`]/[`score_cached`] run misses through batch files, handing each
    judgement to `on_judged` as its lines' results are in (the caller stores it). See [`BatchSettings`]."""

    def __init__(self, judge: Any, store: LabelStore, settings: BatchSettings, kind: str):
        if store is None:
            raise ValueError(
                "Batch labeling needs a `store`: it records each batch before it is submitted, so that a rerun after "
                "a crash resumes it instead of paying for it twice."
            )
        check_batch_judge(judge, offline=settings.results_file is not None)
        self.judge = judge
        self.store = store
        self.settings = settings
        self.kind = kind
        self.client = None
        self.target = sanitize_url(judge.client.base_url)
        self.secret = judge.client._key()

    # ------------------------------------------------------------------------------------------------ running

    def stream(self, *arguments) -> None:
        *columns, on_judged, chunk_size = arguments
        if not columns or not columns[0]:
            return
        with _exclusive(self.store):
            self._stream(list(zip(*columns, strict=True)), on_judged, chunk_size)

    def _stream(self, items: list[tuple], on_judged: Callable, chunk_size: int) -> None:
        requests = _Requests(self.judge, self.kind, items)
        pending = set(range(len(items)))

        def deliver(final: bool) -> list[tuple[int, str]]:
            """Hand over the items whose lines all have answers; with `final`, also return `(item, reason)` of those
            with a failed line (and no line still running)."""
            lines = self.store.batch_lines([cid for i in pending for cid in requests.ids[i]])
            done, failed = [], []
            for i in sorted(pending):
                states = [lines.get(cid) for cid in requests.ids[i]]
                if all(state is not None and state[1] is not None for state in states):
                    done.append(i)
                elif final:
                    errors = [
                        f"{cid.rsplit(':', 1)[1]}: {s[2]}" for cid, s in zip(requests.ids[i], states) if s and s[2]
                    ]
                    missing = [s for s in states if s is None or (s[1] is None and s[2] is None)]
                    if errors or missing:
                        failed.append((i, "; ".join(errors) or "no result for it"))
            for i in done:
                answers = [lines[cid][1] for cid in requests.ids[i]]
                pending.discard(i)
                on_judged([i], [requests.judgement(i, answers)])
            return failed

        if self.settings.results_file is not None:
            self.read_results_file(self.settings.results_file)
            failed = deliver(final=True)
            failed = [(i, f"{reason} (from {self.settings.results_file})") for i, reason in failed]
        else:
            failed = []
            for round_ in range(1 + (self.settings.max_resubmissions if self.settings.failed == "resubmit" else 0)):
                self._run_round(requests, after_job=lambda: deliver(final=False))
                failed = deliver(final=True)
                if not failed:
                    break
                if self.settings.failed == "resubmit" and round_ < self.settings.max_resubmissions:
                    logger.warning("%d %s had failed batch lines: sending them again.", len(failed), self.kind)
        if not failed:
            return
        self._report(failed, requests)
        if self.settings.failed == "live":
            positions = [i for i, _ in failed]
            logger.warning("Asking the judge live for the %d %s whose batch lines failed.", len(positions), self.kind)

            def mapped(where: list[int], judgements: list) -> None:
                on_judged([positions[w] for w in where], judgements)

            columns_of_failed = [list(column) for column in zip(*[items[i] for i in positions], strict=True)]
            stream = self.judge._judge_pairs_streaming if self.kind == "pairs" else self.judge._score_streaming
            stream(*columns_of_failed, mapped, chunk_size)
            return
        for i, reason in failed:
            on_judged([i], [requests.unjudged(f"batch line failed: {reason}")])

    def _report(self, failed: list[tuple[int, str]], requests: _Requests) -> None:
        shown = 20
        lines = "\n".join(f"  {requests.keys[i]}: {reason}" for i, reason in failed[:shown])
        more = f"\n  ... and {len(failed) - shown} more" if len(failed) > shown else ""
        what = {"report": "they are not labeled; a rerun sends them again", "live": "asking the judge live"}
        logger.warning(
            "%d %s got no answer from their batch lines (%s) - label store key: reason:\n%s%s",
            len(failed),
            self.kind,
            what.get(self.settings.failed, f"after {self.settings.max_resubmissions} resubmissions"),
            lines,
            more,
        )

    # ------------------------------------------------------------------------------------------ OpenAI batches

    def _openai(self):
        if self.client is None:
            self.client = self.judge.client.openai_client()
        return self.client

    def _run_round(self, requests: _Requests, after_job: Callable[[], Any]) -> None:
        """Resume the jobs holding these requests, submit those never sent and those that failed (in an earlier
        round or run), and wait for every job to finish, reading its results."""
        all_ids = [cid for ids in requests.ids for cid in ids]
        lines = self.store.batch_lines(all_ids)
        jobs = {job["job_key"]: job for job in self.store.batch_jobs(requests.fingerprint)}
        active, to_send = [], []
        # A job with a line still unanswered (an error line too: a crash may have cut its download short) is resumed
        # unless it never reached a server or is finished; its lines are not sent again while it runs.
        for job_key in dict.fromkeys(state[0] for state in lines.values() if state[1] is None):
            job = jobs.get(job_key)
            if job is None or job["kind"] != "openai" or job["state"] == "prepared":
                if job is not None and job["state"] == "prepared":
                    # Recorded, but no batch can exist (one is created only after the upload is recorded).
                    self.store.delete_batch_job(job_key)
                continue
            if job["state"] != "finished":
                active.append(job)
        lines = self.store.batch_lines(all_ids)
        busy = {job["job_key"] for job in active}
        for cid in all_ids:
            state = lines.get(cid)
            if state is None or (state[1] is None and state[0] not in busy):
                to_send.append(cid)
        if active:
            logger.info("Resuming %d batch(es) recorded in %s.", len(active), self.store.path)
        for chunk in self._chunks(requests, to_send):
            active.append(self._submit(requests, chunk))
        self._wait(active, requests, after_job)

    def _chunks(self, requests: _Requests, ids: Sequence[str]) -> Iterable[list[tuple[str, str]]]:
        """`(custom_id, line)` lists under the per-file limits (lines are built lazily, one chunk at a time)."""
        chunk, size = [], 0
        for cid in ids:
            line = requests.line(cid)
            length = len(line.encode()) + 1
            if length > self.settings.max_bytes_per_file:
                raise BatchFileError(
                    f"The request line {cid} takes {length} bytes, more than a batch file may hold "
                    f"({self.settings.max_bytes_per_file}). Shorten the prompt or completions of that pair."
                )
            if chunk and (
                len(chunk) >= self.settings.max_requests_per_file or size + length > self.settings.max_bytes_per_file
            ):
                yield chunk
                chunk, size = [], 0
            chunk.append((cid, line))
            size += length
        if chunk:
            yield chunk

    def _submit(self, requests: _Requests, chunk: list[tuple[str, str]]) -> dict:
        """Record, upload and create one batch; its job."""
        job_key = uuid.uuid4().hex
        self.store.record_batch_job(
            job_key, requests.fingerprint, "openai", self.target, [(cid, requests.key_of[cid]) for cid, _ in chunk]
        )
        content = ("\n".join(line for _, line in chunk) + "\n").encode()
        client = self._openai()
        uploaded = self._call(
            lambda: client.files.create(
                file=(f"trl_won-{job_key}.jsonl", content, "application/jsonl"), purpose="batch"
            ),
            "upload the batch input file",
        )
        self.store.update_batch_job(job_key, state="uploaded", input_file_id=uploaded.id)
        job = {"job_key": job_key, "input_file_id": uploaded.id, "state": "uploaded", "created_at": time.time()}
        return self._create(job, requests)

    def _create(self, job: dict, requests: _Requests) -> dict:
        """Create the job's batch. Never retried blindly: a create whose answer was lost (timeout, dropped
        connection) may have created the batch, so the server's batches are searched for it before trying again."""
        import openai

        client = self._openai().with_options(max_retries=0)
        for attempt in range(self.judge.client.max_retries + 1):
            try:
                batch = self._call(
                    lambda: client.batches.create(
                        input_file_id=job["input_file_id"],
                        endpoint=requests.url,
                        completion_window=self.settings.completion_window,
                        metadata={JOB_METADATA: job["job_key"]},
                    ),
                    "create the batch",
                    reraise_connection=attempt < self.judge.client.max_retries,
                )
            except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError):
                time.sleep(min(2.0**attempt, 30.0))
                found = self._find(job)
                if found is not None:
                    return found
                continue
            self.store.update_batch_job(job["job_key"], state="submitted", batch_id=batch.id, status=batch.status)
            logger.info("Submitted batch %s (%s).", batch.id, self.target)
            return {**job, "state": "submitted", "batch_id": batch.id}
        raise AssertionError("unreachable")

    def _find(self, job: dict) -> dict | None:
        """The batch of `job` on the server (found by its `trl_won_job` metadata), recorded; `None` if there is
        none."""
        client = self._openai()
        since = job["created_at"] - 3600
        for batch in self._call(lambda: client.batches.list(limit=100), "list the batches"):
            if (batch.metadata or {}).get(JOB_METADATA) == job["job_key"]:
                self.store.update_batch_job(job["job_key"], state="submitted", batch_id=batch.id, status=batch.status)
                logger.info("Found batch %s of job %s by its metadata: resuming it.", batch.id, job["job_key"])
                return {**job, "state": "submitted", "batch_id": batch.id}
            if batch.created_at < since:  # newest first: older batches cannot be ours
                break
        return None

    def _adopt(self, job: dict, requests: _Requests) -> dict:
        """A job whose file was uploaded: the batch a crash kept us from recording, else a new batch from the
        uploaded file."""
        return self._find(job) or self._create(job, requests)

    def _wait(self, jobs: list[dict], requests: _Requests, after_job: Callable[[], Any]) -> None:
        jobs = [self._adopt(job, requests) if job["state"] == "uploaded" else job for job in jobs]
        if not jobs:
            return
        client = self._openai()
        interval = self.settings.poll_interval
        progress = tqdm(desc="Batch requests", unit="req", disable=not self.settings.show_progress)
        counts: dict[str, tuple[int, int]] = {}
        try:
            while jobs:
                finished = []
                for job in jobs:
                    batch = self._retrieve(client, job["batch_id"])
                    self.store.update_batch_job(job["job_key"], status=batch.status)
                    if batch.request_counts is not None:
                        rc = batch.request_counts
                        counts[job["batch_id"]] = (rc.completed + rc.failed, rc.total)
                    if batch.status in FINISHED:
                        self._download(job, batch, requests)
                        finished.append(job)
                done, total = (sum(c[i] for c in counts.values()) for i in (0, 1))
                progress.total = total
                progress.n = done
                progress.refresh()
                jobs = [job for job in jobs if job not in finished]
                if finished:
                    after_job()
                    interval = self.settings.poll_interval
                elif jobs:
                    time.sleep(interval)
                    interval = min(interval * self.settings.poll_backoff, self.settings.max_poll_interval)
        finally:
            progress.close()

    def _retrieve(self, client, batch_id: str):
        import openai

        try:
            return self._call(lambda: client.batches.retrieve(batch_id), f"look at batch {batch_id}", reraise_404=True)
        except openai.NotFoundError:
            raise BatchFileError(
                f"The server {self.target} does not know batch {batch_id}, recorded in the label store "
                f"{self.store.path}: it was created with another API key or base_url, or deleted. Point the judge at "
                f"the server and key that created it, or give it up with `LabelStore({str(self.store.path)!r})"
                f".forget_batch({batch_id!r})` (its unanswered requests are sent again by the next run)."
            ) from None

    def _download(self, job: dict, batch, requests: _Requests) -> None:
        """Store the batch's output and error lines as they arrive, then give every line still without a result
        the reason the batch gives."""
        client = self._openai()
        _, parse = self.judge.route
        expected = self.store.lines_of_job(job["job_key"])
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            writer = _LabelWriter(lambda _, rows: self.store.put_batch_results(rows))
            try:
                with client.files.with_streaming_response.content(file_id) as response:
                    for number, text in enumerate(response.iter_lines(), start=1):
                        if not text.strip():
                            continue
                        cid, row = self._result_row(
                            f"The results file {file_id} of batch {batch.id}",
                            number,
                            text,
                            parse,
                            "The download was cut off or the server's file is damaged: run again to download it "
                            "again (the lines stored so far are kept).",
                        )
                        if cid not in expected:
                            raise self._file_error(
                                f"Line {number} of file {file_id} of batch {batch.id} answers custom_id {cid}, which "
                                "is not one of that batch's requests: the server mixed up its files."
                            )
                        writer.add([0], [(cid, *row)])
            finally:
                writer.close()
        reason = {  # the batch's id and errors come from the server: scrubbed
            "expired": f"batch {batch.id} expired before this request ran",
            "cancelled": f"batch {batch.id} was cancelled before this request ran",
            "failed": f"batch {batch.id} failed: {self._batch_errors(batch)}",
        }.get(batch.status, f"batch {batch.id} finished without a result for this request")
        reason = scrub(reason, self.secret)
        left = [
            cid
            for cid, (answer, error) in self.store.lines_of_job(job["job_key"]).items()
            if answer is None and error is None
        ]
        self.store.put_batch_results([(cid, None, reason, 0, 0) for cid in left])
        self.store.update_batch_job(job["job_key"], state="finished", status=batch.status)
        logger.info("Batch %s %s: results stored (%d without a result).", batch.id, batch.status, len(left))

    @staticmethod
    def _batch_errors(batch) -> str:
        errors = getattr(batch, "errors", None)
        data = getattr(errors, "data", None) or []
        messages = [f"{getattr(e, 'code', None)}: {getattr(e, 'message', None)}" for e in data[:3]]
        return "; ".join(messages) or "no reason given"

    def _call(self, call: Callable[[], Any], what: str, reraise_404: bool = False, reraise_connection: bool = False):
        """A Batch/Files API call; the `openai` client's errors become a [`JudgeError`] with the key scrubbed."""
        import openai

        try:
            return call()
        except openai.NotFoundError:
            if reraise_404:
                raise
            message = f"The server {self.target} answered 404 when asked to {what}: it has no Batch API there."
        except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError):
            if reraise_connection:
                raise
            message = f"The server {self.target} could not be reached or failed when asked to {what}."
        except openai.APIStatusError as error:
            answer = scrub(error.response.text, self.secret)[:300]  # scrubbed before it is cut (a cut key is missed)
            message = f"The server {self.target} refused to {what} (HTTP {error.status_code}): {answer}"
        raise JudgeError(scrub(message, self.secret) + " Run again to resume: nothing recorded is lost.")

    # ----------------------------------------------------------------------------------------------- files

    def _file_error(self, message: str) -> BatchFileError:
        """A [`BatchFileError`] whose message quotes a results file or a server's answer: the key is scrubbed from it
        (a server may echo it back)."""
        return BatchFileError(scrub(message, self.secret))

    def _result_row(self, where: str, number: int, text: str, parse: Callable, fix: str = "") -> tuple[str, tuple]:
        try:
            data = json.loads(text)
        except ValueError:
            fix = fix or (
                "The file is damaged or truncated (a run-batch that was stopped?): run it again to rewrite the file, "
                "or delete that line (its request is sent again by the next request file)."
            )
            raise self._file_error(
                f"{where}, line {number}: not JSON ({scrub(text, self.secret)[:80]!r}...). {fix}"
            ) from None
        cid = data.get("custom_id") if isinstance(data, dict) else None
        if not isinstance(cid, str):
            raise BatchFileError(
                f"{where}, line {number}: not a batch result line (no 'custom_id'). Give the output file of "
                "`vllm run-batch` or of the Batch API."
            )
        return cid, _answer_of_line(data, parse, self.secret)

    def read_results_file(self, path: str | os.PathLike) -> int:
        """Check every line of a results file, then store its answers; return how many lines were stored.

        Refused, naming the file and line: a line that is not JSON (damaged or truncated file), a `custom_id` of
        another judge (its fingerprint differs), one that no request file written into this store holds, one that
        appears twice.
        """
        path = Path(path)
        if not path.is_file():
            raise BatchFileError(
                f"The batch results file {path} does not exist. Give the file `vllm run-batch -o` wrote."
            )
        _, parse = self.judge.route
        fingerprint = self.judge.fingerprint
        rows, seen = [], {}
        with open(path, encoding="utf-8") as file:
            for number, text in enumerate(file, start=1):
                if not text.strip():
                    continue
                cid, row = self._result_row(f"The batch results file {path}", number, text, parse)
                parts = split_custom_id(cid)
                if parts is None or parts[0] != fingerprint[:12]:
                    owner = "a judge of another fingerprint" if parts else "no trl_won request file"
                    raise self._file_error(
                        f"The batch results file {path}, line {number}: custom_id {scrub(cid, self.secret)[:160]!r} "
                        f"is from {owner} "
                        f"(this judge's fingerprint is {fingerprint}). The file is from another run or other judge "
                        "settings: give the results of a request file this judge wrote, or the settings that wrote it."
                    )
                if cid in seen:
                    raise self._file_error(
                        f"The batch results file {path}, line {number}: custom_id {cid} already answered on line "
                        f"{seen[cid]}. Give each request's result once (remove the duplicate line)."
                    )
                seen[cid] = number
                rows.append((cid, *row))
        known = self.store.batch_lines(list(seen))
        unknown = [cid for cid in seen if cid not in known or known[cid][3] != fingerprint]
        if unknown:
            raise self._file_error(
                f"The batch results file {path}, line {seen[unknown[0]]}: custom_id {unknown[0]} is in no request "
                f"file written into the label store {self.store.path} ({len(unknown)} such line(s)). Read the results "
                "with the store that wrote the request file."
            )
        for start in range(0, len(rows), 1000):
            self.store.put_batch_results(rows[start : start + 1000])
        logger.info("Read %d result lines from %s into %s.", len(rows), path, self.store.path)
        return len(rows)

    def write_request_file(self, items: list[tuple], path: str | os.PathLike) -> int:
        """Write the request lines of `items` not answered yet to `path` (for `vllm run-batch -i`), recording them in
        the store; return how many lines were written.

        Lines of a Batch API batch that is not finished are left out (a warning names the batch): that batch answers
        them, and a Batch API labeling run with this store stores its results. The store's batch lock is held while
        the file is written (a Batch API run on the same store at the same time is refused)."""
        check_batch_judge(self.judge, offline=True)
        requests = _Requests(self.judge, self.kind, items)
        with _exclusive(self.store):
            return self._write_request_file(requests, Path(path))

    def _write_request_file(self, requests: _Requests, path: Path) -> int:
        lines = self.store.batch_lines([cid for ids in requests.ids for cid in ids])
        ids = [cid for ids in requests.ids for cid in ids if lines.get(cid) is None or lines[cid][1] is None]
        running = self.store.running_batch_lines(ids)
        if running:
            batches = sorted(
                {
                    (f"batch {batch_id}" if batch_id else f"the batch of job {job_key} (its id is not recorded yet)")
                    + f" on {target}"
                    for job_key, batch_id, target in running.values()
                }
            )
            logger.warning(
                "%d request line(s) left out of %s: they belong to unfinished Batch API batches (%s), recorded in %s. "
                "Run a Batch API labeling with this store to wait for them and store their results (a batch cancelled "
                "with `cancel_batches` leaves its unanswered lines to later request files once such a run has read "
                "it).",
                len(running),
                path,
                ", ".join(batches),
                self.store.path,
            )
            ids = [cid for cid in ids if cid not in running]
        path.parent.mkdir(parents=True, exist_ok=True)
        job_key = uuid.uuid4().hex
        self.store.record_batch_job(
            job_key, requests.fingerprint, "file", str(path), [(cid, requests.key_of[cid]) for cid in ids]
        )
        temporary = path.with_name(f".{path.name}.{job_key}.tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            for cid in ids:
                file.write(requests.line(cid) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        self.store.update_batch_job(job_key, state="written")
        return len(ids)


@contextlib.contextmanager
def _exclusive(store: LabelStore):
    """Hold the store's batch lock (`{store}.batch-lock`) for a batch labeling run: two processes planning batches on
    one store at once could both submit the same requests. The lock dies with its process (a crash frees it)."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: one batch run per store is up to the user
        yield
        return
    path = Path(f"{store.path}.batch-lock")
    with open(path, "a") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchFileError(
                f"Another process is labeling through batches with the label store {store.path} (it holds {path}). "
                "Wait for it to finish (it resumes and finishes every batch it submitted), or label into another "
                "store."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def cancel_batches(judge: Any, store: LabelStore) -> list[str]:
    """Cancel this judge's running batches recorded in `store`; return their ids. A later labeling run downloads
    what they finished before the cancellation (finished requests are paid for) and sends the rest again."""
    labeler = BatchLabeler(judge, store, BatchSettings(), "pairs")
    client = labeler._openai()
    cancelled = []
    for job in store.batch_jobs(judge.fingerprint):
        if job["kind"] == "openai" and job["state"] == "submitted":
            batch_id = job["batch_id"]
            batch = labeler._call(lambda: client.batches.cancel(batch_id), f"cancel batch {batch_id}")  # noqa: B023
            store.update_batch_job(job["job_key"], status=batch.status)
            cancelled.append(job["batch_id"])
    return cancelled
