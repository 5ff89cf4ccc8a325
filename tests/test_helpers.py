"""The package-wide helpers (trl_won.identity, trl_won.utils, models.with_device_map) against the copies they replace.

Every stored key must keep its bytes: each old formula is written out here, independently of the package, and compared
with the helper on inputs that exercise what could differ (non-ASCII text, unsorted keys, nested chat messages, values
that JSON cannot write, tuples).
"""

import asyncio
import functools
import hashlib
import json
import os
import random
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification

from trl_won.identity import json_sha256, weights_digest
from trl_won.models import with_device_map
from trl_won.rewards import RewardModelScorer, call_reward_func, reward_func_name
from trl_won.rlaif.base import FINGERPRINT_VERSION, fingerprint_of
from trl_won.rlaif.store import content_key
from trl_won.rrhf.scoring import _fingerprint as rrhf_rewards_key
from trl_won.utils import atomic_write_text, derived_seed, run_coroutine


PROMPTS = [
    "Résumé: naïve café ☕ — 日本語",
    [{"role": "user", "content": "Grüße"}, {"content": "x", "role": "assistant", "z": [1, 2.5, None]}],
    "plain",
    [{"role": "system", "content": "ü"}, {"role": "user", "content": 'quote " and \\ backslash'}],
]


def _old_fingerprint_of(fields):
    payload = json.dumps({"version": FINGERPRINT_VERSION, **fields}, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _old_content_key(*items):
    payload = json.dumps(items, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _old_prompts_fingerprint(prompts):
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _old_west_of_n_seed(seed, index):  # west_of_n's prompt_seed (vLLM) and chunk_seed (generator) before
    return (seed * 1_000_003 + index) % (2**63 - 1)


def _old_prompt_rng(seed, index):  # west_of_n's random source of one prompt before
    return random.Random(seed * 1_000_003 + index)


def _old_rrhf_key(dataset, identities, reward_weights):
    digest = hashlib.sha256()
    digest.update(json.dumps(identities).encode())
    digest.update(json.dumps(list(reward_weights) if reward_weights is not None else None).encode())
    for example in dataset.select_columns(["prompt", "completions"]):
        digest.update(json.dumps(example, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def test_judge_fingerprints_keep_their_bytes():
    samples = [
        {"model": "gpt-4o", "template": "helpfulness", "temperature": 0.0, "b": 1, "a": 2},
        {"model": "Qwen/Qwen2.5-0.5B", "prompt": PROMPTS[0], "weights": "0123abcd", "path": torch.float16},
        {"nested": {"z": 1, "a": [PROMPTS[1]]}, "none": None, "tuple": (1, "é")},
    ]
    for fields in samples:
        assert fingerprint_of(fields) == _old_fingerprint_of(fields)
    assert fingerprint_of(samples[0]) != fingerprint_of({**samples[0], "temperature": 0.5})


def test_label_content_keys_keep_their_bytes():
    for prompt in PROMPTS:
        chat_a, chat_b = [{"role": "assistant", "content": "ja ü"}], [{"content": "n", "role": "x"}]
        for a, b in [("Réponse A", "B"), (chat_a, chat_b)]:
            assert content_key(prompt, a, b) == _old_content_key(prompt, a, b)
            assert content_key(prompt, a) == _old_content_key(prompt, a)
    assert content_key("p", "a", "b") != content_key("p", "b", "a")


def test_west_of_n_prompts_fingerprint_is_json_sha256_with_line_ends():
    for prompts in [PROMPTS, PROMPTS[::-1], [], ["a"], ["a\n", ""]]:
        expected = _old_prompts_fingerprint(prompts)
        assert json_sha256(*prompts, terminator="\n") == expected
    # the line end keeps ["ab"] and ["a", "b"] ... apart from the compact concatenation
    assert json_sha256("a", "b", terminator="\n") != json_sha256("a", "b")


def test_rrhf_rewards_cache_key_keeps_its_bytes():
    def length(prompts, completions):
        return [float(len(c)) for c in completions]

    dataset = Dataset.from_list(
        [
            {"prompt": PROMPTS[0], "completions": ["été", "winter"], "extra": 1},
            {"prompt": "two", "completions": ["a", "b", "ç"], "extra": 2},
        ]
    )
    conversational = Dataset.from_list(
        [{"prompt": PROMPTS[1], "completions": [[{"role": "assistant", "content": "ü"}]] * 2}]
    )
    from trl_won.rewards import reward_func_identity

    identities = [reward_func_identity(length)]
    for data in (dataset, conversational):
        for weights in (None, [0.5]):
            assert rrhf_rewards_key(data, [length], weights) == _old_rrhf_key(data, identities, weights)
    assert rrhf_rewards_key(dataset, [length], None) != rrhf_rewards_key(dataset, [length], [2.0])


def test_weights_digest_is_one_function_and_unchanged(reward_model):
    from trl_won import models

    assert models.weights_digest is weights_digest
    digest = hashlib.sha256()
    for name, tensor in reward_model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 64)
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(flat[::step][:64].float().numpy().tobytes())
    assert weights_digest(reward_model) == digest.hexdigest()[:16]
    with torch.no_grad():
        next(reward_model.parameters()).add_(1.0)
    assert weights_digest(reward_model) != digest.hexdigest()[:16]


SEEDS = [0, 1, 42, 12345, 2**31 - 1, 2**40 + 7, 2**62, 2**63 - 2, -1, -42]
INDICES = [0, 1, 2, 999, 1_000_003, 2**20]


def test_derived_seed_reproduces_west_of_n_seeds():
    for seed in SEEDS:
        for index in INDICES:
            assert derived_seed(seed, index) == _old_west_of_n_seed(seed, index)
            assert 0 <= derived_seed(seed, index) < 2**63 - 1
            # West-of-N's collator (written out as in west_of_n/collator.py): process index and batch count
            for process_index in (0, 1, 7):
                collator = (seed * 1_000_003 + process_index * 1_000_000_007 + index) % (2**63 - 1)
                assert derived_seed(seed, index, process_index) == collator
    # West-of-N's per-prompt random source: equal wherever the unreduced value is already below 2**63 - 1
    for seed in SEEDS:
        for index in INDICES:
            if 0 <= seed * 1_000_003 + index < 2**63 - 1:
                expected = _old_prompt_rng(seed, index)
                ours = random.Random(derived_seed(seed, index))
                assert [expected.random() for _ in range(3)] == [ours.random() for _ in range(3)]
    assert len({derived_seed(42, i, p) for i in range(100) for p in range(8)}) == 800


def test_atomic_write_text_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    atomic_write_text(path, "first ü\n")
    assert path.read_text(encoding="utf-8") == "first ü\n"
    atomic_write_text(str(path), "second")
    assert path.read_text(encoding="utf-8") == "second"
    assert os.listdir(tmp_path) == ["manifest.json"]

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "third")
    assert path.read_text(encoding="utf-8") == "second"
    assert os.listdir(tmp_path) == ["manifest.json"]  # the temporary file is removed


def _state(device: str, distributed_type: str = "NO", local_process_index: int = 0):
    return SimpleNamespace(
        device=torch.device(device), distributed_type=distributed_type, local_process_index=local_process_index
    )


def test_with_device_map_one_whole_copy_per_process():
    # a model this process only runs: this process's accelerator, never split; nothing on CPU; the caller's choice kept
    assert with_device_map({"dtype": "auto"}, state=_state("cpu")) == {"dtype": "auto"}
    assert with_device_map(None, state=_state("cpu", "MULTI_CPU")) == {}
    assert with_device_map({"dtype": "auto"}, state=_state("cuda:1", "MULTI_GPU", 1)) == {
        "dtype": "auto",
        "device_map": {"": torch.device("cuda:1")},
    }
    assert with_device_map(None, state=_state("cuda:0")) == {"device_map": {"": torch.device("cuda:0")}}
    assert with_device_map({"device_map": "auto"}, state=_state("cuda:0")) == {"device_map": "auto"}
    # a trained model: placed by the trainer under DDP/DeepSpeed (overriding), a quantized one on its own GPU
    kwargs = {"device_map": "auto", "dtype": "bfloat16"}
    assert with_device_map(kwargs, training=True, state=_state("cuda:2", "MULTI_GPU", 2)) == {
        "device_map": None,
        "dtype": "bfloat16",
    }
    assert with_device_map(kwargs, training=True, quantized=True, state=_state("cuda:2", "MULTI_GPU", 2)) == {
        "device_map": {"": 2},
        "dtype": "bfloat16",
    }
    assert with_device_map(None, training=True, quantized=True, state=_state("cuda:0", "DEEPSPEED")) == {
        "device_map": None
    }
    assert with_device_map(kwargs, training=True, state=_state("cuda:0")) == kwargs
    assert kwargs == {"device_map": "auto", "dtype": "bfloat16"}  # not modified


def test_with_device_map_default_state_is_this_process():
    # without accelerate launch on this machine: CPU, nothing set
    expected = {} if not torch.cuda.is_available() else {"device_map": {"": torch.device("cuda", 0)}}
    assert with_device_map() == expected


def test_async_reward_function_inside_a_running_event_loop():
    async def scored(prompts, completions):
        await asyncio.sleep(0)
        return [float(len(c)) for c in completions]

    async def caller():  # synchronous code (a trainer step) called from a running loop, as in a notebook
        return call_reward_func(scored, ["a", "b"], ["xyz", "z"]), run_coroutine(asyncio.sleep(0, result="done"))

    assert asyncio.run(caller()) == ([3.0, 1.0], "done")
    assert call_reward_func(scored, ["a"], ["xy"]) == [2.0]  # and without one

    async def failing():
        raise KeyError("inside")

    async def caller_failing():
        return run_coroutine(failing())

    with pytest.raises(KeyError, match="inside"):
        asyncio.run(caller_failing())


class _Scorer:
    def __call__(self, prompts, completions):
        return [0.0] * len(completions)


def _length(prompts, completions, scale=1.0):
    return [scale * len(c) for c in completions]


def test_reward_func_names_are_the_names_grpo_logs(tiny_paths, tokenizer, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    scorer = RewardModelScorer(AutoModelForSequenceClassification.from_pretrained(tiny_paths.reward_model), tokenizer)
    funcs = [_length, functools.partial(_length, scale=2.0), _Scorer(), scorer]
    assert [reward_func_name(f) for f in funcs] == ["_length", "_length", "_Scorer", scorer.name]
    args = GRPOConfig(
        output_dir=str(tmp_path / "unused"),
        per_device_train_batch_size=2,
        num_generations=2,
        report_to=[],
        use_cpu=True,
    )
    dataset = Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}])
    trainer = GRPOTrainer(
        tiny_paths.policy,
        reward_funcs=[_length, functools.partial(_length, scale=2.0), _Scorer(), scorer.model],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        reward_processing_classes=[None, None, None, tokenizer],
    )
    assert trainer.reward_func_names == [reward_func_name(f) for f in funcs]
