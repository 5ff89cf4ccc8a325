"""Many requests to one OpenAI-compatible server (OpenAI, vLLM, TGI, llama.cpp, `transformers serve`), through the
official `openai` client.

The `openai` client does the HTTP: connections, proxies (`HTTPS_PROXY`, ...), retries of 408/409/429/5xx, timeouts
and connection errors with exponential backoff and jitter, and the server's `Retry-After`. On top of it, this module
keeps what labeling at scale needs:

- a worker pool: at most `max_concurrency` requests in flight, kept full across the whole run (a slow or retried
  request holds one slot, never the others), and at most `requests_per_second` started per second;
- a per-request timeout that does not count the time a request waits behind this client's own requests in the
  server's queue (see [`JudgeClient`]);
- counts of requests, retries, failures and tokens;
- a result per item with the reason when there is no answer, and a [`JudgeError`] that stops the run at once when the
  server refuses every request (wrong key, URL or model, a rejected parameter, no server at all, no log-probabilities);
- key hygiene: the API key is only ever in the `openai` client's `Authorization` header; it is scrubbed from every
  reason and error message (also when a server echoes it back), and never logged, stored or part of a repr.

Requests go through the client's generic `post` (`client.post("/chat/completions", body=..., cast_to=httpx.Response)`,
the `openai` client's way to call an endpoint with any JSON body) and the answer JSON is read and validated here: a
server's answer of another shape is an error for that item, never half an answer.
"""

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tqdm.auto import tqdm

from ..errors import TrlWonError


logger = logging.getLogger(__name__)

