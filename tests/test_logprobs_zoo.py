"""Selective log-probabilities equal `log_softmax` of the model's own forward on every common causal LM family.

Each family is a tiny random model built from its config (2 layers, hidden 32, vocabulary 128) with a wide weight
initialization, so that logits spread over several nats and every logit transform (Granite's `logits_scaling`,
Cohere's `logit_scale`, Gemma's soft-cap, ...) changes the log-probabilities measurably.
"""

import logging

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, LlamaConfig, LlamaForCausalLM

from trl_won.logprobs import USE_FORWARD, LogitTransform, add_logprob_forward, logit_transform


VOCAB = 128
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    initializer_range=0.5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
SPECIAL = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _gemma3_multimodal():
    text = dict(COMMON, head_dim=8, final_logit_softcapping=2.0)
    vision = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    return transformers.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=VOCAB - 1,
        boi_token_index=VOCAB - 2,
        eoi_token_index=VOCAB - 3,
        initializer_range=0.5,
    )


# family -> config factory. The first 18 are the families the issue names; the rest are cheap extras that exercise
# every transform `logit_transform` knows and the multimodal path.
ZOO = {
    "llama": lambda: transformers.LlamaConfig(**COMMON),
    "mistral": lambda: transformers.MistralConfig(**COMMON),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON),
    "qwen3": lambda: transformers.Qwen3Config(**COMMON, head_dim=8),
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(
        **COMMON, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, output_router_logits=True
    ),
    "gemma": lambda: transformers.GemmaConfig(**COMMON, head_dim=8),
    "gemma2": lambda: transformers.Gemma2Config(**COMMON, head_dim=8, final_logit_softcapping=2.0),
    "gemma3": lambda: transformers.Gemma3TextConfig(**COMMON, head_dim=8, final_logit_softcapping=2.0),
    "phi3": lambda: transformers.Phi3Config(**COMMON),
    "granite": lambda: transformers.GraniteConfig(**COMMON, logits_scaling=4.0),
    "cohere": lambda: transformers.CohereConfig(**COMMON, logit_scale=0.25),
    "olmo2": lambda: transformers.Olmo2Config(**COMMON),
    "stablelm": lambda: transformers.StableLmConfig(**COMMON),
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.5, **SPECIAL
    ),
    "opt": lambda: transformers.OPTConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        word_embed_proj_dim=32,
        max_position_embeddings=64,
        init_std=0.5,
        **SPECIAL,
    ),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.5,
        **SPECIAL,
    ),
    "falcon": lambda: transformers.FalconConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, initializer_range=0.5, **SPECIAL
    ),
    "bloom": lambda: transformers.BloomConfig(
        vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4, initializer_range=0.5, **SPECIAL
    ),
    # Extras.
    "granitemoe": lambda: transformers.GraniteMoeConfig(
        **COMMON, num_local_experts=4, num_experts_per_tok=2, logits_scaling=4.0
    ),
    "cohere2": lambda: transformers.Cohere2Config(**COMMON, head_dim=8, logit_scale=0.25),
    "falcon_h1": lambda: transformers.FalconH1Config(
        **COMMON,
        head_dim=8,
        lm_head_multiplier=0.5,
        mamba_d_ssm=32,
        mamba_n_heads=4,
        mamba_d_head=8,
        mamba_d_state=8,
        mamba_n_groups=1,
    ),
    "recurrent_gemma": lambda: transformers.RecurrentGemmaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        lru_width=32,
        attention_window_size=16,
        logits_soft_cap=0.05,  # its logits stay small: a low cap to make the cap matter
        block_types=["recurrent", "attention"],
        **SPECIAL,
    ),
    "mixtral": lambda: transformers.MixtralConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2),
    "phi": lambda: transformers.PhiConfig(**COMMON),
    "gemma3_multimodal": _gemma3_multimodal,  # Gemma3ForConditionalGeneration: text config nested, no soft-cap
}
# Families whose forward transforms the LM head's output (the transform is not the identity).
TRANSFORMED = {"gemma2", "gemma3", "granite", "cohere", "granitemoe", "cohere2", "falcon_h1", "recurrent_gemma"}


def _build(family):
    torch.manual_seed(0)
    config = ZOO[family]()
    auto = AutoModelForImageTextToText if family == "gemma3_multimodal" else AutoModelForCausalLM
    return auto.from_config(config).eval()


