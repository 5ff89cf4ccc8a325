"""Online RRHF's vLLM backend, with TRL's `VLLMGeneration` replaced by a fake that records what it is given.

vLLM needs a GPU and is not installed here: these tests check what `VLLMSampler` sends to TRL's `VLLMGeneration`
(the same constructor arguments as `GRPOTrainer` sends for the same config, TRL's calling convention for prompts,
the weight-sync cadence) and how it converts what comes back into samples, and that `VLLMGeneration`'s signatures
still take the names this backend passes (it is internal to TRL).
"""

import inspect
from types import SimpleNamespace

import pytest
import torch
from trl.generation.vllm_generation import VLLMGeneration

import trl_won.rrhf.vllm as rrhf_vllm
from tests.helpers import cpu_training_kwargs
from trl_won import RRHFConfig
from trl_won.generation import Sample
from trl_won.rrhf.vllm import VLLMSampler, vllm_generation_kwargs


VLLM_SETTINGS = dict(
    num_generations=3,
    max_completion_length=7,
    temperature=0.9,
    top_p=0.8,
    top_k=11,
    min_p=0.05,
    repetition_penalty=1.1,
    generation_kwargs={"frequency_penalty": 0.25},
    use_vllm=True,
    vllm_gpu_memory_utilization=0.42,
    vllm_max_model_length=321,
    vllm_enable_sleep_mode=True,
    vllm_model_impl="transformers",
    vllm_server_base_url="http://example.invalid:1234",
    vllm_server_timeout=12.5,
    vllm_group_port=51299,
    vllm_structured_outputs_regex="[a-z ]+",
    per_device_train_batch_size=2,
    steps_per_generation=2,
)


