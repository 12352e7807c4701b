"""Prototype, not product code (2026-12-06): an ExecuTorch baked program of the dense task whose LoRA
and recovery branches are grouped by shared input, to measure what fewer, larger adapter products
would save per decode step (the branches cost 26% of a step at 2 threads: et_branch_cost.json).

Per decoder layer, the linears that read the same input (q/k/v, o, gate/up, down) get one branch:

    h = act(x @ Down^T) once per group; member i adds h @ Up_i^T

Down stacks each member's recovery down-projection D and, for members with LoRA, s*A and -s*A;
each member's up product holds its [U, B, -B] and zeros in the other members' columns (the
rows of a block-diagonal matrix), so no split is needed. The LoRA part rides on the activation:
act(z) - act(-z) = z for GELU (z * Phi(z), Phi(-z) = 1 - Phi(z)), ReLU and SiLU, so
act(x sA) B - act(-x sA) B = s (x A) B exactly in real arithmetic. Per layer 4 down products and
7 up products, instead of 7 recovery and 2 LoRA branches (18 products); the up
products store zeros (bytes a product version would have to avoid).

    python grouped_branches_executorch.py RUNS TASK OUT.pte [REFERENCE.pte]

Writes the program, prints the largest logit difference between the grouped and ungrouped model
in PyTorch (float activations) and, given REFERENCE.pte (the bundle's program), between the two
programs on one prompt.
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from calora.export.decoder import StaticCache, decoder_shape
from calora.export.job import load_job
from calora.targets import get_target
from calora.targets.executorch_llm import _untie_head, lower, metadata
from calora.train.adapters import AdaptedLinear

GROUPS = (("self_attn", ("q_proj", "k_proj", "v_proj")), ("self_attn", ("o_proj",)),
          ("mlp", ("gate_proj", "up_proj")), ("mlp", ("down_proj",)))


class GroupBranch(nn.Module):
    """The activated down product of a group's members, computed once per input: members are called
    one by one with the same input tensor; the first call computes, the others reuse."""

    def __init__(self, members: list[AdaptedLinear]) -> None:
        super().__init__()
        downs, ups = [], []
        act = None
        for m in members:
            rows, cols = [], []
            if m.recovery is not None:
                rows.append(m.recovery.down.weight.detach())
                cols.append(m.recovery.up.weight.detach())
                act = m.recovery.act
            if m.lora_A is not None:
                a = m.lora_A.weight.detach() * m.scaling
                rows += [a, -a]
                cols += [m.lora_B.weight.detach(), -m.lora_B.weight.detach()]
            downs.append(torch.cat(rows))
            ups.append(torch.cat(cols, dim=1))
        self.act = act
        self.down = nn.Parameter(torch.cat(downs), requires_grad=False)
        # Each member's up product reads the whole activated vector, zeros outside its own columns:
        # no split of the activations, which XNNPACK does not take (the split version ran the splits
        # as portable ops between delegates: 242 delegate calls per step against 122).
        full = torch.block_diag(*ups)
        bounds = torch.tensor([0] + [u.shape[0] for u in ups]).cumsum(0).tolist()
        self.ups = nn.ParameterList([nn.Parameter(full[bounds[i]:bounds[i + 1]].clone(), requires_grad=False)
                                     for i in range(len(ups))])
        self._last = None

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        if self._last is None or self._last[0] is not x:
            self._last = (x, self.act(F.linear(x, self.down)))
        return self._last[1]


class Member(nn.Module):
    def __init__(self, base: nn.Module, group: GroupBranch, index: int) -> None:
        super().__init__()
        self.base, self.group, self.index = base, group, index

    def forward(self, x):
        return self.base(x) + F.linear(self.group.hidden(x), self.group.ups[self.index])


def group_branches(model: nn.Module) -> int:
    n = 0
    for layer in model.model.layers:
        for parent_name, names in GROUPS:
            parent = getattr(layer, parent_name)
            members = [getattr(parent, k) for k in names]
            if not all(isinstance(m, AdaptedLinear) for m in members):
                continue
            group = GroupBranch(members)
            parent.add_module(f"branch_{'_'.join(names)}", group)
            for i, (k, m) in enumerate(zip(names, members)):
                setattr(parent, k, Member(m.base_layer, group, i))
            n += 1
    return n


if __name__ == "__main__":
    runs, task, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    job = load_job(runs, [task], "baked")
    trained = job.tasks[0].model
    shape = decoder_shape(trained, job.max_length)
    target = get_target("executorch")
    model, _, _ = target._prepare(trained, job.spec)
    _untie_head(model, trained, job.spec)
    prompt = list(job.smoke_prompts[0])
    ids = torch.tensor([prompt])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    print("groups:", group_branches(model))
    with torch.no_grad():
        after = model(input_ids=ids).logits
    print("PyTorch max |logit difference| grouped vs ungrouped:", float((after - before).abs().max()))
    data, stats, _ = lower(StaticCache(model, shape), (torch.tensor([prompt[:4]]), torch.tensor([0])), shape,
                           metadata(shape, job.generation))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print("wrote", out, len(data), "bytes;", stats)
    if len(sys.argv) > 4:
        from calora.targets.executorch_llm_runtime import PteSession

        a, b = PteSession(Path(sys.argv[4])), PteSession(out)
        la, lb = a.forward_logits(prompt, []), b.forward_logits(prompt, [])
        print("program max |logit difference| grouped vs bundle:", float(abs(la - lb).max()),
              "argmax agreement:", float((la.argmax(-1) == lb.argmax(-1)).mean()))
