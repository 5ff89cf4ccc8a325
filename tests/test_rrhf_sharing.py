"""Prompt sharing in RRHF (one packed row per prompt) and the frozen-head log-probs: both must equal the plain path."""

import warnings

import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

import trl_won.logprobs as logprobs_module
from tests.helpers import cpu_training_kwargs
from trl_won.logprobs import add_logprob_forward, chunked_token_logprobs, packed_attention_mask
from trl_won.rrhf import RRHFConfig, RRHFTrainer
from trl_won.rrhf.data import DataCollatorForRRHF
from trl_won.rrhf.loss import rrhf_loss
from trl_won.rrhf.sharing import check_prompt_sharing, pack_shared_prompts
from trl_won.tiny import toy_ranking_dataset


# Three prompts of different lengths with 3, 2 and 4 completions (ragged k, ragged completion lengths).
ROWS = [
    {"prompt_ids": [5, 6, 7, 8, 9, 3, 4], "completion_ids": [[10, 11, 2], [12, 2], [13, 14, 15, 16, 2]]},
    {"prompt_ids": [20, 21], "completion_ids": [[22, 2], [23, 24, 25, 26, 27, 2]]},
    {"prompt_ids": [30, 31, 32, 33], "completion_ids": [[34, 2], [35, 36, 2], [37, 2], [38, 39, 40, 41, 42, 43, 2]]},
]
REWARDS = [[1.0, 0.0, 2.0], [0.0, 1.0], [0.5, -1.0, 3.0, 0.0]]


def batch():
    return DataCollatorForRRHF(pad_token_id=0)(
        [{**row, "rewards": rewards} for row, rewards in zip(ROWS, REWARDS, strict=True)]
    )


def test_packing_layout_by_hand():
    packed = pack_shared_prompts(**{k: v for k, v in batch().items() if k not in ("num_completions", "rewards")})
    assert packed.input_ids.shape == (3, 4 + 2 + 3 + 2 + 7)  # the longest group: prompt 4 and completions 2, 3, 2, 7
    assert packed.input_ids[1].tolist() == [20, 21, 22, 2, 23, 24, 25, 26, 27, 2] + [0] * 8
    assert packed.packed_segments[1].tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 2, 2] + [-1] * 8
    assert packed.position_ids[1, :10].tolist() == [0, 1, 2, 3, 2, 3, 4, 5, 6, 7]
    assert packed.logprob_mask[1].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1] + [0] * 8
    assert packed.position_ids[0, :17].tolist() == list(range(10)) + [7, 8] + [7, 8, 9, 10, 11]
    # Unpacking puts each packed value back where its token sits in the one-row-per-completion batch.
    values = torch.arange(packed.input_ids.numel(), dtype=torch.float32).view_as(packed.input_ids)
    unpacked = packed.unpack(values)
    completion_mask = batch()["completion_mask"]
    # Row 3 of the batch is prompt 1 with its first completion: packed row 1, columns 0-3 (flat 18-21).
    assert unpacked[3, :4].tolist() == [18.0, 19.0, 20.0, 21.0]
    assert unpacked[4, :8].tolist() == [0.0, 0.0, 22.0, 23.0, 24.0, 25.0, 26.0, 27.0]  # its prompt copy is not packed
    assert (unpacked[completion_mask == 1] > 0).all()


def test_packing_refuses_what_it_cannot_share():
    inputs = {k: v for k, v in batch().items() if k not in ("num_completions", "rewards")}
    left_padded = {**inputs, "attention_mask": inputs["attention_mask"].flip(1)}
    assert pack_shared_prompts(**left_padded) is None
    no_prompt = {**inputs, "completion_mask": inputs["attention_mask"].clone()}
    no_prompt["completion_mask"][:, 0] = 0
    no_prompt["input_ids"] = inputs["input_ids"].clone()
    no_prompt["input_ids"][1, 0] = 99  # rows 0 and 1 share no first token any more
    assert pack_shared_prompts(**no_prompt) is None