OPENAI_API = "https://api.openai.com/v1"
# Sent to servers that need no key (vLLM, llama.cpp, TGI, `transformers serve` without `--api-key`): the `openai`
# client refuses to start without one.
NO_KEY = "EMPTY"
# Status codes that mean the request can never succeed as sent.
REFUSED = {400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found", 422: "unprocessable"}
# A 400 that names the prompt's length concerns that item only (vLLM: "This model's maximum context length is ...").
_ITEM_TOO_LONG = re.compile(r"context length|context window|maximum context|too long|exceeds the", re.IGNORECASE)


class JudgeError(TrlWonError, RuntimeError):
    """The judge cannot label: its server refused a request that every request will repeat (wrong key, URL, model
    name or parameter), never answered, or answered without what the judge needs. The message is the server's,
    with any secret scrubbed."""


# The name of earlier versions.
JudgeRequestError = JudgeError


@dataclass
class RequestStats:
    """Counts of one client's traffic.

    Args:
        requests (`int`): HTTP requests sent, retries included.
        retries (`int`): Requests that were retries (done by the `openai` client).
        failures (`int`): Items that got no usable answer after all retries.
        prompt_tokens (`int`): Prompt tokens the server reported in `usage`.
        completion_tokens (`int`): Completion tokens the server reported in `usage`.
    """

    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ChatResult:
    """The useful part of one answer (chat or text completion).

    Args:
        content (`str` or `None`): The answer text.
        top_logprobs (`dict[str, float]` or `None`): Log-probabilities of the candidate first tokens; `None` when the
            server returned none.
        error (`str` or `None`): Why there is no answer.
        final (`bool`): `False` when a later attempt might succeed (such results are never stored).
        prompt_tokens (`int`): Prompt tokens of the answer's `usage` (0 when absent).
        completion_tokens (`int`): Completion tokens of the answer's `usage` (0 when absent).
    """

    content: str | None = None
    top_logprobs: dict[str, float] | None = None
    error: str | None = None
    final: bool = True
    prompt_tokens: int = 0
    completion_tokens: int = 0


def sanitize_url(url: str) -> str:
    """`url` without credentials or query string (safe to log or hash)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s'\",}]+"),
    re.compile(r"(?i)((?:api[-_]?key|authorization)['\"]?\s*[:=]\s*['\"]?)(?!bearer\s)[^\s'\",}]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
)


def scrub(text: str, secret: str | None = None) -> str:
    """`text` without `secret` and without anything shaped like a credential (a bearer token, an `api_key=` value,
    an OpenAI-style `sk-...` key)."""
    if secret and secret != NO_KEY:
        text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def parse_chat_response(data: Any) -> ChatResult:
    """Read the answer text and the first token's top log-probabilities from a chat-completions JSON body.

    Raises:
        ValueError: when the body does not have the chat-completions shape.
    """
    choice = _first_choice(data)
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ValueError("'choices[0]' has no 'message'")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ValueError("'message.content' is not a string")
    top = None
    logprobs = choice.get("logprobs")
    entries = logprobs.get("content") if isinstance(logprobs, dict) else None
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        first = entries[0]
        top = {}
        for entry in [first, *(first.get("top_logprobs") or [])]:
            if isinstance(entry, dict) and isinstance(entry.get("token"), str) and _finite(entry.get("logprob")):
                top[entry["token"]] = float(entry["logprob"])
    return ChatResult(content=content, top_logprobs=top)


def parse_completion_response(data: Any) -> ChatResult:
    """Read the text and the first token's top log-probabilities from a (text) completions JSON body, whose
    `logprobs` are `{"tokens": [...], "token_logprobs": [...], "top_logprobs": [{token: logprob}, ...]}`.

    Raises:
        ValueError: when the body does not have the completions shape.
    """
    choice = _first_choice(data)
    text = choice.get("text")
    if not isinstance(text, str):
        raise ValueError("'choices[0].text' is not a string")
    top = None
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict):
        top = {}
        tops, tokens, values = logprobs.get("top_logprobs"), logprobs.get("tokens"), logprobs.get("token_logprobs")
        if isinstance(tops, list) and tops and isinstance(tops[0], dict):
            top.update({t: float(v) for t, v in tops[0].items() if isinstance(t, str) and _finite(v)})
        if isinstance(tokens, list) and isinstance(values, list) and tokens and values:
            if isinstance(tokens[0], str) and _finite(values[0]):
                top.setdefault(tokens[0], float(values[0]))
        top = top or None
    return ChatResult(content=text, top_logprobs=top)


def read_answer(text: str, parse: Callable[[Any], ChatResult], secret: str | None = None) -> tuple[ChatResult, Any]:
    """The answer in a server's 200 body `text` (a live answer, or a line of a batch output file), read by `parse`
    ([`parse_chat_response`] or [`parse_completion_response`]), with `secret` scrubbed from its text; and the JSON.

    Raises:
        ValueError: (with a scrubbed message) when `text` is not such an answer (an echo of the request, an HTML
            page): never final, never trusted.
    """
    try:
        data = json.loads(text)
        result = parse(data)
    except ValueError as error:
        # Scrubbed before it is cut and quoted: a key cut in two or escaped by repr would no longer be found.
        text = scrub(text, secret)[:200]
        raise ValueError(scrub(f"the server's answer is not a completion ({error}): {text!r}", secret)) from None
    if result.content is not None:
        result.content = scrub(result.content, secret)
    result.prompt_tokens, result.completion_tokens = usage_of(data)
    return result, data


def usage_of(data: Any) -> tuple[int, int]:
    """`(prompt_tokens, completion_tokens)` of an answer's `usage` (zeros when absent)."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _first_choice(data: Any) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise ValueError("the answer has no 'choices'")
    choice = data["choices"][0]
    if not isinstance(choice, dict):
        raise ValueError("'choices[0]' is not an object")
    return choice


class _RateLimiter:
    """Spaces request starts by `1 / per_second` seconds, across threads."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        if start > now:
            time.sleep(start - now)


class _Secret(str):
    """A string that never shows itself in a repr (so `vars(judge)` or a traceback print no key)."""

    def __repr__(self) -> str:
        return "'***'"


class JudgeClient:
    """Send many requests to one OpenAI-compatible server with the `openai` client.

    Connection settings follow the `openai` client's conventions: `base_url` and `api_key` arguments, else the
    `OPENAI_BASE_URL` and `OPENAI_API_KEY` environment variables, or your own `openai.OpenAI`/`openai.AsyncOpenAI`
    client (`client=`; the judge then uses its URL, key, headers and HTTP settings, and gives it its own timeout and
    retries per request). Servers without a key (vLLM, llama.cpp, TGI, `transformers serve`) need none. A client of
    your own is best left to the judge: an `AsyncOpenAI` client runs on the judge's own event loop thread.

    Timeouts and queueing: a server that answers one request at a time (llama.cpp's server by default, any server at
    its batch limit) queues the others, and a client-side timeout counts that wait: with 32 requests in flight and a
    60 s timeout, a server that takes 3 s per request times out the last third of its queue, each of which is sent
    again and lengthens the queue. Here `timeout` is what the server may take *per request*: a request may wait
    `max_concurrency * timeout` seconds for its answer, the time a one-at-a-time server needs to serve every request
    this client can have in flight. A slow server is then never failed by this client's own concurrency; a hung one
    is still found (connecting has `timeout` seconds). Set `max_concurrency` to what the server runs in parallel
    (1 for llama.cpp's default server, 4-8 for a small vLLM) to see a hung request sooner.

    Args:
        base_url (`str`, *optional*):
            The API root, e.g. `"http://localhost:8000/v1"`; defaults to `$OPENAI_BASE_URL`, else OpenAI's API.
        api_key (`str`, *optional*):
            The API key; defaults to the variable named by `api_key_env`.
        api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`):
            Environment variable read for the key (when each run starts) if `api_key` is not given.
        client (`openai.OpenAI` or `openai.AsyncOpenAI`, *optional*):
            A client of your own, instead of `base_url`/`api_key`.
        max_concurrency (`int`, *optional*, defaults to `32`):
            Requests in flight at once.
        requests_per_second (`float`, *optional*):
            Most requests started per second (retries are paced by the backoff); unlimited when `None`.
        timeout (`float`, *optional*, defaults to `60.0`):
            Seconds the server may take on one request (see above), and to connect.
        max_retries (`int`, *optional*, defaults to `6`):
            Retries per request, by the `openai` client (429, 408, 409, 5xx, timeouts, connection errors).
        show_progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar over requests.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        client: Any = None,
        max_concurrency: int = 32,
        requests_per_second: float | None = None,
        timeout: float = 60.0,
        max_retries: int = 6,
        show_progress: bool = False,
    ):
        if max_concurrency < 1:
            raise ValueError(f"`max_concurrency` must be >= 1, got {max_concurrency}.")
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError(f"`requests_per_second` must be > 0 or None, got {requests_per_second}.")
        if max_retries < 0 or timeout <= 0:
            raise ValueError(f"`max_retries` must be >= 0 and `timeout` > 0, got {max_retries} and {timeout}.")
        if client is not None:
            import openai

            if not isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
                raise TypeError(f"`client` must be an openai.OpenAI or AsyncOpenAI, got {type(client).__name__}.")
            if base_url is not None or api_key is not None:
                raise ValueError("Pass either `client` or `base_url`/`api_key`: the client has its own.")
            base_url = str(client.base_url)
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_API).rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"`base_url` must be an http(s) URL such as http://localhost:8000/v1, got {base_url!r}.")
        self._api_key = None if api_key is None else _Secret(api_key)
        self.api_key_env = api_key_env
        self._user_client = client
        self.max_concurrency = max_concurrency
        self.requests_per_second = requests_per_second
        self.timeout = timeout
        self.max_retries = max_retries
        self.show_progress = show_progress
        self.stats = RequestStats()
        self._lock = threading.Lock()
        self._answered = False  # whether any request got an answer: until then a refusal means every one fails
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_pid: int | None = None
        self._resources_of_process: _Resources | None = None
        self._key()

    def _key(self) -> str:
        if self._user_client is not None:
            return self._user_client.api_key or NO_KEY
        key = self._api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        if not key and urlsplit(self.base_url).hostname == "api.openai.com":
            raise ValueError(
                f"The OpenAI API needs a key: set the environment variable {self.api_key_env or 'OPENAI_API_KEY'} "
                "(or pass `api_key=`)."
            )
        return key or NO_KEY

    def openai_client(self):
        """A synchronous `openai.OpenAI` client for this server (the one given as `client=`, else one built from
        `base_url` and the key), with this client's retries: for the Batch and Files APIs."""
        import openai

        if self._user_client is not None:
            if not isinstance(self._user_client, openai.OpenAI):
                raise TypeError("The Batch API needs a synchronous `openai.OpenAI` client; an AsyncOpenAI was given.")
            return self._user_client
        return openai.OpenAI(
            base_url=self.base_url, api_key=self._key(), max_retries=self.max_retries, timeout=self.timeout
        )

    def __repr__(self) -> str:
        return (
            f"JudgeClient(base_url={sanitize_url(self.base_url)!r}, max_concurrency={self.max_concurrency}, "
            f"requests_per_second={self.requests_per_second}, timeout={self.timeout}, max_retries={self.max_retries})"
        )

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_lock=None, _loop=None, _loop_pid=None, _resources_of_process=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    # ------------------------------------------------------------------------------------------------- running

    def map(
        self,
        jobs: Sequence[Callable[["_Session"], Any]],
        on_done: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """Run `jobs` (each `job(session)` sends its requests with `session.post`) on `max_concurrency` worker
        threads, the pool kept full until the last job; return their results in order.

        `on_done(index, result)` is called (from a worker thread) as each job finishes. A [`JudgeError`] in any job
        stops the run: jobs not started are dropped and the error is raised. So is Ctrl-C; requests in flight then
        finish in the background.
        """
        if not jobs:
            return []
        session = _Session(self)
        before = self.stats.as_dict()
        results: list[Any] = [None] * len(jobs)
        stop = threading.Event()
        errors: list[BaseException] = []
        # Bounded submission: at most a few times `max_concurrency` jobs are queued, so a run of a million requests
        # does not hold a million futures.
        window = threading.BoundedSemaphore(4 * self.max_concurrency)
        progress = tqdm(total=len(jobs), desc="Judge requests", unit="req", disable=not self.show_progress)

        def run(index: int):
            try:
                if stop.is_set():
                    return
                results[index] = jobs[index](session)
                if on_done is not None:
                    on_done(index, results[index])
                progress.update(1)
            except BaseException as error:
                with self._lock:
                    errors.append(error)
                stop.set()
            finally:
                window.release()

        # Workers beyond `max_concurrency` wait out retry delays (429 Retry-After, backoff) while the others keep
        # `max_concurrency` requests on the wire (the limit is on requests sent, see `_Session`). A client of the
        # user's cannot be limited that way: then there are `max_concurrency` workers.
        pool = self._resources().pool
        futures = []
        try:
            for index in range(len(jobs)):
                while not window.acquire(timeout=0.1):
                    if stop.is_set():
                        break
                if stop.is_set():
                    break
                futures.append(pool.submit(run, index))
            for future in futures:
                while not stop.is_set():
                    try:
                        future.result(timeout=0.1)
                        break
                    except concurrent.futures.TimeoutError:
                        continue
                if stop.is_set():
                    break
        except BaseException:
            stop.set()
            raise
        finally:
            for future in futures:
                future.cancel()
            progress.close()
            session.close()
        if errors:
            raise errors[0]
        done = {k: v - before[k] for k, v in self.stats.as_dict().items()}
        logger.info("Judge requests to %s: %s", sanitize_url(self.base_url), done)
        return results

    def _resources(self) -> "_Resources":
        """The worker threads and their `openai` clients, kept from run to run (warm connections), per process."""
        with self._lock:
            resources = self._resources_of_process
            if resources is None or resources.pid != os.getpid():  # threads and connections do not survive a fork
                # Workers beyond `max_concurrency` wait out retry delays (429 Retry-After, backoff) while the others
                # keep `max_concurrency` requests on the wire (the limit is on requests sent, see `_Resources`). A
                # client of the user's cannot be limited that way: then there are `max_concurrency` workers.
                workers = self.max_concurrency * (1 if self._user_client is not None else 4)
                resources = self._resources_of_process = _Resources(self.max_concurrency, workers)
            return resources

    def close(self) -> None:
        """Stop the worker threads and close their connections (the next run starts new ones)."""
        with self._lock:
            resources, self._resources_of_process = self._resources_of_process, None
        if resources is not None and resources.pid == os.getpid():
            resources.close()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The judge's own event loop, in a daemon thread: where a user's `AsyncOpenAI` client runs."""
        with self._lock:
            if self._loop is None or self._loop_pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="judge-openai-loop", daemon=True).start()
                self._loop, self._loop_pid = loop, os.getpid()
            return self._loop


def _limited_transport_class():
    httpx = _httpx()

    class LimitedTransport(httpx.BaseTransport):
        """An HTTP transport that holds a slot of `semaphore` while a request is sent and its answer read."""

        def __init__(self, inner, semaphore: threading.Semaphore):
            self.inner = inner
            self.semaphore = semaphore

        def handle_request(self, request):
            with self.semaphore:
                response = self.inner.handle_request(request)
                try:
                    response.read()
                except BaseException:
                    response.close()
                    raise
                return response

        def close(self) -> None:
            self.inner.close()

    return LimitedTransport


def _LimitedTransport(inner, semaphore):
    global _LIMITED_TRANSPORT
    if _LIMITED_TRANSPORT is None:
        _LIMITED_TRANSPORT = _limited_transport_class()
    return _LIMITED_TRANSPORT(inner, semaphore)


_LIMITED_TRANSPORT = None


class _Resources:
    """A judge client's worker threads, with one `openai` client (one keep-alive connection) per thread, so that no
    connection pool is shared (and locked) by all threads; at most `max_concurrency` of them send at once."""

    def __init__(self, max_concurrency: int, workers: int):
        self.pid = os.getpid()
        self.local = threading.local()
        self.pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="judge-http", initializer=setattr, initargs=(self.local, "is_worker", True)
        )
        self.lock = threading.Lock()
        self.clients: list = []
        self.ssl_context = None
        # At most `max_concurrency` requests on the wire; a request waiting to be retried holds no slot.
        self.on_the_wire = threading.Semaphore(max_concurrency)

    def client(self, base_url: str, key: str):
        """This thread's `openai` client for `key` (a new one when the key changed)."""
        cached = getattr(self.local, "client", None)
        if cached is not None and cached[1] == key:
            return cached[0]
        import openai

        httpx = _httpx()
        with self.lock:
            if self.ssl_context is None:  # loading the CA certificates takes ~0.1 s: once, not per thread
                self.ssl_context = httpx.create_ssl_context()
        transport = _LimitedTransport(httpx.HTTPTransport(verify=self.ssl_context), self.on_the_wire)
        http_client = httpx.Client(transport=transport, follow_redirects=True)
        # The judge's timeout and retries are given per request.
        client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, http_client=http_client)
        if cached is not None:
            cached[0].close()
        self.local.client = (client, _Secret(key))
        with self.lock:
            self.clients.append(client)
        return client

    def close(self) -> None:
        # Wait for the workers to exit (they finish the request in hand), unless one of them is closing its own pool.
        self.pool.shutdown(wait=not getattr(self.local, "is_worker", False), cancel_futures=True)
        with self.lock:
            for client in self.clients:
                client.close()
            self.clients.clear()


class _Session:
    """One run's request logic (see [`JudgeClient.map`])."""

    def __init__(self, owner: JudgeClient):
        self.owner = owner
        self.key = owner._key()
        self.in_flight = 0
        self.lock = threading.Lock()
        self.limiter = _RateLimiter(owner.requests_per_second) if owner.requests_per_second else None
        self.user_client = owner._user_client
        self.url = sanitize_url(owner.base_url)
        self.resources = owner._resources()

    def client(self):
        if self.user_client is not None:
            return self.user_client
        return self.resources.client(self.owner.base_url, self.key)

    def close(self) -> None:
        pass

    def scrub(self, text: str) -> str:
        return scrub(text, self.key)

    def post(self, path: str, body: dict[str, Any], parse: Callable[[Any], ChatResult]) -> ChatResult:
        """Send one request (with the `openai` client's retries); its result, or an error result. Raises
        [`JudgeError`] when the server refuses the request in a way every request will repeat."""
        import openai

        httpx = _httpx()

        owner = self.owner
        client = self.client()
        if self.limiter is not None:
            self.limiter.wait()
        with self.lock:
            self.in_flight += 1
        # See JudgeClient: the time behind our own queued requests does not count against this one.
        timeout = httpx.Timeout(owner.timeout * owner.max_concurrency, connect=owner.timeout)
        options = {"timeout": timeout, "max_retries": owner.max_retries}
        # The handlers only note what went wrong: an error raised from inside one would carry the `openai`
        # exception, and its unscrubbed message, as its context into tracebacks and logs.
        refused = failed = None
        try:
            if isinstance(client, openai.AsyncOpenAI):
                call = client.post(path, cast_to=httpx.Response, body=body, options=options)
                response = asyncio.run_coroutine_threadsafe(call, owner._event_loop()).result()
            else:
                response = client.post(path, cast_to=httpx.Response, body=body, options=options)
        except openai.APIStatusError as error:
            self._count_attempts(error.response.request)
            refused = (error.status_code, error.response.text, error.response.headers.get("retry-after"))
        except (openai.APITimeoutError, openai.APIConnectionError) as error:
            self._count_attempts(error.request)
            timed_out = isinstance(error, openai.APITimeoutError)
            failed = f"timed out after {timeout.read:g} s" if timed_out else self.scrub(f"connection error ({error})")
        finally:
            with self.lock:
                self.in_flight -= 1
        if refused is not None:
            return self._refused(*refused)
        if failed is not None:
            return self._failed(f"gave up after {owner.max_retries + 1} attempts, last: {failed}")
        self._count_attempts(response.request)
        try:
            result, data = read_answer(response.text, parse, self.key)
        except ValueError as error:
            return self._failed(str(error))
        self._count_usage(data)
        owner._answered = True
        return result

    def _count_attempts(self, request) -> None:
        retries = int(request.headers.get("x-stainless-retry-count", 0) or 0) if request is not None else 0
        self.owner._count(requests=1 + retries, retries=retries)

    def _failed(self, reason: str) -> ChatResult:
        """A request that got no answer: fatal before any request was answered (the server is not working), else
        this item's failure, asked again on a rerun."""
        self.owner._count(failures=1)
        if not self.owner._answered:
            raise JudgeError(f"The judge server {self.url} never answered: {reason}.")
        return ChatResult(error=reason, final=False)

    def _refused(self, status: int, text: str, retry_after: str | None) -> ChatResult:
        message = self.scrub(_server_message(text))
        if status == 400 and _ITEM_TOO_LONG.search(message):
            # This item's prompt is too long for the model: its failure only (asked again on a rerun).
            self.owner._count(failures=1)
            return ChatResult(error=f"HTTP {status}: {message}", final=False)
        if status in REFUSED:
            self.owner._count(failures=1)
            if status in (400, 422) and self.owner._answered:
                # Other requests were accepted: this one is wrong on its own (its content), not the settings.
                return ChatResult(error=f"HTTP {status}: {message}", final=False)
            hint = {
                401: "Check the API key.",
                403: "Check the API key and its permissions.",
                404: "Check `base_url` (it usually ends with /v1) and the model name.",
            }.get(status, "Check the model name and the judge's settings (e.g. `top_logprobs`, `extra_body`).")
            # An authentication failure's message is about the key (and may quote it, or another one): not shown.
            shown = "" if status in (401, 403) else f": {message}"
            raise JudgeError(
                f"The judge server {self.url} refused the request with HTTP {status} ({REFUSED[status]}){shown}. "
                + hint
            )
        retry = f" (Retry-After {retry_after})" if retry_after else ""
        return self._failed(f"gave up after {self.owner.max_retries + 1} attempts, last: HTTP {status}{retry}")

    def _count_usage(self, data: dict) -> None:
        prompt_tokens, completion_tokens = usage_of(data)
        self.owner._count(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def _httpx():
    """The HTTP library of the installed `openai` client (`httpx`, or `httpx2` in recent versions)."""
    from openai import _base_client

    return getattr(_base_client, "httpx2", None) or _base_client.httpx


def _server_message(text: str) -> str:
    """The error message in a server's error body (`{"error": {"message": ...}}` and variants), or the start of the
    body."""
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    for candidate in (data.get("error") if isinstance(data, dict) else None, data):
        if isinstance(candidate, dict):
            for key in ("message", "detail", "error"):
                if isinstance(candidate.get(key), str):
                    return candidate[key][:500]
                if key == "detail" and candidate.get(key) is not None:
                    return json.dumps(candidate[key])[:500]
        if isinstance(candidate, str):
            return candidate[:500]
    return text[:300]
