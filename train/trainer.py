"""The training loop (accelerate: CPU, one GPU, or `accelerate launch` on several) and evaluation.

Only the trainable tensors (LoRA, recovery, task head) are checkpointed, with the optimizer,
scheduler and step, so a killed run resumes where it stopped at the cost of a few megabytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import CALoRASettings, TeacherOutputs, TeacherPrecision, TrainSettings, flag
from .errors import ArtifactError, CheckpointMismatchError, TrainingDivergedError
from .data import Collator, Encoded, LengthGroupedBatches, forward_batch
from .teacher_targets import TeacherTargets

CHECKPOINT = "checkpoint.pt"
#: How the checkpoint settings that are not TrainSettings fields are named in messages (the fields
#: themselves are named by their CLI flag, from config's field metadata).
_OTHER_SETTINGS = {"processes": "number of processes (accelerate launch)",
                   "trainable": "trainable tensors (ranks, targets, --lora-rank/--recovery-rank)",
                   "calora": "CA-LoRA switches, --distill-* and --teacher-* settings",
                   "train_data": "training data (--data, --task)"}

@dataclasses.dataclass
class FitResult:
    steps: int
    seconds: float
    resumed_from_step: int
    last_loss: float


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per element over real (non-padding) tokens: zero iff they agree there."""
    m = mask.unsqueeze(-1).to(student.dtype)
    diff = (student.float() - teacher.float()) ** 2 * m
    return diff.sum() / (m.sum() * student.shape[-1]).clamp(min=1)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _distill_settings(calora: CALoRASettings) -> tuple:
    out = (calora.distill, calora.distill_alpha, calora.distill_logits, calora.teacher_outputs.value,
           calora.kl_temperature, calora.distill_hidden)
    # appended only when not the default, so checkpoints written before the flag existed still resume
    if calora.teacher_precision != TeacherPrecision.TRAINING:
        out += (calora.teacher_precision.value,)
    return out


def run_settings(model: nn.Module, train_set: Encoded, settings: TrainSettings, calora: CALoRASettings | None,
                 processes: int) -> dict:
    """What a checkpoint must have been made with for this run to resume from it."""
    import hashlib

    data = hashlib.sha256(repr((train_set.input_ids, train_set.labels)).encode()).hexdigest()[:16]
    trainable = hashlib.sha256(repr(sorted((n, tuple(p.shape)) for n, p in model.named_parameters()
                                           if p.requires_grad)).encode()).hexdigest()[:16]
    keys = ("lr", "epochs", "batch_size", "max_length", "seed", "weight_decay", "warmup_ratio", "max_train_examples")
    out = {k: getattr(settings, k) for k in keys}
    out |= {"mixed_precision": settings.mixed_precision.value, "processes": processes, "trainable": trainable,
            "train_data": data,
            "calora": None if calora is None else repr(_distill_settings(calora))}
    return out


def _load_checkpoint(ckpt: Path, want: dict) -> dict:
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/EOFError/pickle errors for bad files
        raise ArtifactError(f"{ckpt}: checkpoint is corrupt or truncated ({type(exc).__name__}); delete it or pass "
                            "--restart to start this training from scratch") from None
    if not isinstance(state, dict) or not {"params", "optimizer", "scheduler", "step"} <= set(state):
        raise ArtifactError(f"{ckpt}: not a calora checkpoint; pass --restart to start from scratch")
    got = state.get("settings")
    if got != want:
        got = got or {}
        diff = [f"{_OTHER_SETTINGS.get(k) or flag(TrainSettings, k)} {got.get(k, 'unrecorded')!r} -> {want[k]!r}"
                for k in want if got.get(k) != want[k]]
        raise CheckpointMismatchError(f"{ckpt}: checkpoint of an earlier run with other settings "
                                      f"({'; '.join(diff)}); rerun with the same settings to resume, or pass "
                                      "--restart to start fresh")
    return state