class FakeVLLMGeneration:
    """Records its constructor arguments and calls; `generate` returns the completions a test scripted."""

    instances: list["FakeVLLMGeneration"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.generation_kwargs = kwargs.get("generation_kwargs") or {}
        self.calls: list[tuple] = []
        self.completions: list[list[int]] | None = None
        FakeVLLMGeneration.instances.append(self)

    def sync_weights(self):
        self.calls.append(("sync_weights",))

    def generate(self, prompts, images, num_generations, profiler=None):
        self.calls.append(("generate", prompts, images, num_generations, dict(self.generation_kwargs)))
        completions = self.completions or [[5 + i % 3] for i in range(len(prompts))]
        return prompts, completions, [[[0.0]] * len(c) for c in completions], None


@pytest.fixture
def fake_vllm(monkeypatch):
    FakeVLLMGeneration.instances.clear()
    monkeypatch.setattr(rrhf_vllm, "VLLMGeneration", FakeVLLMGeneration)
    return FakeVLLMGeneration


def _trainer(tmp_path, policy, tokenizer, **overrides):
    args = RRHFConfig(**cpu_training_kwargs(tmp_path), **{**VLLM_SETTINGS, **overrides})
    accelerator = SimpleNamespace(is_main_process=True, num_processes=1, process_index=0)
    return SimpleNamespace(
        args=args,
        model=policy,
        processing_class=tokenizer,
        accelerator=accelerator,
        state=SimpleNamespace(global_step=0),
    )


def test_vllm_generation_signatures_take_the_names_we_pass(tmp_path):
    """`VLLMGeneration` is internal to TRL: fail loudly if a name this backend passes disappears or is renamed."""
    args = RRHFConfig(**cpu_training_kwargs(tmp_path), **VLLM_SETTINGS)
    init = inspect.signature(VLLMGeneration.__init__).parameters
    passed = set(vllm_generation_kwargs(args)) | {"model", "accelerator", "processing_class"}
    assert passed <= set(init), f"VLLMGeneration.__init__ no longer takes {sorted(passed - set(init))}"
    assert list(inspect.signature(VLLMGeneration.generate).parameters)[1:4] == ["prompts", "images", "num_generations"]
    assert list(inspect.signature(VLLMGeneration.sync_weights).parameters) == ["self"]
    # The sampler sets per-call stop tokens through the attribute `generate` reads its extra sampling settings from.
    assert "self.generation_kwargs" in inspect.getsource(VLLMGeneration.generate)
    assert "self.generation_kwargs = generation_kwargs" in inspect.getsource(VLLMGeneration.__init__)


@pytest.mark.parametrize("mode", ["server", "colocate"])
def test_constructor_arguments_are_grpo_trainers_for_the_same_settings(tmp_path, tiny_paths, monkeypatch, mode):
    """Build TRL's `GRPOTrainer` with the same generation block and compare what each hands to `VLLMGeneration`."""
    import trl.trainer.grpo_trainer as grpo_module
    from trl import GRPOConfig, GRPOTrainer

    from trl_won.tiny import toy_prompt_dataset

    received = {}

    class RecordingVLLMGeneration(FakeVLLMGeneration):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            received.setdefault("grpo" if "grpo" not in received else "rrhf", kwargs)

    monkeypatch.setattr(grpo_module, "VLLMGeneration", RecordingVLLMGeneration)
    monkeypatch.setattr(rrhf_vllm, "VLLMGeneration", RecordingVLLMGeneration)
    settings = {**VLLM_SETTINGS, "vllm_mode": mode, "per_device_train_batch_size": 6}
    grpo = GRPOTrainer(
        model=tiny_paths.policy,
        reward_funcs=lambda completions, **kwargs: [0.0] * len(completions),
        # (no importance-sampling correction: it would query the server's settings)
        args=GRPOConfig(
            **cpu_training_kwargs(tmp_path / "grpo"), **settings, vllm_importance_sampling_correction=False
        ),
        train_dataset=toy_prompt_dataset(),
    )
    # RRHF counts its batches in prompts, GRPO in completions: 2 prompts x 3 generations = GRPO's 6 completions.
    rrhf_args = RRHFConfig(**cpu_training_kwargs(tmp_path / "rrhf"), **{**settings, "per_device_train_batch_size": 2})
    trainer = SimpleNamespace(
        args=rrhf_args,
        model=grpo.model,
        processing_class=grpo.processing_class,
        accelerator=grpo.accelerator,
        state=SimpleNamespace(global_step=0),
    )
    VLLMSampler(trainer)
    grpo_kwargs, rrhf_kwargs = received["grpo"], received["rrhf"]
    assert rrhf_kwargs["mode"] == mode
    assert rrhf_kwargs == grpo_kwargs
    assert rrhf_kwargs["max_num_seqs"] == 6 * 2  # a generation cycle's sequences on this process


def test_samples_prompt_order_and_conversion(tmp_path, policy, tokenizer, fake_vllm):
    trainer = _trainer(tmp_path, policy, tokenizer, num_generations=2)
    sampler = VLLMSampler(trainer)
    fake = fake_vllm.instances[-1]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    words = tokenizer(text=" the cat sat on the mat", add_special_tokens=False)["input_ids"]
    fake.completions = [
        words[:2] + [eos],  # finished
        words[:3],  # cut at max_completion_length
        [eos],  # empty answer
        words[:1] + [pad, pad],  # vLLM does not pad: a generated pad token is kept
    ]
    prompts = ["The quick brown fox", "Write a short poem"]
    samples = sampler.sample(prompts, num_generations=2, seed=123)

    _, sent, images, num_generations, _ = fake.calls[-1]
    expected_ids = [tokenizer(text=p)["input_ids"] for p in prompts]
    assert sent == [expected_ids[0], expected_ids[0], expected_ids[1], expected_ids[1]]
    assert images is None and num_generations == 2
    assert samples == [
        [
            Sample(tokenizer.decode(words[:2]), words[:2] + [eos], True),
            Sample(tokenizer.decode(words[:3]), words[:3], False),
        ],
        [Sample("", [eos], True), Sample(tokenizer.decode(words[:1]), words[:1] + [pad, pad], False)],
    ]
    assert all(isinstance(sample, Sample) for group in samples for sample in group)


def test_conversational_prompts_are_rendered_as_the_transformers_sampler_renders_them(
    tmp_path, policy, tokenizer, fake_vllm
):
    from trl_won.data_utils import chat_turn_end_token_ids

    trainer = _trainer(tmp_path, policy, tokenizer)
    sampler = VLLMSampler(trainer)
    fake = fake_vllm.instances[-1]
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    sampler.sample([prompt], num_generations=3)
    _, sent, _, _, generation_kwargs = fake.calls[-1]
    # The chat template with its generation prompt, tokenized without adding special tokens a second time.
    expected = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert sent == [list(expected)] * 3
    stop = set(generation_kwargs["stop_token_ids"])
    assert {tokenizer.eos_token_id} | chat_turn_end_token_ids(tokenizer) <= stop
    assert generation_kwargs["frequency_penalty"] == 0.25  # the user's own settings are kept


def test_weights_are_pushed_once_per_optimizer_step_before_generating(tmp_path, policy, tokenizer, fake_vllm):
    trainer = _trainer(tmp_path, policy, tokenizer)
    sampler = VLLMSampler(trainer)
    fake = fake_vllm.instances[-1]
    assert fake.calls == []  # nothing pushed before the first generation

    def kinds():
        return [call[0] for call in fake.calls]

    sampler.sample(["a b"], num_generations=3)
    assert kinds() == ["sync_weights", "generate"]
    sampler.sample(["c d"], num_generations=3)  # same step (gradient accumulation, several batches of a cycle)
    assert kinds() == ["sync_weights", "generate", "generate"]
    trainer.state.global_step = 1
    sampler.sample(["e f"], num_generations=3)
    assert kinds() == ["sync_weights", "generate", "generate", "sync_weights", "generate"]
    assert sampler.synced_step == 1


def test_a_wrong_number_of_completions_is_an_error(tmp_path, policy, tokenizer, fake_vllm):
    sampler = VLLMSampler(_trainer(tmp_path, policy, tokenizer))
    fake_vllm.instances[-1].completions = [[5], [6]]
    with pytest.raises(RuntimeError, match=r"vLLM returned 2 completions for 1 prompts x 3 generations"):
        sampler.sample(["a b"], num_generations=3)


def test_a_seed_in_generation_kwargs_is_refused_in_colocate_mode(tmp_path, policy, tokenizer, fake_vllm):
    with pytest.raises(ValueError, match=r"`generation_kwargs` sets `seed`.*identical samples"):
        VLLMSampler(_trainer(tmp_path, policy, tokenizer, vllm_mode="colocate", generation_kwargs={"seed": 1}))
    VLLMSampler(_trainer(tmp_path, policy, tokenizer, vllm_mode="server", generation_kwargs={"seed": 1}))


def test_rrhf_trainer_trains_on_what_vllm_sampled(tmp_path, tiny_paths, tokenizer, fake_vllm, monkeypatch):
    """`use_vllm=True`: the trainer builds one `VLLMSampler`, pushes weights once per optimizer step, and ranks the
    completions vLLM returned (here: scripted token ids, rewarded by their length)."""
    from trl_won import RRHFTrainer
    from trl_won.tiny import toy_prompt_dataset

    words = tokenizer(text=" the cat sat on the mat and looked at the sun", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id

    class ScriptedVLLMGeneration(FakeVLLMGeneration):
        def generate(self, prompts, images, num_generations, profiler=None):
            # The i-th sample of a prompt has i + 1 words, then EOS.
            self.completions = [words[: i % num_generations + 1] + [eos] for i in range(len(prompts))]
            return super().generate(prompts, images, num_generations, profiler)

    monkeypatch.setattr(rrhf_vllm, "VLLMGeneration", ScriptedVLLMGeneration)
    seen = []

    def length_reward(completions, completion_ids, **kwargs):
        seen.append([list(ids) for ids in completion_ids])
        return [float(len(ids)) for ids in completion_ids]

    args = RRHFConfig(
        **cpu_training_kwargs(tmp_path),
        num_generations=3,
        max_completion_length=8,
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=1e-2,
        use_vllm=True,
        vllm_mode="colocate",
    )
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=toy_prompt_dataset(), reward_funcs=length_reward)
    [fake] = fake_vllm.instances
    assert isinstance(fake, ScriptedVLLMGeneration) and fake.kwargs["model"] is trainer.model
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()

    assert [call[0] for call in fake.calls] == ["sync_weights", "generate", "sync_weights", "generate"]
    expected = [words[: i + 1] + [eos] for i in range(3)] * 2
    assert seen == [expected, expected]  # the reward functions scored exactly what vLLM returned
    accuracy = [entry["ranking_accuracy"] for entry in trainer.state.log_history if "ranking_accuracy" in entry]
    assert len(accuracy) == 2
    assert any(not torch.equal(before[name], p) for name, p in trainer.model.named_parameters())
