"""Log-probabilities of selected tokens without building a full-vocabulary tensor for every position.

A causal LM's forward normally returns `(batch, seq_len, vocab)` logits, and a log-softmax over them doubles that. With
a 32k-150k vocabulary this dominates memory. Here the backbone runs as usual, the hidden states of only the positions
that are scored are gathered, and the LM head is applied to them in chunks; each chunk keeps only its label's logit
and the log-sum-exp. Under autograd each chunk is recomputed during backward, so at most one chunk of logits is alive;
when the LM head gets no gradient (LoRA, a frozen head), the gradient with respect to the hidden states is computed
during the forward instead and kept (one hidden-size vector per token), so the backward does not touch the head again.

A batch can also be packed (see [`packed_attention_mask`]): each row holds one prompt followed by several
completions, each completion attending to the prompt and causally to itself, so that the prompt is computed once.

The computation runs inside the model's own `forward` (see [`add_logprob_forward`]) so that wrappers such as
`DistributedDataParallel`, FSDP and DeepSpeed see every parameter used within the forward they manage.
"""

import types
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.utils import ModelOutput

from .models import unwrap_peft


# Logits (tokens x vocabulary) computed at once: 2**22 float32 values = 16 MiB, 131 tokens of a 32k vocabulary.
DEFAULT_CHUNK_ELEMENTS = 2**22


def _chunk_logprobs(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module, softcap: float | None):
    logits = head(hidden).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    label_logits = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return label_logits - torch.logsumexp(logits, dim=-1)


class _FrozenHeadLogProbs(torch.autograd.Function):
    """Log-probs of one chunk whose backward needs no second pass through a head that gets no gradient.

    The forward computes `d logp / d hidden` (for a plain head `W^T (onehot(label) - softmax)`, through any logit
    transform) with the head's own autograd and keeps only that `(tokens, hidden_size)` gradient.
    """

    @staticmethod
    def forward(ctx, hidden, labels, head, softcap):
        with torch.enable_grad():
            leaf = hidden.detach().requires_grad_()
            logps = _chunk_logprobs(leaf, labels, head, softcap)
            # Each row's log-prob depends on its own hidden state only: the gradient of the sum is per row.
            (grad,) = torch.autograd.grad(logps.sum(), leaf)
        ctx.save_for_backward(grad)
        return logps.detach()

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output.unsqueeze(-1).to(grad.dtype), None, None, None


def head_gets_gradient(head: nn.Module) -> bool:
    """Whether any parameter of the LM head (or an embedding tied to it) requires a gradient."""
    return any(p.requires_grad for p in head.parameters())


