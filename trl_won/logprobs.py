"""Log-probabilities of selected tokens without building a full-vocabulary tensor for every position.

A causal LM's forward normally returns `(batch, seq_len, vocab)` logits, and a log-softmax over them doubles that. With
a 32k-150k vocabulary this dominates memory. Here the backbone runs as usual, the hidden states of only the positions
that are scored are gathered, and the LM head is applied to them in chunks; each chunk keeps only its label's logit
and the log-sum-exp. Under autograd each chunk is recomputed during backward, so at most one chunk of logits is alive.

The computation runs inside the model's own `forward` (see [`add_logprob_forward`]) so that wrappers such as
`DistributedDataParallel`, FSDP and DeepSpeed see every parameter used within the forward they manage.

Some architectures change the logits inside their `forward`, after the LM head. [`logit_transform`] knows those of
transformers (Granite's `logits_scaling`, Cohere's `logit_scale`, Falcon-H1's `lm_head_multiplier`, an
`output_multiplier`, Gemma's `final_logit_softcapping`, RecurrentGemma's `logits_soft_cap`). For anything else, the
first call on a model compares the shortcut with the model's own forward on a short sequence; if they differ, that
model's log-probabilities come from its own forward from then on, with a warning naming the architecture.
"""

import logging
import types
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.utils import ModelOutput

from .models import unwrap_peft


logger = logging.getLogger(__name__)

# Logits (tokens x vocabulary) computed at once: 2**22 float32 values = 16 MiB, 131 tokens of a 32k vocabulary.
DEFAULT_CHUNK_ELEMENTS = 2**22
# Tokens of the first row that the first call compares between the shortcut and the model's own forward.
CHECK_TOKENS = 16