def test_packed_attention_mask_by_hand():
    segments = torch.tensor([[0, 0, 1, 1, 2, -1]])
    positions = torch.tensor([[0, 1, 2, 3, 2, 0]])
    config = transformers.LlamaConfig()
    visible = packed_attention_mask(config, segments, positions, torch.float32)[0, 0] == 0
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 0, 0, 1, 0],  # completion 2 sees the prompt and itself, not completion 1
            [0, 0, 0, 0, 0, 1],  # padding sees itself only
        ],
        dtype=torch.bool,
    )
    assert torch.equal(visible, expected)
    config = transformers.MistralConfig(sliding_window=2)
    windowed = packed_attention_mask(config, segments, positions, torch.float32)[0, 0] == 0
    assert torch.equal(windowed, expected & (positions.T - positions < 2) | torch.eye(6, dtype=torch.bool))
    config = transformers.Qwen2Config(use_sliding_window=True, sliding_window=2, max_window_layers=1)
    masks = packed_attention_mask(config, segments, positions, torch.float32)
    assert torch.equal(masks["full_attention"][0, 0] == 0, expected)
    assert torch.equal(masks["sliding_attention"][0, 0] == 0, windowed)


SMALL = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
ARCHITECTURES = {
    "llama": lambda: transformers.LlamaConfig(intermediate_size=64, num_key_value_heads=2, **SMALL),
    # Sliding windows shorter than the sequences: mixed full/sliding layers (a mask per layer type) and all-sliding.
    "qwen2-sliding": lambda: transformers.Qwen2Config(
        intermediate_size=64,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=1,
        **SMALL,
    ),
    "mistral-sliding": lambda: transformers.MistralConfig(
        intermediate_size=64, num_key_value_heads=2, sliding_window=4, **SMALL
    ),
    "gemma2-eager-softcap": lambda: transformers.Gemma2Config(
        intermediate_size=64, num_key_value_heads=2, head_dim=8, sliding_window=4, **SMALL
    ),
    "gpt2-absolute-positions": lambda: transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4),
    "opt": lambda: transformers.OPTConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32
    ),
}


def loss_and_grads(model, inputs, shared):
    model.zero_grad()
    if shared:
        packed = pack_shared_prompts(
            inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"], inputs["group_ids"]
        )
        token_logps = packed.unpack(model(**packed.model_inputs()).token_logps)
    else:
        token_logps = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            logprob_mask=inputs["completion_mask"],
        ).token_logps
    out = rrhf_loss(token_logps, inputs["completion_mask"], inputs["rewards"], inputs["group_ids"], 3)
    out.loss.mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), token_logps.detach(), grads


def assert_same(model, inputs):
    loss, token_logps, grads = loss_and_grads(model, inputs, shared=False)
    shared_loss, shared_token_logps, shared_grads = loss_and_grads(model, inputs, shared=True)
    torch.testing.assert_close(shared_token_logps, token_logps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared_loss, loss, rtol=1e-5, atol=1e-5)
    assert shared_grads.keys() == grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_shared_prompt_gives_the_same_loss_and_gradients(architecture):
    config = ARCHITECTURES[architecture]()
    implementation = "eager" if architecture.startswith("gemma2") else "sdpa"
    model = AutoModelForCausalLM.from_config(config, attn_implementation=implementation).eval()  # no dropout
    add_logprob_forward(model, chunk_size=5)
    assert check_prompt_sharing(model) is None
    assert_same(model, batch())


def test_shared_prompt_with_lora_and_frozen_head_gives_the_same_gradients():
    model = AutoModelForCausalLM.from_config(ARCHITECTURES["llama"]()).eval()
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    add_logprob_forward(model, chunk_size=5)
    assert_same(model, batch())


# Trainer level: the same batch through a trainer with `share_prompt` on and off.


def trainer_for(tiny_paths, tmp_path, share_prompt, **kwargs):
    quantization_config = kwargs.pop("quantization_config", None)
    peft_config = kwargs.pop("peft_config", None)
    args = RRHFConfig(
        **cpu_training_kwargs(tmp_path / "out", share_prompt=share_prompt, logprob_chunk_size=7, **kwargs)
    )
    return RRHFTrainer(
        tiny_paths.policy,
        args=args,
        train_dataset=toy_ranking_dataset(),
        quantization_config=quantization_config,
        peft_config=peft_config,
    )


def trainer_loss_and_grads(trainer):
    inputs = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(5)]))
    rows = []
    hook = trainer.model.get_input_embeddings().register_forward_hook(lambda m, a, out: rows.append(out.shape[0]))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    hook.remove()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, rows, inputs


LORA = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False)


