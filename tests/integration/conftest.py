"""Real OpenAI-compatible servers started on 127.0.0.1 for the served-judge integration tests, and stopped after them.

- llama.cpp's server (`llama_cpp.server`, from the wheel in `../shared/llama_cpp/`) serving a tiny Llama converted to
  GGUF with llama.cpp's own converter (`../shared/llama_cpp/convert/`);
- `transformers serve` (the `transformers[serving]` extra) serving the same tiny model from its folder.

The tiny Llama has the real Qwen2 tokenizer (`../shared/tokenizers/qwen2`) and its chat template, and weights built so
that "1" and "2" are always among its top next tokens (so that both answers' log-probabilities come back in a top-20
list and served and local judges can be compared on every pair). Everything is built in seconds, offline.

The tests skip, with the reason, when `../shared`, `llama_cpp` or the serving extras are absent; `.ci/run` installs
them and sets `TRL_WON_REQUIRE_INTEGRATION=1`, which turns those skips into failures.
"""

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch


ROOT = Path(__file__).resolve().parents[2]
# `../shared` next to the repository (CI), or `$TRL_WON_SHARED`.
SHARED = Path(os.environ.get("TRL_WON_SHARED") or ROOT.parent / "shared")
QWEN2 = SHARED / "tokenizers" / "qwen2"
CONVERTER = SHARED / "llama_cpp" / "convert" / "convert_hf_to_gguf.py"


def require(condition: bool, reason: str) -> None:
    """Skip the test when `condition` is false, or fail it when integration tests are required (CI)."""
    if condition:
        return
    if os.environ.get("TRL_WON_REQUIRE_INTEGRATION") == "1":
        pytest.fail(f"integration test prerequisite missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(process: subprocess.Popen, url: str, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                answer.read()
            return
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"the server did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A saved tiny Llama with the Qwen2 tokenizer, whose answers "1" and "2" always rank near the top."""
    require(QWEN2.is_dir(), f"the Qwen2 tokenizer is not at {QWEN2} (../shared is absent)")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(QWEN2)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    generator = torch.Generator().manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.fill_(1.0)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        # Residual dimension 0 holds a constant (every embedding has it, no layer writes to it), and the rows of "1"
        # and "2" in the LM head read it: both answers get a large logit after any prompt, and their difference
        # still depends on the prompt through the other dimensions.
        model.model.embed_tokens.weight[:, 0] = 5.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        for answer in ("1", "2"):
            (token,) = tokenizer.encode(answer, add_special_tokens=False)
            model.lm_head.weight[token, 0] = 30.0
    path = tmp_path_factory.mktemp("tiny-llama-qwen2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def llama_cpp_server(tiny_llama, tmp_path_factory):
    """`(base_url, model_dir)` of llama.cpp's server serving the tiny Llama (F32 weights and key/value cache)."""
    require(CONVERTER.is_file(), f"llama.cpp's converter is not at {CONVERTER} (../shared is absent)")
    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed (see .ci/run)")
    require(importlib.util.find_spec("sentencepiece") is not None, "sentencepiece (for the converter) is missing")
    work = tmp_path_factory.mktemp("gguf")
    gguf = work / "model.gguf"
    command = [sys.executable, str(CONVERTER), str(tiny_llama), "--outtype", "f32", "--outfile", str(gguf)]
    converted = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert converted.returncode == 0, converted.stderr[-3000:]
    port, log = free_port(), work / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", "2048", "--type_k", "0", "--type_v", "0"]
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/v1/models", log)
        yield f"http://127.0.0.1:{port}/v1", tiny_llama
    finally:
        stop(process)


@pytest.fixture(scope="session")
def transformers_server(tiny_llama, tmp_path_factory):
    """`(base_url, model_dir)` of `transformers serve` serving the tiny Llama from its folder."""
    missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
    require(not missing, f"the transformers[serving] extra is not installed (missing {missing}; see .ci/run)")
    executable = Path(sys.executable).parent / "transformers"
    require(executable.is_file(), f"the `transformers` command is not at {executable}")
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "server.log"
    command = [str(executable), "serve", "--host", "127.0.0.1", "--port", str(port), str(tiny_llama)]
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/v1/models", log)
        yield f"http://127.0.0.1:{port}/v1", tiny_llama
    finally:
        stop(process)
