"""The ``classify`` task kind: text -> label with a sequence classifier (what calora did first)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from .kinds import KindName


class ClassifyObjective:
    """Cross-entropy on the head's logits; distillation: per-element MSE of the final hidden states
    over real tokens (the CA-LoRA paper's choice), optionally + MSE of the logits."""

    def needs_hidden(self, calora) -> bool:
        return True

    def task_loss(self, out, batch) -> torch.Tensor:
        return F.cross_entropy(out.logits.float(), batch["labels"])

    def distill_loss(self, out, t_hidden, t_logits, batch, calora) -> torch.Tensor:
        from .trainer import masked_mse

        loss = masked_mse(out.hidden_states[-1], t_hidden, batch["attention_mask"])
        if calora.distill_logits:
            loss = loss + F.mse_loss(out.logits.float(), t_logits.float())
        return loss


class Classify:
    name: ClassVar[KindName] = KindName.CLASSIFY
    peft_task_type: ClassVar[str] = "SEQ_CLS"
    #: (header, split, metric key, shown as %) of the results tables
    columns: ClassVar[list] = [("val acc (%)", "validation", "accuracy", True), ("test acc (%)", "test", "accuracy", True),
                               ("test macro-F1 (%)", "test", "f1_macro", True)]
    objective = ClassifyObjective()

    def load_task(self, cfg):
        from .tasks import load_task

        return load_task(cfg.task, cfg.data, cfg.text_column, cfg.label_column,
                         labels=list(cfg.labels) if cfg.labels else None)

    def load_recorded(self, name: str, task_record: dict):
        from .tasks import load_recorded

        return load_recorded(name, task_record["record"], list(task_record["label_names"]))

    def encode(self, cfg, task, tokenizer) -> dict:
        from .data import Encoded

        t = cfg.train
        return {"train": Encoded(task.splits["train"], tokenizer, t.max_length, t.max_train_examples),
                "validation": Encoded(task.splits["validation"], tokenizer, t.max_length, t.max_eval_examples),
                "test": Encoded(task.splits["test"], tokenizer, t.max_length, t.max_eval_examples)}

    def load_model(self, source: str, task_record: dict, seed: int, tokenizer):
        from .backbones import load_classifier

        return load_classifier(source, len(task_record["label_names"]), seed, tokenizer.pad_token_id)

    def evaluate(self, model, ctx, name: str, splits=("validation", "test")) -> dict:
        from .trainer import metrics, predict

        out = {}
        for split in splits:
            logits = predict(model, ctx.sets[split], ctx.cfg.train.eval_batch_size, desc=f"{name}/{split}",
                             pad_to=ctx.cfg.train.max_length)
            out[split] = metrics(logits, ctx.sets[split].labels, ctx.task.num_labels)
        return out

    def summary(self, rows: list[tuple[str, dict]]) -> str:
        lines = [f"{'model':<42} {'val acc':>8} {'test acc':>9} {'test F1':>8}"]
        for name, m in rows:
            lines.append(f"{name:<42} {m['validation']['accuracy']:>8.4f} {m['test']['accuracy']:>9.4f} "
                         f"{m['test']['f1_macro']:>8.4f}")
        return "\n".join(lines)