@dataclass(frozen=True)
class LogitTransform:
    """What a causal LM's `forward` does to the LM head's output: `logits * scale`, then, if `softcap` is set,
    `tanh(logits / softcap) * softcap`."""

    scale: float = 1.0
    softcap: float | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def logit_transform(config) -> LogitTransform:
    """The post-LM-head logit transform of the architectures in transformers that have one, read from `config`.

    | config attribute | families | transform |
    |---|---|---|
    | `logits_scaling` | Granite, GraniteMoe(Hybrid/Shared), Granite vision | `logits / logits_scaling` |
    | `logit_scale` | Cohere, Cohere2, Cohere2-MoE | `logits * logit_scale` |
    | `lm_head_multiplier` | Falcon-H1 | `logits * lm_head_multiplier` |
    | `output_multiplier` | Muse | `logits * output_multiplier` |
    | `final_logit_softcapping` | Gemma2, Gemma3, Gemma3n, VaultGemma, Nanochat, ... | `tanh(logits / c) * c` |
    | `logits_soft_cap` | RecurrentGemma | `tanh(logits / c) * c` |

    Multimodal configs are read through their text (decoder) config. A family that transforms its logits in another
    way is caught by the check in [`add_logprob_forward`].
    """
    try:
        config = config.get_text_config(decoder=True)
    except (AttributeError, TypeError, ValueError):
        pass
    scale = 1.0
    if getattr(config, "logits_scaling", None):
        scale /= config.logits_scaling
    for name in ("logit_scale", "lm_head_multiplier", "output_multiplier"):
        value = getattr(config, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            scale *= value
    softcap = getattr(config, "final_logit_softcapping", None) or getattr(config, "logits_soft_cap", None)
    return LogitTransform(scale=float(scale), softcap=softcap)


def _chunk_logprobs(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module, transform: LogitTransform):
    logits = transform(head(hidden).float())
    label_logits = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return label_logits - torch.logsumexp(logits, dim=-1)


def chunked_token_logprobs(
    hidden: torch.Tensor,
    head: nn.Module,
    labels: torch.Tensor,
    chunk_size: int | None = None,
    softcap: float | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """`log softmax(transform(head(hidden)))[label]` for each row, computed `chunk_size` rows at a time.

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
        scale (`float`, *optional*, defaults to `1.0`):
            Factor applied to the logits before soft-capping (see [`logit_transform`]).

    Returns:
        `torch.Tensor` of shape `(num_tokens,)`, float32: the log-probabilities.
    """
    transform = LogitTransform(scale=scale, softcap=softcap)
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
            pieces.append(checkpoint(_chunk_logprobs, h, y, head, transform, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(h, y, head, transform))
    return torch.cat(pieces)


@dataclass
class TokenLogProbsOutput(ModelOutput):
    """Output of a forward called with `logprob_mask` (see [`add_logprob_forward`]).

    Args:
        token_logps (`torch.Tensor` of shape `(batch, seq_len)`, float32):
            `log p(input_ids[:, t] | input_ids[:, :t])` where `logprob_mask[:, t]` is set, zero elsewhere.
    """

    token_logps: torch.Tensor | None = None


def _scatter(logps, rows, cols, shape):
    return logps.new_zeros(shape, dtype=torch.float32).index_put((rows, cols + 1), logps.float())


def _chunked_logps(model, input_ids, attention_mask, logprob_mask, transform=None, **kwargs):
    """The shortcut: backbone, then the LM head and the logit transform on the scored positions only."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]
    rows, cols = logprob_mask[:, 1:].bool().nonzero(as_tuple=True)  # position t+1 is predicted from t
    transform = transform or logit_transform(model.config)
    logps = chunked_token_logprobs(
        hidden[rows, cols],
        model.get_output_embeddings(),
        input_ids[rows, cols + 1],
        chunk_size=model._trl_won_chunk_size,
        softcap=transform.softcap,
        scale=transform.scale,
    )
    return _scatter(logps, rows, cols, input_ids.shape)


def _logps_from_logits(logits, input_ids, logprob_mask):
    rows, cols = logprob_mask[:, 1:].bool().nonzero(as_tuple=True)
    picked = logits[rows, cols].float()
    logps = picked.gather(-1, input_ids[rows, cols + 1].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, dim=-1)
    return _scatter(logps, rows, cols, input_ids.shape)


def _forward_logps(model, input_ids, attention_mask, logprob_mask, **kwargs):
    """The model's own forward, full logits, then `log_softmax` and gather (exact for any architecture)."""
    logits = model._trl_won_original_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
    return _logps_from_logits(logits, input_ids, logprob_mask)


def _check_tolerance(dtype: torch.dtype, logits: torch.Tensor) -> float:
    """Largest log-probability difference accepted between the shortcut and the model's forward.

    In float32 and float64 the two agree to rounding (1e-3 leaves a wide margin over it). In 16-bit dtypes the LM
    head's output is rounded to about `eps * |logit|` and both paths round independently, so the tolerance is four
    times that bound; a missed transform (a scale, a soft-cap) changes log-probabilities by far more.
    """
    if dtype in (torch.float32, torch.float64):
        return 1e-3
    return 4 * torch.finfo(dtype).eps * max(1.0, logits.abs().max().item())


# `model._trl_won_logprob_path` after the first call: a `LogitTransform` (the shortcut, with that transform) or this.
USE_FORWARD = "forward"


@torch.no_grad()
def _choose_logprob_path(model, input_ids, attention_mask):
    """Compare the shortcut with the model's own forward on the first row's first tokens, in eval mode.

    Tries the transform the config describes (see [`logit_transform`]), then none (some classes ignore a config
    attribute: `Gemma3ForConditionalGeneration` does not soft-cap although its text config may say so). Returns the
    first transform that reproduces the model's log-probabilities, else `USE_FORWARD` (with a warning), or `None` when
    the row is too short to tell (the check then runs again on the next call).
    """
    ids = input_ids[0] if attention_mask is None else input_ids[0][attention_mask[0].bool()]
    ids = ids[:CHECK_TOKENS].unsqueeze(0)
    if ids.shape[1] < 2:
        return None
    mask = torch.ones_like(ids)
    candidates = list(dict.fromkeys([logit_transform(model.config), LogitTransform()]))
    training = {module: module.training for module in model.modules()}
    # Eval mode (no dropout, no router noise): both paths see the same deterministic function. Except bitsandbytes'
    # own layers: on CPUs with AVX512-BF16 a 4-bit layer repacks its weight for inference at its first eval-mode
    # no-grad forward and has no backward afterwards, which would silently stop a QLoRA run's gradients.
    for module in training:
        if not type(module).__module__.startswith("bitsandbytes"):
            module.training = False
    differences, error = [], None
    try:
        logits = model._trl_won_original_forward(input_ids=ids, attention_mask=mask, use_cache=False).logits
        reference = _logps_from_logits(logits, ids, mask)
        tolerance = _check_tolerance(logits.dtype, logits)
        for transform in candidates:
            ours = _chunked_logps(model, ids, mask, mask, transform=transform, use_cache=False)
            differences.append((ours - reference).abs().max().item())
            if differences[-1] <= tolerance:
                return transform
    except Exception as exc:  # a backbone the shortcut cannot drive: use the model's forward
        error = exc
    finally:
        for module, mode in training.items():
            module.training = mode
    if error is not None:
        reason = f"failed with {type(error).__name__}: {error}"
    else:
        reason = f"differ by {min(differences):.3g} (tolerance {tolerance:.3g})"
    logger.warning(
        "Selective log-probabilities of %s: the chunked LM-head shortcut and the model's own forward %s on a "
        "%d-token check; this architecture transforms its logits in a way trl_won does not know. Falling back to "
        "the model's own forward (full-vocabulary logits: exact, but more memory per batch). Please report the "
        "architecture to trl_won.",
        type(model).__name__,
        reason,
        ids.shape[1],
    )
    return USE_FORWARD


def _logprob_forward(self, input_ids=None, attention_mask=None, logprob_mask=None, **kwargs):
    if logprob_mask is None:
        return self._trl_won_original_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    for unused in ("labels", "logits_to_keep", "output_attentions", "output_hidden_states", "return_dict"):
        kwargs.pop(unused, None)
    kwargs["use_cache"] = False
    if self._trl_won_logprob_path is None:
        self._trl_won_logprob_path = _choose_logprob_path(self, input_ids, attention_mask)
    path = self._trl_won_logprob_path
    if path == USE_FORWARD:
        token_logps = _forward_logps(self, input_ids, attention_mask, logprob_mask, **kwargs)
    else:
        token_logps = _chunked_logps(self, input_ids, attention_mask, logprob_mask, transform=path, **kwargs)
    return TokenLogProbsOutput(token_logps=token_logps)


def add_logprob_forward(model, chunk_size: int | None = None):
    """Teach a causal LM's forward a `logprob_mask` argument that returns selective log-probs instead of logits.

    After this call, `model(input_ids=..., attention_mask=..., logprob_mask=mask)` returns a
    [`TokenLogProbsOutput`] whose `token_logps[b, t]` is the log-probability of token `t` of row `b` wherever
    `mask[b, t]` is set: `log_softmax` of the logits the model's own forward returns, computed by the chunked shortcut
    (backbone, LM head on the scored positions, the architecture's known logit transform, see [`logit_transform`]).
    The first such call compares the shortcut with the model's own forward on up to 16 tokens of the first row (eval
    mode, no gradient; the transform the config describes, then none); if neither matches (an architecture with a
    logit transform trl_won does not know), it logs a warning naming the architecture and computes every later call
    with the model's own forward (full logits, then `log_softmax`). The verdict is kept on the model. Called without
    `logprob_mask` the forward is unchanged (generation, saving and evaluation work as before). A PEFT wrapper passes
    the argument through to the patched model. Calling it again only updates `chunk_size`.

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
        inner._trl_won_logprob_path = None
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