def _batch():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, VOCAB - 4, (2, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0  # right padding in the second row
    logprob_mask = attention_mask.clone()
    logprob_mask[:, :4] = 0  # a "prompt" that is not scored
    return input_ids, attention_mask, logprob_mask


def _reference(model, input_ids, attention_mask, logprob_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(logps, (1, 0)) * logprob_mask


def _grads(model, values):
    model.zero_grad()
    weights = torch.arange(1.0, values.numel() + 1).reshape(values.shape)
    (values * weights).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(ours, expected):
    assert ours.keys() == expected.keys()
    # float32 sums of many terms: absolute tolerance relative to the largest gradient entry of the model (some entries,
    # such as a key projection's bias, are zero in exact arithmetic and rounding noise in both computations)
    atol = 1e-5 * max(grad.abs().max().item() for grad in expected.values())
    for name, grad in expected.items():
        torch.testing.assert_close(ours[name], grad, rtol=1e-3, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def _our_warnings(caplog):
    return [record for record in caplog.records if record.name == "trl_won.logprobs"]


@pytest.mark.parametrize("family", list(ZOO))
def test_selective_logprobs_equal_models_own_forward(family, caplog):
    model = _build(family)
    input_ids, attention_mask, logprob_mask = _batch()
    expected = _reference(model, input_ids, attention_mask, logprob_mask)
    expected_grads = _grads(model, expected)
    add_logprob_forward(model, chunk_size=5)
    with caplog.at_level(logging.WARNING, logger="trl_won.logprobs"):
        ours = model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=logprob_mask).token_logps
    # The shortcut itself is exact: no fallback to the full forward, no warning.
    assert isinstance(model._trl_won_logprob_path, LogitTransform), model._trl_won_logprob_path
    assert not _our_warnings(caplog)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    _assert_same_grads(_grads(model, ours), expected_grads)
    transform = logit_transform(model.config)
    if family in TRANSFORMED:
        # Leaving out the family's transform moves log-probs by far more than the tolerance: this test can fail.
        assert transform != LogitTransform()
        model._trl_won_logprob_path = LogitTransform()
        with torch.no_grad():
            plain = model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=logprob_mask).token_logps
        assert (plain - expected).abs().max() > 0.05
    elif family != "gemma3_multimodal":  # its text config has a soft-cap that the class ignores (checked above)
        assert transform == LogitTransform()


class _RescaledLlama(LlamaForCausalLM):
    """A causal LM with a logit transform trl_won does not know (and no config attribute describing it)."""

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        output.logits = output.logits * 0.3 + 0.1 * torch.arange(output.logits.shape[-1])
        return output


def test_unknown_logit_transform_falls_back_to_forward_with_warning(caplog):
    torch.manual_seed(0)
    model = _RescaledLlama(LlamaConfig(**COMMON)).eval()
    input_ids, attention_mask, logprob_mask = _batch()
    expected = _reference(model, input_ids, attention_mask, logprob_mask)
    expected_grads = _grads(model, expected)
    add_logprob_forward(model, chunk_size=5)
    with caplog.at_level(logging.WARNING, logger="trl_won.logprobs"):
        ours = model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=logprob_mask).token_logps
    assert model._trl_won_logprob_path == USE_FORWARD
    (record,) = _our_warnings(caplog)
    assert "_RescaledLlama" in record.getMessage() and "model's own forward" in record.getMessage()
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    _assert_same_grads(_grads(model, ours), expected_grads)
    # The verdict is kept: the next call neither checks nor warns again.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trl_won.logprobs"):
        model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=logprob_mask)
    assert not _our_warnings(caplog)


def test_check_is_deterministic_under_dropout_and_restores_training_mode():
    """In train mode with heavy dropout, the check still compares like with like (eval mode) and takes the shortcut."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.5, resid_pdrop=0.5
    )
    model = AutoModelForCausalLM.from_config(config).train()
    model.transformer.h[0].eval()  # a mixed state, to see that each module's own mode comes back
    input_ids, attention_mask, logprob_mask = _batch()
    add_logprob_forward(model)
    model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=logprob_mask)
    assert model._trl_won_logprob_path == LogitTransform()
    assert model.training and model.transformer.h[1].training and not model.transformer.h[0].training


def test_bfloat16_model_takes_the_shortcut_and_matches():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(transformers.GraniteConfig(**COMMON, logits_scaling=4.0)).eval()
    model = model.to(torch.bfloat16)
    input_ids, attention_mask, logprob_mask = _batch()
    expected = _reference(model, input_ids, attention_mask, logprob_mask)
    add_logprob_forward(model)
    ours = model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=logprob_mask).token_logps
    assert model._trl_won_logprob_path == LogitTransform(scale=0.25)
    torch.testing.assert_close(ours, expected, rtol=0.02, atol=0.05)


def test_logit_transform_reads_known_attributes():
    assert logit_transform(transformers.GraniteConfig(logits_scaling=8.0)) == LogitTransform(scale=0.125)
    assert logit_transform(transformers.CohereConfig(logit_scale=0.0625)) == LogitTransform(scale=0.0625)
    assert logit_transform(transformers.Gemma2Config(final_logit_softcapping=30.0)) == LogitTransform(softcap=30.0)
    assert logit_transform(transformers.LlamaConfig()) == LogitTransform()
    assert logit_transform(_gemma3_multimodal()) == LogitTransform(softcap=2.0)  # read from the text config