def fit(model: nn.Module, train_set: Encoded, settings: TrainSettings, run_dir: Path, *,
        teacher: nn.Module | None = None, calora: CALoRASettings | None = None, desc: str = "train",
        restart: bool = False, objective=None) -> FitResult:
    """Train `model`'s trainable parameters on `train_set` (cross-entropy, plus distillation to
    `teacher` when given). Resumes from ``run_dir/checkpoint.pt`` if a previous run left one made
    with the same settings (else refuses, naming what differs; `restart` discards it). Raises
    `TrainingDivergedError` on the first non-finite loss or weight. `objective` is the task kind's
    losses (default: classification's)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .processes import force_cpu

    accelerator = Accelerator(mixed_precision=settings.mixed_precision.value, cpu=force_cpu())
    set_seed(settings.seed)
    show = accelerator.is_local_main_process
    sampler = LengthGroupedBatches([len(x) for x in train_set.input_ids], settings.batch_size, settings.seed)
    if objective is None:
        from .kind_classify import ClassifyObjective

        objective = ClassifyObjective()
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=train_set.collator())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / settings.batch_size / accelerator.num_processes)
    total = max(1, int(round(settings.epochs * steps_per_epoch)))
    scheduler = linear_schedule(optimizer, settings.warmup_ratio, total, accelerator.num_processes)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    targets = None
    if teacher is not None and calora is not None and calora.distill:
        teacher.to(accelerator.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        targets = TeacherTargets.build(teacher, calora, accelerator)
        if calora.teacher_outputs == TeacherOutputs.CACHE:
            targets.fill(train_set, settings.eval_batch_size, show)

    ckpt = Path(run_dir) / CHECKPOINT
    want = run_settings(accelerator.unwrap_model(model), train_set, settings, calora, accelerator.num_processes)
    for stale in Path(run_dir).glob(f"{CHECKPOINT}.tmp*"):  # a kill during a checkpoint write
        stale.unlink(missing_ok=True)
    if restart and ckpt.is_file() and accelerator.is_main_process:
        ckpt.unlink()
        print(f"[calora] --restart: discarded {ckpt}", flush=True)
    step = 0
    if ckpt.is_file():
        state = _load_checkpoint(ckpt, want)
        result = accelerator.unwrap_model(model).load_state_dict(state["params"], strict=False)
        if result.unexpected_keys:
            raise ArtifactError(f"{ckpt}: checkpoint does not match this model ({result.unexpected_keys[:3]})")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        print(f"[calora] resuming {desc} from {ckpt} at step {step}", flush=True)
        torch.set_rng_state(state["rng"])
    resumed = step

    start = time.perf_counter()
    bar = tqdm(total=total, initial=step, desc=desc, disable=not show, dynamic_ncols=True)
    model.train()
    loss_value = float("nan")
    epoch = step // steps_per_epoch
    while step < total:
        # accelerate's loader keeps its own epoch counter and pushes it into the sampler when it
        # iterates; set both, or a resumed run would replay an earlier epoch's batch order.
        sampler.set_epoch(epoch)
        loader.set_epoch(epoch)
        skip = step - epoch * steps_per_epoch
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in batches:
            with accelerator.autocast():
                out = forward_batch(model, batch, targets is not None and objective.needs_hidden(calora))
                loss = ce = objective.task_loss(out, batch)
                mse = torch.zeros(())
                if targets is not None:
                    t_hidden, t_logits = targets(batch)
                    mse = objective.distill_loss(out, t_hidden, t_logits, batch, calora)
                    loss = ce + calora.distill_alpha * mse
            if not torch.isfinite(loss.detach()):
                raise TrainingDivergedError(
                    f"{desc}: the loss is {float(loss.detach())} at step {step + 1} of {total} (--lr {settings.lr:g}); "
                    "nothing was saved. Lower --lr, or check the data")
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_value = float(loss.detach())
            bar.update(1)
            bar.set_postfix(ce=f"{float(ce.detach()):.3f}", mse=f"{float(mse.detach()):.4f}", refresh=False)
            if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < total:
                _check_finite(model, desc, step)
                _save_checkpoint(accelerator, model, optimizer, scheduler, step, ckpt, want)
            if step >= total:
                break
        epoch += 1
    bar.close()
    accelerator.wait_for_everyone()
    _check_finite(model, desc, step)
    if accelerator.is_main_process:
        ckpt.unlink(missing_ok=True)  # finished: the task directory now holds the result
        with contextlib.suppress(OSError):
            Path(run_dir).rmdir()  # only if empty: never anything but calora's own checkpoint folder
    model = accelerator.unwrap_model(model)
    model.eval()
    return FitResult(step, time.perf_counter() - start, resumed, loss_value)


def linear_schedule(optimizer, warmup_ratio: float, total: int, processes: int):
    """Linear warm-up then decay to zero over `total` optimizer steps, in the units accelerate steps
    a prepared scheduler in: once per process per optimizer step (it assumes a schedule sized for
    one process's loader). Sized in optimizer steps alone, a 2-process run decayed twice as fast
    and trained its second half at learning rate zero."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total) * processes, total * processes)


def _check_finite(model: nn.Module, desc: str, step: int) -> None:
    bad = [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p.detach()).all()]
    if bad:
        raise TrainingDivergedError(f"{desc}: trainable weights are not finite after step {step} ({bad[0]}"
                                    f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); nothing was saved. "
                                    "Lower --lr, or check the data")


def _save_checkpoint(accelerator, model, optimizer, scheduler, step, path: Path, settings: dict) -> None:
    if not accelerator.is_main_process:
        return
    state = {"params": trainable_state(accelerator.unwrap_model(model)), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step, "rng": torch.get_rng_state(), "settings": settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # a kill during the write leaves the previous checkpoint intact
    finally:
        tmp.unlink(missing_ok=True)


@torch.no_grad()
def predict(model: nn.Module, dataset: Encoded, batch_size: int, show: bool = True, desc: str = "eval",
            pad_to: int | None = None) -> torch.Tensor:
    """Logits for every example of `dataset`, in order (CPU float32). `pad_to` pads every row to
    that length, as the exported artifacts are fed (a compressed model is padding-dependent)."""
    device = next(model.parameters()).device
    model.eval()
    # Batches of similar length waste less compute on padding; results go back in input order.
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.input_ids[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=Collator(dataset.pad_id, pad_to))
    out = torch.zeros(len(dataset), 0)
    for batch in tqdm(loader, desc=desc, disable=not show, leave=False):
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits.float().cpu()
        if out.shape[1] == 0:
            out = torch.zeros(len(dataset), logits.shape[1])
        out[batch["index"]] = logits
    return out


def metrics(logits: torch.Tensor, labels: list[int], num_labels: int) -> dict[str, float]:
    """Accuracy and macro F1 (the one to read when classes are unbalanced, e.g. SMS spam)."""
    pred = logits.argmax(-1)
    y = torch.tensor(labels)
    f1s = []
    for c in range(num_labels):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float((pred == y).float().mean()), "f1_macro": sum(f1s) / len(f1s), "examples": len(labels),
            "predicted_classes": int(pred.unique().numel()), "true_classes": int(y.unique().numel())}
