"""One RRHF step (shared prompts) under FSDP2 (`fully_shard`, gloo on CPU); run by tests/test_rrhf_distributed.py.

With `python` it computes the whole batch in one process on the plain model, with `share_prompt` as given. Under
`torchrun --nproc_per_node 2` each process shards the model (every decoder layer and the root) with `fully_shard`
and computes the shared-prompt loss of its half of the prompts, scaled as `RRHFTrainer` scales it (sum over its
prompts / all prompts of the step). Rank 0 saves the step's loss and the full (unsharded) gradients.
"""

import argparse
import os

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import exit_distributed_script
from trl_won.logprobs import add_logprob_forward
from trl_won.models import unwrap_peft
from trl_won.rrhf.data import DataCollatorForRRHF, tokenize_row
from trl_won.rrhf.loss import rrhf_loss
from trl_won.rrhf.sharing import pack_shared_prompts
from trl_won.tiny import toy_ranking_dataset


parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--output", required=True)
parser.add_argument("--share_prompt", type=int, default=1)
parser.add_argument("--lora", type=int, default=0, help="Train a LoRA adapter (frozen LM head: its frozen-head path).")
cli = parser.parse_args()

distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
if distributed:
    dist.init_process_group("gloo")
rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)

torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(cli.model)
model = AutoModelForCausalLM.from_pretrained(cli.model, dtype=torch.float32).eval()  # eval: no dropout
if cli.lora:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
add_logprob_forward(model, chunk_size=7)
if distributed:
    from torch.distributed.fsdp import fully_shard

    for layer in unwrap_peft(model).model.layers:
        fully_shard(layer)
    fully_shard(model)

rows = [
    tokenize_row(example, i, tokenizer, max_length=None, max_completions=None)
    for i, example in enumerate(toy_ranking_dataset())
]
mine = rows[rank::world]  # each process its share of the prompts
batch = DataCollatorForRRHF(tokenizer.pad_token_id)(mine)
if cli.share_prompt:
    packed = pack_shared_prompts(
        batch["input_ids"], batch["attention_mask"], batch["completion_mask"], batch["group_ids"]
    )
    token_logps = packed.unpack(model(**packed.model_inputs()).token_logps)
else:
    token_logps = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logprob_mask=batch["completion_mask"]
    ).token_logps
out = rrhf_loss(token_logps, batch["completion_mask"], batch["rewards"], batch["group_ids"], len(mine))
loss = out.loss.sum() / len(rows)
# FSDP2 reduce-scatters gradients as an average over processes; scale so the average is the gradient of `loss`.
(loss * world).backward()

total = loss.detach().clone()
if distributed:
    dist.all_reduce(total)
grads = {}
for name, param in model.named_parameters():
    grad = param.grad
    if grad is not None and hasattr(grad, "full_tensor"):
        grad = grad.full_tensor()
    if grad is not None:
        grads[name] = grad.detach().clone()
if rank == 0:
    torch.save({"loss": total, "grads": grads, "world": world}, cli.output)
exit_distributed_script()
