"""What the student is distilled towards: the uncompressed teacher's outputs, per step or cached.

The teacher runs without gradients, in float32 or (``--teacher-precision bf16``) with its linear
layers in bfloat16. It supplies targets only: its own evaluation always runs in float32.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import CALoRASettings, TeacherOutputs, TeacherPrecision
from .data import Collator, Encoded, forward_batch


def bf16_twin(teacher: nn.Module) -> nn.Module:
    """A copy of `teacher` for its bfloat16 forward pass: every linear layer's weight and bias are
    bfloat16 tensors made once, everything else (embeddings, norms, buffers) is shared with
    `teacher`, not copied. Under bfloat16 autocast it computes what the teacher computes there,
    value for value, without autocast re-casting each frozen weight on every call (it caches
    casts of trainable weights only): 1.27x faster on SmolLM2-135M at 2 CPU threads. A linear
    tied to an embedding (an LM head) gets its own bfloat16 weight, so the input embeddings and the
    residual stream stay float32, as under autocast."""
    memo: dict[int, object] = {}
    for m in teacher.modules():
        if isinstance(m, nn.Linear):
            for p in (m.weight, m.bias):
                if p is not None and id(p) not in memo:
                    memo[id(p)] = nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
    embeddings = {id(m.weight) for m in teacher.modules() if isinstance(m, nn.Embedding)}
    twin_of = dict(memo)
    for i in embeddings:  # shared as float32; a tied head is untied below
        memo.pop(i, None)
    for t in list(teacher.parameters()) + list(teacher.buffers()):
        memo.setdefault(id(t), t)
    twin = copy.deepcopy(teacher, memo)
    for m in twin.modules():
        if isinstance(m, nn.Linear) and id(m.weight) in embeddings:
            m.weight = twin_of[id(m.weight)]
    return twin.eval()


def _autocast(precision: TeacherPrecision, accelerator):
    """The context the teacher's forward pass runs in: the training's own (accelerate's autocast,
    a no-op at --mixed-precision no) or bfloat16 autocast on the teacher's device."""
    if precision != TeacherPrecision.BF16:
        return accelerator.autocast
    device = accelerator.device.type
    native = (torch.cuda.is_bf16_supported() if device == "cuda"
              else device != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if not native and accelerator.is_main_process:
        print(f"[calora] --teacher-precision bf16: this {device.upper()} has no native bfloat16 matmuls, so the "
              "teacher may run slower than in float32", flush=True)
    return lambda: torch.autocast(device, dtype=torch.bfloat16)


class TeacherTargets:
    """Final hidden states (and logits) of the teacher, computed per step or cached once."""

    def __init__(self, teacher: nn.Module, mode: TeacherOutputs, device, autocast) -> None:
        self.teacher, self.mode, self.device, self.autocast = teacher, mode, device, autocast
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def build(cls, teacher: nn.Module, calora: CALoRASettings, accelerator) -> "TeacherTargets":
        """The targets of `calora`'s settings for `teacher`, already on `accelerator`'s device."""
        autocast = _autocast(calora.teacher_precision, accelerator)
        if calora.teacher_precision == TeacherPrecision.BF16:
            teacher = bf16_twin(teacher)
        return cls(teacher, calora.teacher_outputs, accelerator.device, autocast)

    @torch.no_grad()
    def fill(self, dataset: Encoded, batch_size: int, show: bool) -> None:
        # Batches of similar length (as training and `predict` use): in dataset order, every batch
        # was padded to its longest text, which made the fill cost several online teacher passes.
        order = sorted(range(len(dataset)), key=lambda i: len(dataset.input_ids[i]))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=Collator(dataset.pad_id))
        for batch in tqdm(loader, desc="teacher cache", disable=not show, leave=False):
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with self.autocast():
                out = forward_batch(self.teacher, batch, True)
            for row, idx in enumerate(batch["index"].tolist()):
                n = int(batch["attention_mask"][row].sum())
                self.cache[idx] = (out.hidden_states[-1][row, :n].float().cpu(), out.logits[row].float().cpu())

    @torch.no_grad()
    def __call__(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == TeacherOutputs.ONLINE:
            with self.autocast():
                out = forward_batch(self.teacher, batch, True)
            return out.hidden_states[-1], out.logits
        width = batch["input_ids"].shape[1]
        hid = torch.zeros(batch["input_ids"].shape[0], width, self.cache[0][0].shape[-1])
        logits = []
        for row, idx in enumerate(batch["index"].tolist()):
            h, lg = self.cache[idx]
            hid[row, : h.shape[0]] = h
            logits.append(lg)
        return hid.to(self.device), torch.stack(logits).to(self.device)
