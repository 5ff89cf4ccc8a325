import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from trl_won.logprobs import add_logprob_forward, chunked_token_logprobs, sequence_logprobs


def _reference_token_logps(model, input_ids, attention_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(logps, (1, 0))


@pytest.mark.parametrize("chunk_size", [1, 3, None])
def test_chunked_logprobs_match_log_softmax_values_and_gradients(chunk_size):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(7, 8, requires_grad=True)
    labels = torch.randint(0, 50, (7,))
    ours = chunked_token_logprobs(hidden, head, labels, chunk_size=chunk_size)
    (ours * torch.arange(1.0, 8.0)).sum().backward()
    ours_grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    expected = torch.log_softmax(head(hidden), -1).gather(-1, labels[:, None]).squeeze(-1)
    (expected * torch.arange(1.0, 8.0)).sum().backward()
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(ours_grads[0], hidden.grad)
    torch.testing.assert_close(ours_grads[1], head.weight.grad)


def test_softcap_is_applied():
    head = torch.nn.Linear(4, 6, bias=False)
    hidden, labels = torch.randn(3, 4), torch.tensor([0, 5, 2])
    capped = torch.tanh(head(hidden) / 2.0) * 2.0
    expected = torch.log_softmax(capped, -1).gather(-1, labels[:, None]).squeeze(-1)
    torch.testing.assert_close(chunked_token_logprobs(hidden, head, labels, softcap=2.0), expected)


def _batch(tokenizer):
    texts = ["What is the capital of France? Paris.", "Say something helpful."]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")
    mask = enc["attention_mask"].clone()
    mask[:, :3] = 0  # score everything but the first three tokens (and the padding)
    return enc["input_ids"], enc["attention_mask"], mask


def test_logprob_forward_matches_full_logits(policy, tokenizer):
    input_ids, attention_mask, mask = _batch(tokenizer)
    expected = _reference_token_logps(policy, input_ids, attention_mask) * mask
    add_logprob_forward(policy, chunk_size=4)
    out = policy(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=mask)
    torch.testing.assert_close(out.token_logps, expected, rtol=1e-5, atol=1e-5)
    assert (out.token_logps[mask == 0] == 0).all()
    # Without the mask the forward is the model's own.
    assert policy(input_ids=input_ids, attention_mask=attention_mask).logits.shape[-1] == len(tokenizer)
    total, mean = sequence_logprobs(policy, input_ids, attention_mask, mask)
    torch.testing.assert_close(total, expected.sum(1))
    torch.testing.assert_close(mean, expected.sum(1) / mask.sum(1))


def test_logprob_forward_trains_lora_adapter(policy, tokenizer):
    input_ids, attention_mask, mask = _batch(tokenizer)
    model = get_peft_model(policy, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    add_logprob_forward(model)
    token_logps = model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=mask).token_logps
    token_logps.sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    base_grads = [p.grad for n, p in model.named_parameters() if "lora_" not in n]
    assert all(g is None for g in base_grads)


def test_logprob_forward_on_4bit_model(tiny_paths, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(
        tiny_paths.policy,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32),
    )
    input_ids, attention_mask, mask = _batch(tokenizer)
    add_logprob_forward(model)
    out = model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=mask)
    # Reference after the first call: on CPUs with AVX512-BF16, bitsandbytes repacks the 4-bit weights of a model in
    # eval mode at its first no-grad forward (the first call's check is one) and computes ~1e-3 differently after.
    expected = _reference_token_logps(model, input_ids, attention_mask) * mask
    torch.testing.assert_close(out.token_logps, expected, rtol=1e-4, atol=1e-4)


def test_first_call_check_keeps_a_training_4bit_model_differentiable(tiny_paths, tokenizer):
    """The check runs in eval mode but leaves bitsandbytes layers alone: on CPUs with AVX512-BF16 an eval-mode 4-bit
    layer repacks its weight for inference at its first no-grad forward, and has no backward afterwards."""
    model = AutoModelForCausalLM.from_pretrained(
        tiny_paths.policy,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32),
    )
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.train()
    input_ids, attention_mask, mask = _batch(tokenizer)
    add_logprob_forward(model)
    model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=mask).token_logps.sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}
    model.zero_grad()
    # Again, now that the check is done: the same gradients, all non-zero, and the layers still in training mode.
    model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=mask).token_logps.sum().backward()
    assert all(module.training for module in model.modules())
    for name, grad in expected.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad)
