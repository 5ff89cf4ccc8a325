"""What identifies a thing across runs: a SHA-256 of its canonical JSON, or a digest of a model's weights.

Every stored key of the package is made here: a judge's fingerprint and a label's content key in a
[`~trl_won.rlaif.LabelStore`], the key of RRHF's saved rewards, the prompts of a West-of-N manifest. Each key is
persisted, so the bytes hashed for it never change; the options of [`json_sha256`] exist only to keep each key's bytes
as they have always been.
"""

import hashlib
import json
from collections.abc import Callable
from typing import Any


def json_sha256(
    *values: Any,
    compact: bool = False,
    ensure_ascii: bool = False,
    default: Callable[[Any], Any] | None = None,
    terminator: str = "",
) -> str:
    """The SHA-256 (hex) of the JSON of each of `values` in turn, with sorted keys, encoded as UTF-8.

    Args:
        *values:
            JSON-serializable values, hashed one after the other (a tuple hashes as a JSON list).
        compact (`bool`, *optional*, defaults to `False`):
            Write JSON without spaces (`separators=(",", ":")`) instead of `json.dumps`'s default `", "` and `": "`.
        ensure_ascii (`bool`, *optional*, defaults to `False`):
            Escape non-ASCII characters (`\\uXXXX`) instead of hashing them as UTF-8.
        default (`Callable`, *optional*):
            `json.dumps`'s `default`: what to write for a value JSON cannot (for instance `str`).
        terminator (`str`, *optional*, defaults to `""`):
            Text hashed after each value (for instance `"\\n"`, so that a sequence hashes like JSON lines).

    Returns:
        `str`: 64 hexadecimal digits.
    """
    separators = (",", ":") if compact else None
    digest = hashlib.sha256()
    for value in values:
        text = json.dumps(value, sort_keys=True, ensure_ascii=ensure_ascii, separators=separators, default=default)
        digest.update((text + terminator).encode("utf-8"))
    return digest.hexdigest()


def weights_digest(model, samples_per_tensor: int = 64) -> str:
    """A short hash that changes when the model's weights change, cheap enough for any model size.

    Hashes every tensor's name and shape and `samples_per_tensor` evenly strided values of it (any training step
    changes nearly every weight, so sampled values tell checkpoints apart without reading all of them).

    Returns:
        `str`: 16 hexadecimal digits.
    """
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::step][:samples_per_tensor].to(device="cpu", dtype=torch.float32)
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
