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

Some architectures change the logits inside their `forward`, after the LM head. [`logit_transform`] knows those of
transformers (Granite's `logits_scaling`, Cohere's `logit_scale`, Falcon-H1's `lm_head_multiplier`, an
`output_multiplier`, Gemma's `final_logit_softcapping`, RecurrentGemma's `logits_soft_cap`). For anything else, the
first call on a model compares the shortcut with the model's own forward on a short sequence; if they differ, that
model's log-probabilities come from its own forward from then on, with a warning naming the architecture.
"""

import logging
import types
from contextlib import contextmanager
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


class _FrozenHeadLogProbs(torch.autograd.Function):
    """Log-probs of one chunk whose backward needs no second pass through a head that gets no gradient.

    The forward computes `d logp / d hidden` (for a plain head `W^T (onehot(label) - softmax)`, through the logit
    transform) with the head's own autograd and keeps only that `(tokens, hidden_size)` gradient.
    """

    @staticmethod
    def forward(ctx, hidden, labels, head, transform):
        with torch.enable_grad():
            leaf = hidden.detach().requires_grad_()
            logps = _chunk_logprobs(leaf, labels, head, transform)
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

    Under autograd, when the head gets a gradient each chunk is recomputed during backward (checkpointing); when it
    gets none (a frozen head, LoRA), each chunk's gradient with respect to `hidden` is computed in the forward and
    kept instead, which saves the recomputation. Both give the same gradients.
    """
    transform = LogitTransform(scale=scale, softcap=softcap)
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
            pieces.append(_FrozenHeadLogProbs.apply(h, y, head, transform))
        elif recompute:
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


def _scored_positions(logprob_mask, packed_segments=None):
    """`(rows, sources, cols)` of the scored tokens: token `(row, col)` is predicted from position `(row, source)`.

    The source is the previous position, except in a packed row (see [`packed_attention_mask`]) for the first token
    of completion i > 1, which follows completion i-1 in the row but is predicted from the prompt's last token.
    """
    rows, cols = logprob_mask[:, 1:].bool().nonzero(as_tuple=True)
    cols = cols + 1
    sources = cols - 1
    if packed_segments is not None:
        previous = packed_segments[rows, sources]
        starts = (previous != packed_segments[rows, cols]) & (previous != 0)
        prompt_lengths = (packed_segments == 0).sum(dim=1)
        sources = torch.where(starts, prompt_lengths[rows] - 1, sources)
    return rows, sources, cols


def _scatter(logps, rows, cols, shape):
    return logps.new_zeros(shape, dtype=torch.float32).index_put((rows, cols), logps.float())


def _chunked_logps(model, input_ids, attention_mask, logprob_mask, transform=None, packed_segments=None, **kwargs):
    """The shortcut: backbone, then the LM head and the logit transform on the scored positions only."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]
    rows, sources, cols = _scored_positions(logprob_mask, packed_segments)
    transform = transform or logit_transform(model.config)
    logps = chunked_token_logprobs(
        hidden[rows, sources],
        model.get_output_embeddings(),
        input_ids[rows, cols],
        chunk_size=model._trl_won_chunk_size,
        softcap=transform.softcap,
        scale=transform.scale,
    )
    return _scatter(logps, rows, cols, input_ids.shape)


def _logps_from_logits(logits, input_ids, logprob_mask, packed_segments=None):
    rows, sources, cols = _scored_positions(logprob_mask, packed_segments)
    picked = logits[rows, sources].float()
    logps = picked.gather(-1, input_ids[rows, cols].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, dim=-1)
    return _scatter(logps, rows, cols, input_ids.shape)


def _forward_logps(model, input_ids, attention_mask, logprob_mask, packed_segments=None, **kwargs):
    """The model's own forward, full logits, then `log_softmax` and gather (exact for any architecture)."""
    logits = model._trl_won_original_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
    return _logps_from_logits(logits, input_ids, logprob_mask, packed_segments)


@contextmanager
def deterministic_mode(model):
    """Eval mode (no dropout, no router noise) for a check, then every module's mode restored.

    Except bitsandbytes' own layers: on CPUs with AVX512-BF16 a 4-bit layer repacks its weight for inference at its
    first eval-mode no-grad forward and has no backward afterwards (bitsandbytes 0.50), which would silently stop a
    QLoRA run's gradients. Its 4-bit layers are put in training mode for the check (a model loaded with
    `from_pretrained` starts in eval mode), the other bitsandbytes layers keep their mode.
    """
    modes = {module: module.training for module in model.modules()}
    for module in modes:
        if not type(module).__module__.startswith("bitsandbytes"):
            module.training = False
        elif type(module).__name__ == "Linear4bit":
            module.training = True
    try:
        yield model
    finally:
        for module, mode in modes.items():
            module.training = mode


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
    differences, error = [], None
    with deterministic_mode(model):  # both paths see the same deterministic function
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


def _logprob_forward(self, input_ids=None, attention_mask=None, logprob_mask=None, packed_segments=None, **kwargs):
    if logprob_mask is None:
        if packed_segments is not None:
            raise ValueError("`packed_segments` is only supported together with `logprob_mask`.")
        return self._trl_won_original_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    for unused in ("labels", "logits_to_keep", "output_attentions", "output_hidden_states", "return_dict"):
        kwargs.pop(unused, None)
    kwargs["use_cache"] = False
    if self._trl_won_logprob_path is None:
        plain_mask = attention_mask if packed_segments is None else (packed_segments >= 0).long()
        self._trl_won_logprob_path = _choose_logprob_path(self, input_ids, plain_mask)
    if packed_segments is not None:
        if attention_mask is not None or kwargs.get("position_ids") is None:
            raise ValueError("A packed batch takes `packed_segments` and `position_ids` instead of `attention_mask`.")
        dtype = self.get_input_embeddings().weight.dtype
        attention_mask = packed_attention_mask(
            self.config.get_text_config(), packed_segments, kwargs["position_ids"], dtype
        )
    path = self._trl_won_logprob_path
    if path == USE_FORWARD:
        token_logps = _forward_logps(self, input_ids, attention_mask, logprob_mask, packed_segments, **kwargs)
    else:
        token_logps = _chunked_logps(
            self, input_ids, attention_mask, logprob_mask, transform=path, packed_segments=packed_segments, **kwargs
        )
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
    with the model's own forward (full logits, then `log_softmax`). The verdict is kept on the model. A packed batch
    (one prompt and several completions per row) is given as `model(input_ids=..., position_ids=...,
    packed_segments=segments, logprob_mask=mask)` instead (see [`packed_attention_mask`]); then the first token of
    each completion is predicted from the prompt's last token. Called without `logprob_mask` the forward is unchanged
    (generation, saving and evaluation work as before). A PEFT wrapper passes the arguments through to the patched
    model. Calling it again only updates `chunk_size`.

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
