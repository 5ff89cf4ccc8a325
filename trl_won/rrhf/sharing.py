"""Prompt sharing for RRHF: each prompt goes through the model once per step, however many completions it has.

A batch from [`DataCollatorForRRHF`] holds one row per completion, `prompt + completion_i`. [`pack_shared_prompts`]
rewrites it as one row per prompt, `[prompt, completion_1, ..., completion_k]`, with position ids that make each
completion continue from the prompt's length and segment ids from which the model's patched forward builds a block
attention mask (each completion attends to the prompt and causally to itself; see
[`~trl_won.logprobs.packed_attention_mask`]). A group then costs `P + sum_i R_i` tokens instead of `k P + sum_i R_i`,
in activations as well as in FLOPs, and gives the same log-probabilities: the prompt's hidden states are exactly those
every completion would see, and gradients flow back through them from every completion.
"""

from dataclasses import dataclass

import torch
from trl.trainer.utils import pad

from ..logprobs import add_logprob_forward, deterministic_mode
from ..models import unwrap_peft


# Attention implementations that take an arbitrary 4D additive mask; flash-attention kernels only take padding.
SUPPORTED_ATTENTION = ("eager", "sdpa")


@dataclass
class PackedBatch:
    """One row per prompt: `input_ids`, `position_ids`, `packed_segments`, `logprob_mask` (`(num_prompts, len)`),
    and `source` (`(num_completions, seq_len)`): the flat index, in the packed rows, of each token of the unpacked
    batch (-1 for tokens that are not in the packed rows: padding and the prompt copies of rows after the first)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    packed_segments: torch.Tensor
    logprob_mask: torch.Tensor
    source: torch.Tensor

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "packed_segments": self.packed_segments,
            "logprob_mask": self.logprob_mask,
        }

    def unpack(self, token_logps: torch.Tensor) -> torch.Tensor:
        """Per-token log-probs of the packed rows, laid out as the unpacked batch (zero where nothing is scored)."""
        flat = token_logps.reshape(-1)
        return torch.where(self.source >= 0, flat[self.source.clamp(min=0)], flat.new_zeros(()))


def pack_shared_prompts(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    group_ids: torch.Tensor,
    pad_token_id: int = 0,
) -> PackedBatch | None:
    """Pack the rows of each prompt into one row `[prompt, completion_1, ..., completion_k]`.

    The shared prompt of a group is the longest prefix that all of its rows agree on and that holds no scored token.
    Returns `None` when the batch cannot be packed: a row that is not right-padded, or a group without a shared
    prompt token (its first completion token would have nothing to be predicted from).

    Args:
        input_ids (`torch.LongTensor` of shape `(num_completions, seq_len)`):
            The unpacked batch (one row per completion, `prompt + completion`), right-padded.
        attention_mask (`torch.Tensor` of shape `(num_completions, seq_len)`):
            1 on the tokens, 0 on the padding.
        completion_mask (`torch.Tensor` of shape `(num_completions, seq_len)`):
            1 on the scored completion tokens.
        group_ids (`torch.LongTensor` of shape `(num_completions,)`):
            The prompt index of each row, in `[0, num_prompts)`.
        pad_token_id (`int`, *optional*, defaults to `0`):
            Token id written in the padding of the packed rows.
    """
    device = input_ids.device
    num_rows, seq_len = input_ids.shape
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(seq_len, device=device)
    if not torch.equal(attention_mask.bool(), positions < lengths.unsqueeze(1)):
        return None
    scored = completion_mask.bool() & attention_mask.bool()
    first_scored = torch.where(scored, positions, seq_len).amin(dim=1)
    lengths_list, first_list, groups = lengths.tolist(), first_scored.tolist(), group_ids.tolist()
    members: dict[int, list[int]] = {}
    for row, group in enumerate(groups):
        members.setdefault(group, []).append(row)

    # For each packed row: the flat index in the unpacked batch of each of its tokens, their positions and segments.
    sources, positions_, segments = [], [], []
    for group in sorted(members):
        rows = members[group]
        first = rows[0]
        same = (input_ids[rows] == input_ids[first]) & attention_mask[rows].bool()
        common = int(same.all(dim=0).long().cumprod(dim=0).sum())
        prompt_length = min(common, *(first_list[row] for row in rows), *(lengths_list[row] for row in rows))
        if prompt_length < 1:
            return None
        row_sources, row_positions = [torch.arange(prompt_length) + first * seq_len], [torch.arange(prompt_length)]
        row_segments = [torch.zeros(prompt_length, dtype=torch.long)]
        for segment, row in enumerate(rows, start=1):
            cols = torch.arange(prompt_length, lengths_list[row])
            row_sources.append(cols + row * seq_len)
            row_positions.append(cols)
            row_segments.append(torch.full((len(cols),), segment, dtype=torch.long))
        sources.append(torch.cat(row_sources))
        positions_.append(torch.cat(row_positions))
        segments.append(torch.cat(row_segments))

    source = pad(sources, padding_value=-1).to(device)
    position_ids = pad(positions_, padding_value=0).to(device)
    packed_segments = pad(segments, padding_value=-1).to(device)
    valid = source >= 0
    gather = source.clamp(min=0)
    packed_ids = torch.where(valid, input_ids.reshape(-1)[gather], pad_token_id)
    logprob_mask = torch.where(valid, scored.reshape(-1)[gather], False).long()
    unpacked = torch.full((num_rows * seq_len,), -1, dtype=torch.long, device=device)
    unpacked[source[valid]] = torch.arange(source.numel(), device=device).view_as(source)[valid]
    return PackedBatch(
        input_ids=packed_ids,
        position_ids=position_ids,
        packed_segments=packed_segments,
        logprob_mask=logprob_mask,
        source=unpacked.view(num_rows, seq_len),
    )


# What one (query, key) pair of a dense masked attention costs per hidden unit, against one multiply-add per weight of
# a linear layer per token. The attention with a 4D mask runs the unfused path (mask, softmax and both products over
# every pair, memory-bound on a CPU): on the CPU benchmark's default shape (P=64, R=128, k=8, hidden 256) packing made
# a step 1.6x slower although it saves 29% of the tokens, so pairs are weighted well above their FLOPs.
ATTENTION_PAIR_WEIGHT = 8


def packing_pays_off(config, unpacked_shape: tuple[int, int], packed_shape: tuple[int, int]) -> bool:
    """Whether the packed batch (`(rows, length)`) is estimated cheaper than the unpacked one.

    Packing runs each prompt once (fewer tokens through every linear layer) but makes rows longer, and a dense masked
    attention costs `length**2` per row: with long prompts and short completions (real RLHF data) packing wins by far;
    with short prompts and long completions it can lose. Both give the same log-probabilities, so the trainer takes
    the cheaper one per batch. Cost per layer: `tokens * (4 h^2 + 3 h I) + rows * length^2 * 2 h * W` with hidden size
    `h`, MLP size `I` and `W = ATTENTION_PAIR_WEIGHT`.
    """
    text = config.get_text_config()
    hidden = text.hidden_size
    intermediate = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
    per_token = 4 * hidden * hidden + 3 * hidden * intermediate
    per_pair = 2 * hidden * ATTENTION_PAIR_WEIGHT

    def cost(rows: int, length: int) -> int:
        return rows * length * per_token + rows * length * length * per_pair

    return cost(*packed_shape) < cost(*unpacked_shape)


def _attention_implementation(model) -> str | None:
    config = unwrap_peft(model).config
    return getattr(config.get_text_config(), "_attn_implementation", None) or getattr(
        config, "_attn_implementation", None
    )


@torch.no_grad()
def check_prompt_sharing(model, pad_token_id: int = 0) -> str | None:
    """Why `model` cannot share prompts, or `None` when it can.

    Besides the attention implementation (only `eager` and `sdpa` take the block mask), this runs a tiny batch of two
    prompts with ragged completions both ways, unpacked and packed, without gradient, and compares the
    log-probabilities: an architecture that builds positions or attention biases from the 2D padding mask (ALiBi,
    for instance) or that mixes in other kinds of layers fails here instead of training on wrong log-probabilities.
    """
    inner = unwrap_peft(model)
    architecture = type(inner).__name__
    implementation = _attention_implementation(model)
    if implementation not in SUPPORTED_ATTENTION:
        return (
            f"{architecture} uses attn_implementation={implementation!r}, which cannot take the block attention "
            f"mask of a packed prompt group (supported: {', '.join(SUPPORTED_ATTENTION)})"
        )
    add_logprob_forward(model, getattr(inner, "_trl_won_chunk_size", None))
    text_config = inner.config.get_text_config()
    vocab_size = min(text_config.vocab_size, 1000)
    generator = torch.Generator().manual_seed(0)

    def tokens(n):
        return torch.randint(0, vocab_size, (n,), generator=generator).tolist()

    groups = [(tokens(6), [tokens(3), tokens(1), tokens(4)]), (tokens(3), [tokens(2), tokens(5)])]
    sequences, masks, group_ids = [], [], []
    for group, (prompt, completions) in enumerate(groups):
        for completion in completions:
            sequences.append(prompt + completion)
            masks.append([0] * len(prompt) + [1] * len(completion))
            group_ids.append(group)
    device = inner.get_input_embeddings().weight.device
    input_ids = pad([torch.tensor(s) for s in sequences], pad_token_id).to(device)
    attention_mask = pad([torch.ones(len(s), dtype=torch.long) for s in sequences], 0).to(device)
    completion_mask = pad([torch.tensor(m) for m in masks], 0).to(device)
    packed = pack_shared_prompts(
        input_ids, attention_mask, completion_mask, torch.tensor(group_ids, device=device), pad_token_id
    )
    try:
        with deterministic_mode(model):  # no dropout: both runs see the same function
            expected = model(
                input_ids=input_ids, attention_mask=attention_mask, logprob_mask=completion_mask
            ).token_logps
            shared = packed.unpack(model(**packed.model_inputs()).token_logps)
    except Exception as error:  # any architecture-specific failure means: do not share
        return f"{architecture} failed on a packed prompt group ({type(error).__name__}: {error})"
    dtype = inner.get_input_embeddings().weight.dtype
    tolerance = max(1e-4, 8 * torch.finfo(dtype).eps) if dtype.is_floating_point else 1e-4
    difference = float((shared - expected).abs().max())
    if not difference <= tolerance:
        return (
            f"{architecture} gives different log-probabilities for a packed prompt group than for separate "
            f"sequences (max difference {difference:.3g} > {tolerance:.3g}); it probably derives positions or "
            "attention biases from the padding mask"
        )
    return None
