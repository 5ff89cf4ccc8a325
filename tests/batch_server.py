"""A fake OpenAI Batch API on 127.0.0.1, for the batch labeling tests.

It serves the live endpoints (`/v1/chat/completions`, `/v1/completions`) and the Batch API (`/v1/files` upload and
content, `/v1/batches` create / retrieve / list / cancel), and answers each request line of a batch with the same
`respond(body, attempt, headers) -> Reply` function as a live request, so that live and batch labels can be compared.

A batch follows OpenAI's documented lifecycle, one step per retrieve: `validating` -> `in_progress` -> `finalizing` ->
`completed`; or `failed` (from `validating`), `expired` (from `in_progress`: the lines that ran are in the output
file, the others in no file), `cancelling` -> `cancelled` (after `cancel`, with the lines that ran). What happens to
each batch is its `Plan`. Results come back in a shuffled order; non-200 answers go to the error file (or, with
`Plan.errors_in_output`, to the output file, as vLLM does). `hook(event, info)` is called at `upload` (the file is
stored, the answer not sent yet), `create` (the batch exists, the answer not sent yet), `retrieve` and `download`
(half of the output file sent): a test blocks there to kill its client at that moment.
"""

import email.parser
import json
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from rlaif_server import LocalServer, Reply


@dataclass
class Plan:
    """What a batch does. `outcome`: "completed", "expired", "failed" or "cancelled" (at the first retrieve after a
    cancel it is "cancelled" whatever this says). `ran`: how many lines run before an expiry or cancellation (the
    first ones of the file)."""

    outcome: str = "completed"
    ran: int | None = None
    errors_in_output: bool = False
    cut_output: bool = False  # the output file ends in the middle of a line
    failure: str = "The input file has an invalid line."
    extra_output_line: str | None = None  # written as is at the end of the output file (a damaged or foreign line)


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict
    created_at: int
    plan: Plan
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    cancel_requested: bool = False
    counts: dict = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: dict | None = None