@pytest.mark.parametrize(
    "setting",
    [
        {},
        {"gradient_checkpointing": True},
        {"peft_config": LORA},
        {"peft_config": LORA, "gradient_checkpointing": True},
        {"peft_config": LORA, "quantization_config": BitsAndBytesConfig(load_in_4bit=True)},
        {"peft_config": LORA, "quantization_config": BitsAndBytesConfig(load_in_8bit=True)},
    ],
    ids=["full", "checkpointing", "lora", "lora-checkpointing", "qlora-4bit", "qlora-8bit"],
)
def test_trainer_shared_prompt_equals_unshared(tiny_paths, tmp_path, setting):
    loss, grads, rows, inputs = trainer_loss_and_grads(trainer_for(tiny_paths, tmp_path, False, **dict(setting)))
    shared_trainer = trainer_for(tiny_paths, tmp_path, True, **dict(setting))
    assert shared_trainer._share_prompt
    shared_loss, shared_grads, shared_rows, _ = trainer_loss_and_grads(shared_trainer)
    # One row per prompt instead of one per completion.
    # (earlier calls, if any, are the one-row checks of the first call)
    assert rows[-1] == inputs["group_ids"].numel() and shared_rows[-1] == inputs["num_completions"].numel()
    torch.testing.assert_close(shared_loss, loss, rtol=1e-5, atol=1e-5)
    assert shared_grads.keys() == grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)


def test_fallback_warns_and_names_the_architecture(tmp_path, tokenizer):
    # Bloom builds ALiBi biases from the 2D padding mask: it cannot take a packed row.
    config = transformers.BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4)
    model = AutoModelForCausalLM.from_config(config)
    args = RRHFConfig(**cpu_training_kwargs(tmp_path / "out", max_steps=1))
    with pytest.warns(UserWarning, match="Prompt sharing is off: BloomForCausalLM"):
        trainer = RRHFTrainer(model, args=args, train_dataset=toy_ranking_dataset(), processing_class=tokenizer)
    assert not trainer._share_prompt
    trainer.train()  # and it still trains, one sequence per completion
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))


def test_unsupported_attention_implementation_falls_back(policy):
    policy.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in check_prompt_sharing(policy)


def test_switch_off_does_not_check_or_warn(tiny_paths, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        trainer = trainer_for(tiny_paths, tmp_path, False)
    assert not trainer._share_prompt


# The frozen-head path: d logp / d hidden computed in the forward, no recompute of the head in the backward.


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_frozen_head_gradients_equal_the_recompute_path(softcap, monkeypatch):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=True).requires_grad_(False)
    hidden = torch.randn(11, 8, requires_grad=True)
    labels = torch.randint(0, 50, (11,))
    weights = torch.randn(11)
    calls = []
    original = logprobs_module._FrozenHeadLogProbs.apply
    monkeypatch.setattr(logprobs_module._FrozenHeadLogProbs, "apply", lambda *a: calls.append(1) or original(*a))
    frozen = chunked_token_logprobs(hidden, head, labels, chunk_size=4, softcap=softcap)
    (frozen * weights).sum().backward()
    frozen_grad, hidden.grad = hidden.grad.clone(), None
    assert len(calls) == 3  # the frozen path ran, once per chunk
    monkeypatch.setattr(logprobs_module, "head_gets_gradient", lambda head: True)  # force the recompute path
    recomputed = chunked_token_logprobs(hidden, head, labels, chunk_size=4, softcap=softcap)
    (recomputed * weights).sum().backward()
    assert len(calls) == 3
    torch.testing.assert_close(frozen, recomputed)
    torch.testing.assert_close(frozen_grad, hidden.grad, rtol=1e-6, atol=1e-6)
    # And both equal the full log-softmax's autograd.
    hidden.grad = None
    logits = head(hidden)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    (torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1) * weights).sum().backward()
    torch.testing.assert_close(frozen_grad, hidden.grad, rtol=1e-5, atol=1e-6)