def chunked_token_logprobs(
    hidden: torch.Tensor,
    head: nn.Module,
    labels: torch.Tensor,
    chunk_size: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """`log softmax(head(hidden))[label]` for each row, computed `chunk_size` rows at a time.

    Args:
        hidden (`torch.Tensor` of shape `(num_tokens, hidden_size)`):
            Hidden states of the positions that predict the labels.
        head (`torch.nn.Module`):
            The LM head (any module mapping hidden states to vocabulary logits: plain, LoRA-wrapped or quantized).
        labels (`torch.LongTensor` of shape `(num_tokens,)`):
            The token whose log-probability is wanted at each position.
        chunk_size (`int`, *optional*):
            Rows per chunk. Defaults to as many as keep a chunk's logits at 2**22 values.
        softcap (`float`, *optional*):
            Final logit soft-capping (`tanh(logits / softcap) * softcap`), for models that use it.

    Returns:
        `torch.Tensor` of shape `(num_tokens,)`, float32: the log-probabilities.

    Under autograd, when the head gets a gradient each chunk is recomputed during backward (checkpointing); when it
    gets none (a frozen head, LoRA), each chunk's gradient with respect to `hidden` is computed in the forward and
    kept instead, which saves the recomputation. Both give the same gradients.
    """
    num_tokens = hidden.shape[0]
    if num_tokens == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    if chunk_size is None:
        vocab_size = getattr(head, "out_features", None) or head(hidden[:1]).shape[-1]
        chunk_size = max(1, DEFAULT_CHUNK_ELEMENTS // vocab_size)
    head_grad = head_gets_gradient(head)
    recompute = torch.is_grad_enabled() and (hidden.requires_grad or head_grad)
    frozen_head = recompute and not head_grad
    pieces = []
    for start in range(0, num_tokens, chunk_size):
        h, y = hidden[start : start + chunk_size], labels[start : start + chunk_size]
        if frozen_head:
            pieces.append(_FrozenHeadLogProbs.apply(h, y, head, softcap))
        elif recompute:
            pieces.append(checkpoint(_chunk_logprobs, h, y, head, softcap, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(h, y, head, softcap))
    return torch.cat(pieces)


@dataclass
class TokenLogProbsOutput(ModelOutput):
    """Output of a forward called with `logprob_mask` (see [`add_logprob_forward`]).

    Args:
        token_logps (`torch.Tensor` of shape `(batch, seq_len)`, float32):
            `log p(input_ids[:, t] | input_ids[:, :t])` where `logprob_mask[:, t]` is set, zero elsewhere.
    """

    token_logps: torch.Tensor | None = None


def packed_attention_mask(config, segments: torch.Tensor, position_ids: torch.Tensor, dtype: torch.dtype):
    """Additive attention mask(s) of packed rows: `[prompt, completion_1, ..., completion_k, padding]`.

    A token of completion i attends to the prompt and causally to the earlier tokens of completion i; prompt tokens
    attend causally to the prompt; a padding token attends to itself only (so no row of the mask is empty). With a
    sliding window (`config.sliding_window`), a token also sees only keys less than `sliding_window` positions back,
    measured in `position_ids` (the positions each token has in its own unpacked sequence); a model mixing full and
    sliding layers (`config.layer_types`) gets a `{layer type: mask}` mapping, which transformers' models accept.

    Args:
        config ([`~transformers.PretrainedConfig`]):
            The model's (text) configuration.
        segments (`torch.LongTensor` of shape `(batch, seq_len)`):
            0 on the prompt (at the start of the row), i >= 1 on the tokens of the i-th completion, -1 on padding.
        position_ids (`torch.LongTensor` of shape `(batch, seq_len)`):
            Each token's position in its own unpacked sequence (a completion continues from the prompt's length).
        dtype (`torch.dtype`):
            The dtype of the attention scores.

    Returns:
        `torch.Tensor` of shape `(batch, 1, seq_len, seq_len)` (0 where attention is allowed, the dtype's minimum
        elsewhere), or a dict of them keyed by layer type.

    Raises:
        NotImplementedError: for layer types other than full and sliding-window attention.
    """
    seq_len = segments.shape[1]
    query, key = segments.unsqueeze(2), segments.unsqueeze(1)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=segments.device).tril()
    visible = causal & (key >= 0) & ((key == query) | (key == 0)) & (query >= 0)
    visible |= torch.eye(seq_len, dtype=torch.bool, device=segments.device)

    def additive(allowed):
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )[:, None]

    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        unknown = set(layer_types) - {"full_attention", "sliding_attention"}
        if unknown:
            raise NotImplementedError(f"packed sequences do not support layer types {sorted(unknown)}")
    if window is None or (layer_types is not None and "sliding_attention" not in layer_types):
        return additive(visible)
    windowed = visible & (position_ids.unsqueeze(2) - position_ids.unsqueeze(1) < window)
    windowed |= torch.eye(seq_len, dtype=torch.bool, device=segments.device)
    if layer_types is None or set(layer_types) == {"sliding_attention"}:
        return additive(windowed)
    return {"full_attention": additive(visible), "sliding_attention": additive(windowed)}


def _logprob_forward(self, input_ids=None, attention_mask=None, logprob_mask=None, packed_segments=None, **kwargs):
    if logprob_mask is None:
        if packed_segments is not None:
            raise ValueError("`packed_segments` is only supported together with `logprob_mask`.")
        return self._trl_won_original_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    for unused in ("labels", "logits_to_keep", "output_attentions", "output_hidden_states", "return_dict"):
        kwargs.pop(unused, None)
    kwargs["use_cache"] = False
    backbone = getattr(self, self.base_model_prefix)
    text_config = self.config.get_text_config()
    if packed_segments is not None:
        if attention_mask is not None or kwargs.get("position_ids") is None:
            raise ValueError("A packed batch takes `packed_segments` and `position_ids` instead of `attention_mask`.")
        dtype = self.get_input_embeddings().weight.dtype
        attention_mask = packed_attention_mask(text_config, packed_segments, kwargs["position_ids"], dtype)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
    batch, seq_len = input_ids.shape
    rows, cols = logprob_mask[:, 1:].bool().nonzero(as_tuple=True)
    cols = cols + 1  # the scored tokens; each is predicted from the hidden state of the token before it
    sources = cols - 1
    if packed_segments is not None:
        # The first token of completion i > 1 follows completion i-1 in the row but is predicted from the prompt's
        # last token.
        previous = packed_segments[rows, sources]
        starts = (previous != packed_segments[rows, cols]) & (previous != 0)
        prompt_lengths = (packed_segments == 0).sum(dim=1)
        sources = torch.where(starts, prompt_lengths[rows] - 1, sources)
    logps = chunked_token_logprobs(
        hidden[rows, sources],
        self.get_output_embeddings(),
        input_ids[rows, cols],
        chunk_size=self._trl_won_chunk_size,
        softcap=getattr(text_config, "final_logit_softcapping", None),
    )
    token_logps = hidden.new_zeros((batch, seq_len), dtype=torch.float32).index_put((rows, cols), logps)
    return TokenLogProbsOutput(token_logps=token_logps)


def add_logprob_forward(model, chunk_size: int | None = None):
    """Teach a causal LM's forward a `logprob_mask` argument that returns selective log-probs instead of logits.

    After this call, `model(input_ids=..., attention_mask=..., logprob_mask=mask)` returns a
    [`TokenLogProbsOutput`] whose `token_logps[b, t]` is the log-probability of token `t` of row `b` wherever
    `mask[b, t]` is set. A packed batch (one prompt and several completions per row) is given as
    `model(input_ids=..., position_ids=..., packed_segments=segments, logprob_mask=mask)` instead (see
    [`packed_attention_mask`]); then the first token of each completion is predicted from the prompt's last token.
    Called without `logprob_mask` the forward is unchanged (generation, saving and evaluation work as before). A PEFT
    wrapper passes the arguments through to the patched model. Calling it again only updates `chunk_size`.

    Args:
        model ([`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            A causal LM whose backbone is reachable as `getattr(model, model.base_model_prefix)`.
        chunk_size (`int`, *optional*):
            Tokens per LM-head chunk; see [`chunked_token_logprobs`].

    Returns:
        The same `model`.
    """
    inner = unwrap_peft(model)
    if not hasattr(inner, "_trl_won_original_forward"):
        if inner.get_output_embeddings() is None or not hasattr(inner, inner.base_model_prefix):
            raise ValueError(
                f"{type(inner).__name__} is not a causal LM with an output embedding and a backbone "
                f"`{inner.base_model_prefix}`; selective log-probabilities need both."
            )
        inner._trl_won_original_forward = inner.forward
        inner.forward = types.MethodType(_logprob_forward, inner)
    inner._trl_won_chunk_size = chunk_size
    return model


@torch.no_grad()
def sequence_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logprob_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean log-probability of the masked tokens of each row, without gradient.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: Sum and mean over the masked tokens, each of shape `(batch,)`.
    """
    add_logprob_forward(model, getattr(unwrap_peft(model), "_trl_won_chunk_size", None))
    token_logps = model(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=logprob_mask).token_logps
    counts = logprob_mask.sum(dim=1).clamp(min=1)
    total = token_logps.sum(dim=1)
    return total, total / counts
