"""Log-probabilities of selected tokens without building a full-vocabulary tensor for every position.

A causal LM's forward normally returns `(batch, seq_len, vocab)` logits, and a log-softmax over them doubles that. With
a 32k-150k vocabulary this dominates memory. Here the backbone runs as usual, the hidden states of only the positions
that are scored are gathered, and the LM head is applied to them in chunks; each chunk keeps only its label's logit
and the log-sum-exp. Under autograd each chunk is recomputed during backward, so at most one chunk of logits is alive.

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
    """
    num_tokens = hidden.shape[0]
    if num_tokens == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    if chunk_size is None:
        vocab_size = getattr(head, "out_features", None) or head(hidden[:1]).shape[-1]
        chunk_size = max(1, DEFAULT_CHUNK_ELEMENTS // vocab_size)
    recompute = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    pieces = []
    for start in range(0, num_tokens, chunk_size):
        h, y = hidden[start : start + chunk_size], labels[start : start + chunk_size]
        if recompute:
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


def _logprob_forward(self, input_ids=None, attention_mask=None, logprob_mask=None, **kwargs):
    if logprob_mask is None:
        return self._trl_won_original_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    for unused in ("labels", "logits_to_keep", "output_attentions", "output_hidden_states", "return_dict"):
        kwargs.pop(unused, None)
    kwargs["use_cache"] = False
    backbone = getattr(self, self.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
    batch, seq_len = input_ids.shape
    rows, cols = logprob_mask[:, 1:].bool().nonzero(as_tuple=True)  # position t+1 is predicted from t
    logps = chunked_token_logprobs(
        hidden[rows, cols],
        self.get_output_embeddings(),
        input_ids[rows, cols + 1],
        chunk_size=self._trl_won_chunk_size,
        softcap=getattr(self.config.get_text_config(), "final_logit_softcapping", None),
    )
    token_logps = hidden.new_zeros((batch, seq_len), dtype=torch.float32).index_put((rows, cols + 1), logps)
    return TokenLogProbsOutput(token_logps=token_logps)


def add_logprob_forward(model, chunk_size: int | None = None):
    """Teach a causal LM's forward a `logprob_mask` argument that returns selective log-probs instead of logits.

    After this call, `model(input_ids=..., attention_mask=..., logprob_mask=mask)` returns a
    [`TokenLogProbsOutput`] whose `token_logps[b, t]` is the log-probability of token `t` of row `b` wherever
    `mask[b, t]` is set. Called without `logprob_mask` the forward is unchanged (generation, saving and evaluation
    work as before). A PEFT wrapper passes the argument through to the patched model. Calling it again only updates
    `chunk_size`.

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