def test_frozen_head_path_is_not_used_when_a_tied_embedding_trains(monkeypatch):
    config = transformers.LlamaConfig(intermediate_size=64, num_key_value_heads=2, tie_word_embeddings=True, **SMALL)
    model = AutoModelForCausalLM.from_config(config).eval()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    add_logprob_forward(model, chunk_size=5)
    calls = []
    original = logprobs_module._FrozenHeadLogProbs.apply
    monkeypatch.setattr(logprobs_module._FrozenHeadLogProbs, "apply", lambda *a: calls.append(1) or original(*a))
    _, _, grads = loss_and_grads(model, batch(), shared=True)
    assert not calls and "model.embed_tokens.weight" in grads
    model.get_input_embeddings().weight.requires_grad_(False)  # now the tied head is frozen too
    _, _, frozen_grads = loss_and_grads(model, batch(), shared=True)
    assert calls
    monkeypatch.setattr(logprobs_module, "head_gets_gradient", lambda head: True)
    _, _, recompute_grads = loss_and_grads(model, batch(), shared=True)
    assert frozen_grads.keys() == recompute_grads.keys()
    for name, grad in recompute_grads.items():
        torch.testing.assert_close(frozen_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_a_batch_that_cannot_be_packed_runs_unpacked_with_a_warning(tiny_paths, tmp_path):
    trainer = trainer_for(tiny_paths, tmp_path, True)
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    expected = trainer.compute_loss(trainer.model, inputs)
    # A custom collator that pads on the left: the rows' prompts no longer start at column 0.
    lengths = inputs["attention_mask"].sum(dim=1)
    left = {key: value.clone() for key, value in inputs.items()}
    for key in ("input_ids", "attention_mask", "completion_mask"):
        for row, length in enumerate(lengths.tolist()):
            left[key][row] = torch.roll(inputs[key][row], inputs[key].shape[1] - length)
    with pytest.warns(UserWarning, match="could not be packed"):
        loss = trainer.compute_loss(trainer.model, left)
    assert trainer._share_prompt  # only that batch ran unpacked
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


# When packing pays off: fewer tokens through the linear layers against longer rows in a dense masked attention.


def estimated_cost(hidden, intermediate, rows, length, weight):
    per_layer_per_token = 4 * hidden**2 + 3 * hidden * intermediate
    return rows * length * per_layer_per_token + rows * length**2 * 2 * hidden * weight


@pytest.mark.parametrize(
    "shape, expected",
    [
        # benchmarks/rrhf_step.py's default shape: P=64, R=128, k=8, 4 prompts: 32 rows of 192 vs 4 rows of 1088
        ((256, 682, (32, 192), (4, 1088)), False),
        # its backbone shape: P=512, R=64, k=8, 1 prompt: 8 rows of 576 vs 1 row of 1024
        ((512, 1365, (8, 576), (1, 1024)), True),
    ],
)
def test_packing_pays_off_follows_the_cost_model(shape, expected):
    from trl_won.rrhf.sharing import ATTENTION_PAIR_WEIGHT, packing_pays_off

    hidden, intermediate, unpacked, packed = shape
    config = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=intermediate)
    costs = [estimated_cost(hidden, intermediate, *s, ATTENTION_PAIR_WEIGHT) for s in (packed, unpacked)]
    assert (costs[0] < costs[1]) == expected
    assert packing_pays_off(config, unpacked, packed) == expected


def test_long_completions_after_short_prompts_run_unpacked_with_the_same_loss(tiny_paths, tmp_path):
    from trl_won.rrhf.sharing import packing_pays_off

    trainer = trainer_for(tiny_paths, tmp_path, True)
    long_rows = [
        {"prompt_ids": [5, 6], "completion_ids": [list(range(10, 10 + 120)) + [2] for _ in range(4)]},
        {"prompt_ids": [7, 8], "completion_ids": [list(range(20, 20 + 120)) + [2] for _ in range(3)]},
    ]
    collate = trainer.data_collator
    inputs = collate([{**row, "rewards": [float(i) for i in range(len(row["completion_ids"]))]} for row in long_rows])
    packed = pack_shared_prompts(
        inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"], inputs["group_ids"]
    )
    assert not packing_pays_off(trainer.model.config, tuple(inputs["input_ids"].shape), tuple(packed.input_ids.shape))
    rows = []
    hook = trainer.model.get_input_embeddings().register_forward_hook(lambda m, a, out: rows.append(out.shape[0]))
    shared_loss = trainer.compute_loss(trainer.model, inputs)
    hook.remove()
    assert rows[-1] == inputs["input_ids"].shape[0]  # one row per completion: cheaper here
    assert trainer._share_prompt  # the switch stays on for the batches where packing pays off
    unshared = trainer_for(tiny_paths, tmp_path, False)
    torch.testing.assert_close(shared_loss, unshared.compute_loss(unshared.model, inputs), rtol=1e-5, atol=1e-5)
