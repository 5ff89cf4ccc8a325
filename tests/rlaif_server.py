"""A real OpenAI-compatible chat-completions HTTP server on 127.0.0.1 for the RLAIF judge tests and benchmark.

Each test gives it a `respond(body, attempt, headers) -> Reply` function; the server records every request (arrival
time, JSON body, headers) and the largest number of requests it was serving at once.
"""

import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


def chat_body(content: str, top: dict[str, float] | None = None, prompt_tokens: int = 50, completion_tokens: int = 1):
    """A chat-completions answer; `top` maps candidate first tokens to probabilities (sent as log-probabilities)."""
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "length"}
    if top is not None:
        entries = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in top.items()]
        first = {"token": content, "logprob": math.log(top.get(content, 1e-9)), "top_logprobs": entries}
        choice["logprobs"] = {"content": [first]}
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    return {"id": "chatcmpl-test", "object": "chat.completion", "model": "judge", "choices": [choice], "usage": usage}


def completion_body(text: str, top: dict[str, float] | None = None, prompt_tokens: int = 50):
    """A (text) completions answer; `top` maps candidate first tokens to log-probabilities."""
    choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
    if top is not None:
        choice["logprobs"] = {
            "tokens": [text],
            "token_logprobs": [top.get(text, -30.0)],
            "top_logprobs": [top],
            "text_offset": [0],
        }
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}
    return {"id": "cmpl-test", "object": "text_completion", "model": "judge", "choices": [choice], "usage": usage}


def request_text(body: dict) -> str:
    """Everything the judge model reads in a request: the chat messages or the completion prompt."""
    if "prompt" in body:
        return body["prompt"]
    return "\n".join(message["content"] for message in body["messages"])


def sections(body: dict) -> tuple[str, str]:
    """The two responses shown in a pairwise request (the test server's way of reading the sample)."""
    match = re.search(r"Response 1:\n(.*?)\n\nResponse 2:\n(.*?)(\n\n|$)", request_text(body), re.S)
    if match:
        return match.group(1), match.group(2)
    raise ValueError("no pairwise sample in the request")


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default listen backlog (5) refuses connections when many requests start at once


class LocalServer:
    """An HTTP server on 127.0.0.1 (a free port) served by a daemon thread while the `with` block runs."""

    def _listen(self, handler) -> None:
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class JudgeServer(LocalServer):
    def __init__(self, respond, idle_timeout: float | None = None):
        self.respond = respond
        self.requests: list[tuple[float, dict, dict]] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            timeout = idle_timeout  # closes a keep-alive connection idle for this long

            def handle(self):
                try:
                    super().handle()
                except (TimeoutError, ConnectionResetError):  # idle too long; a client that cancelled its requests
                    pass

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                body = json.loads(raw)
                key = json.dumps(body.get("messages", body.get("prompt")), sort_keys=True)
                with server.lock:
                    headers = {name.title(): value for name, value in self.headers.items()}
                    server.requests.append((time.monotonic(), body, headers))
                    attempt = server.attempts.get(key, 0)
                    server.attempts[key] = attempt + 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                counted = True

                def answered():  # before the last byte goes out, so the client cannot send its next request first
                    nonlocal counted
                    if counted:
                        counted = False
                        with server.lock:
                            server.in_flight -= 1

                try:
                    reply = server.respond(body, attempt, headers)
                    if reply.delay:
                        time.sleep(reply.delay)
                    payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                    try:
                        self.send_response(reply.status)
                        for name, value in reply.headers.items():
                            self.send_header(name, value)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        answered()
                        self.wfile.write(payload)
                    except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                        pass
                finally:
                    answered()

        self._listen(Handler)