class BatchServer(LocalServer):
    def __init__(self, respond, plan=None, hook=None, seed: int = 0):
        self.respond = respond
        self.plan = plan or (lambda index, lines: Plan())
        self.hook = hook or (lambda event, info: None)
        self.rng = random.Random(seed)
        self.files: dict[str, dict] = {}
        self.batches: dict[str, _Batch] = {}
        self.created: list[str] = []  # batch ids in creation order
        self.live_requests: list[dict] = []
        self.create_error: tuple[int, str] | None = None  # (status, message) answered to every batch create
        self.lost_create_answers = 0  # how many batch creates get no answer (the connection is closed)
        self.headers: list[dict] = []
        self.lock = threading.RLock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle(self):
                try:
                    super().handle()
                except (ConnectionResetError, BrokenPipeError, TimeoutError):
                    pass

            def _send(self, status: int, payload, content_type="application/json"):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                parts = urlsplit(self.path)
                path = parts.path
                if path.startswith("/v1/files/") and path.endswith("/content"):
                    file = server.files.get(path.split("/")[3])
                    if file is None:
                        return self._send(404, {"error": {"message": "No such file"}})
                    return self._content(file)
                if path.startswith("/v1/batches/"):
                    batch = server.batches.get(path.split("/")[3])
                    if batch is None:
                        return self._send(
                            404, {"error": {"message": f"No batch found with id '{path.split('/')[3]}'."}}
                        )
                    server.hook("retrieve", batch.id)
                    server.advance(batch)
                    return self._send(200, server.batch_json(batch))
                if path == "/v1/batches":
                    query = parse_qs(parts.query)
                    limit = int(query.get("limit", ["20"])[0])
                    newest = sorted(server.batches.values(), key=lambda b: (b.created_at, b.id), reverse=True)
                    if "after" in query:
                        ids = [b.id for b in newest]
                        newest = newest[ids.index(query["after"][0]) + 1 :]
                    page = newest[:limit]
                    return self._send(
                        200,
                        {
                            "object": "list",
                            "data": [server.batch_json(b) for b in page],
                            "first_id": page[0].id if page else None,
                            "last_id": page[-1].id if page else None,
                            "has_more": len(newest) > limit,
                        },
                    )
                return self._send(404, {"error": {"message": f"no route {path}"}})

            def _content(self, file):
                lines = file["content"].decode().splitlines(keepends=True)
                data = file["content"]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                half = len(lines) // 2
                self.wfile.write("".join(lines[:half]).encode())
                self.wfile.flush()
                if file["purpose"] == "batch_output":
                    server.hook("download", file["id"])
                self.wfile.write("".join(lines[half:]).encode())

            def do_POST(self):
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                path = urlsplit(self.path).path
                if path in ("/v1/chat/completions", "/v1/completions"):
                    body = json.loads(raw)
                    with server.lock:
                        server.live_requests.append(body)
                    reply = server.respond(body, 0, dict(self.headers.items()))
                    return self._send(reply.status, reply.body)
                if path == "/v1/files":
                    return self._upload(raw)
                if path == "/v1/batches":
                    body = json.loads(raw)
                    if server.create_error is not None:
                        return self._send(server.create_error[0], {"error": {"message": server.create_error[1]}})
                    if body["input_file_id"] not in server.files:
                        return self._send(400, {"error": {"message": "No such file"}})
                    batch = server.create(body)
                    server.hook("create", batch.id)
                    if server.lost_create_answers > 0:  # the batch exists, but its answer is lost on the way
                        server.lost_create_answers -= 1
                        self.close_connection = True
                        return None
                    return self._send(200, server.batch_json(batch))
                if path.startswith("/v1/batches/") and path.endswith("/cancel"):
                    batch = server.batches.get(path.split("/")[3])
                    if batch is None:
                        return self._send(404, {"error": {"message": "No such batch"}})
                    batch.cancel_requested = True
                    if batch.status not in ("completed", "failed", "expired", "cancelled"):
                        batch.status = "cancelling"
                    return self._send(200, server.batch_json(batch))
                return self._send(404, {"error": {"message": f"no route {path}"}})

            def _upload(self, raw: bytes):
                head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                message = email.parser.BytesParser().parsebytes(head + raw)
                fields = {}
                for part in message.get_payload():
                    name = part.get_param("name", header="content-disposition")
                    fields[name] = (part.get_filename(), part.get_payload(decode=True))
                filename, content = fields["file"]
                file = server.add_file(content, "batch", filename)
                server.hook("upload", file["id"])
                return self._send(200, server.file_json(file))

        self._listen(Handler)

    # ------------------------------------------------------------------------------------------------ the API

    def add_file(self, content: bytes, purpose: str, filename: str) -> dict:
        with self.lock:
            file = {"id": f"file-{len(self.files)}", "content": content, "purpose": purpose, "filename": filename}
            self.files[file["id"]] = file
        return file

    @staticmethod
    def file_json(file: dict) -> dict:
        return {
            "id": file["id"],
            "object": "file",
            "bytes": len(file["content"]),
            "created_at": int(time.time()),
            "filename": file["filename"],
            "purpose": file["purpose"],
            "status": "processed",
        }

    def create(self, body: dict) -> _Batch:
        with self.lock:
            lines = [json.loads(line) for line in self.files[body["input_file_id"]]["content"].decode().splitlines()]
            batch = _Batch(
                id=f"batch_{len(self.batches)}",
                input_file_id=body["input_file_id"],
                endpoint=body["endpoint"],
                metadata=body.get("metadata") or {},
                created_at=int(time.time()),
                plan=self.plan(len(self.batches), lines),
            )
            batch.counts["total"] = len(lines)
            self.batches[batch.id] = batch
            self.created.append(batch.id)
        return batch

    def batch_json(self, batch: _Batch) -> dict:
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": batch.created_at,
            "metadata": batch.metadata,
            "request_counts": dict(batch.counts),
            "errors": batch.errors,
        }

    def advance(self, batch: _Batch) -> None:
        """One step of the lifecycle."""
        with self.lock:
            plan = batch.plan
            if batch.status == "cancelling":
                self._run(batch, plan.ran or 0)
                batch.status = "cancelled"
            elif batch.status == "validating":
                if plan.outcome == "failed":
                    batch.status = "failed"
                    batch.errors = {"object": "list", "data": [{"code": "invalid_file", "message": plan.failure}]}
                else:
                    batch.status = "in_progress"
            elif batch.status == "in_progress":
                if plan.outcome == "expired":
                    self._run(batch, plan.ran or 0)
                    batch.status = "expired"
                else:
                    batch.status = "finalizing"
            elif batch.status == "finalizing":
                self._run(batch, None)
                batch.status = "completed"

    def _run(self, batch: _Batch, count: int | None) -> None:
        """Answer the first `count` lines (all with `None`) and write the output and error files."""
        lines = [json.loads(line) for line in self.files[batch.input_file_id]["content"].decode().splitlines()]
        lines = lines if count is None else lines[:count]
        output, errors = [], []
        for number, line in enumerate(lines):
            assert line["url"] == batch.endpoint and line["method"] == "POST"
            reply: Reply = self.respond(line["body"], 0, {})
            result = {
                "id": f"batch_req_{batch.id}_{number}",
                "custom_id": line["custom_id"],
                "response": {"status_code": reply.status, "request_id": f"req_{number}", "body": reply.body},
                "error": None,
            }
            if reply.status == 200:
                output.append(result)
                batch.counts["completed"] += 1
            else:
                (output if batch.plan.errors_in_output else errors).append(result)
                batch.counts["failed"] += 1
        for results, purpose, name in (
            (output, "batch_output", "output_file_id"),
            (errors, "batch_error", "error_file_id"),
        ):
            if results:
                self.rng.shuffle(results)
                text = "".join(json.dumps(r) + "\n" for r in results).encode()
                if batch.plan.cut_output and purpose == "batch_output":
                    text = text[:-40]
                if batch.plan.extra_output_line is not None and purpose == "batch_output":
                    text += (batch.plan.extra_output_line + "\n").encode()
                setattr(batch, name, self.add_file(text, purpose, f"{batch.id}_{purpose}.jsonl")["id"])
