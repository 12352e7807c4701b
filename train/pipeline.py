"""The training stage end to end: task data -> teacher LoRA -> compressed backbone -> CA-LoRA."""

from __future__ import annotations

import dataclasses
import platform
import time
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .adapters import adapted_layers
from .artifacts import SCHEMA_VERSION, attach_recovery, read_json, save_student, write_json
from .backbones import DEFAULT_LORA_TARGETS, family, head_modules, load_tokenizer, resolve
from .compress import (KeptChannels, check_group_sizes, compressible_linears, compress_model, fingerprint,
                       inherit_through_pruning, stored_size)
from .config import CALoRASettings, RunConfig
from .errors import AdapterMismatchError, ConfigError, DegenerateModelError, OutputPathError
from .outputs import AtomicDir, OutputKind, check_output, output_kind, removed_if_unused, write_marker
from .processes import barrier, is_main, num_processes
from .peft_io import LoraAdapter, attach_lora, copy_lora_dir, new_lora_config, read_lora_dir, write_lora_dir
from .kinds import KindName, TaskKind, get_kind
from .loftq import loftq_init
from .tasks import TaskData
from .trainer import fit


@dataclasses.dataclass
class Context:
    """What every model of one run shares: the task, tokenized splits, and the teacher."""

    cfg: RunConfig
    task: object  # TaskData (classify) or GenTaskData (generate)
    tokenizer: object
    sets: dict
    teacher: nn.Module
    teacher_adapter: LoraAdapter
    teacher_metrics: dict
    task_dir: Path
    kind: TaskKind = None  # type: ignore[assignment]
    cache: dict = dataclasses.field(default_factory=dict)  # per-run values a kind keeps (teacher generations)

    def __post_init__(self) -> None:
        if self.kind is None:
            self.kind = get_kind(self.cfg.kind)


#: How every figure calora-train reports is computed: as the exported artifacts run.
EVAL_PADDING = "every row padded to --max-length, as the exported artifacts are fed"


def evaluate(model: nn.Module, ctx: "Context", name: str, splits=("validation", "test")) -> dict:
    """The task kind's metrics of `model` on `splits` (what calora-train prints and records)."""
    return ctx.kind.evaluate(model, ctx, name, splits)


def refuse_degenerate(scores: dict, what: str) -> None:
    """A classifier that answers one class for every validation example (while the split holds
    several) learned nothing usable: an error, never a saved result."""
    val = scores.get("validation", {})
    if val.get("predicted_classes") == 1 and val.get("true_classes", 0) > 1:
        raise DegenerateModelError(
            f"{what} predicts one class for all {val.get('examples')} validation examples (accuracy "
            f"{100 * val.get('accuracy', 0):.1f}%); nothing was saved. Train longer (--epochs), change --lr, or "
            "check that the labels are learnable from the texts")


def task_block(cfg: RunConfig, task, tokenizer, kind: "TaskKind") -> dict:
    """The `task` block of a run's calora_config.json: what later stages need to rebuild the task."""
    block = {"name": task.name, "kind": kind.name.value, "record": task.record, "max_length": cfg.train.max_length,
             "label_names": list(getattr(task, "label_names", ()))}
    if kind.name == KindName.CLASSIFY:
        block["evaluation"] = EVAL_PADDING
    else:
        from .gen_data import PromptFormat

        block |= {"prompt_format": PromptFormat.of(tokenizer).to_dict(),
                  "special_tokens": {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
                                     "pad": tokenizer.pad_token_id},
                  "generation": dataclasses.asdict(cfg.generation) | {"decoding": "greedy"}}
    return block


def check_outputs(cfg: RunConfig) -> Path:
    """Before any model is loaded: OUT/TASK may only be a folder calora trained into (or new), a
    trained result is replaced only with --overwrite, and no input may lie inside it."""
    local_backbone = cfg.backbone if Path(cfg.backbone).expanduser().exists() else None
    task_root = check_output(Path(cfg.out) / cfg.task, OutputKind.TASK, flag="--out", overwrite=True,
                             inputs={"--data": cfg.data, "--teacher": cfg.teacher, "--backbone": local_backbone})
    for part in ("calora", "teacher"):
        p = task_root / part
        if p.exists() and output_kind(p) != OutputKind.MODEL:
            raise OutputPathError(f"--out: {p} exists and calora did not write it; calora never overwrites what it "
                                  "did not write")
    if (task_root / "calora").exists() and not cfg.overwrite:
        raise OutputPathError(f"--out: task {cfg.task!r} is already trained in {task_root / 'calora'}; pass "
                              "--overwrite to train it again (the old result stays until the new one is saved)")
    if is_main():  # several processes: one writes, the others only check
        task_root.mkdir(parents=True, exist_ok=True)
        if output_kind(task_root) is None:
            write_marker(task_root, OutputKind.TASK, "calora-train")
    barrier()
    return task_root


def _check_max_length(cfg: RunConfig, model: nn.Module) -> None:
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and cfg.train.max_length > positions:
        raise ConfigError(f"--max-length {cfg.train.max_length}: the backbone {cfg.backbone!r} has only "
                          f"{positions} positions")


def _import_teacher(cfg: RunConfig, task: TaskData, teacher: nn.Module, adapter: LoraAdapter) -> None:
    """Attach an imported PEFT LoRA, checking its head against the task's classes first."""
    want = get_kind(cfg.kind).peft_task_type
    if adapter.config.task_type and str(adapter.config.task_type) != want:
        raise AdapterMismatchError(f"--teacher {cfg.teacher}: a {adapter.config.task_type} LoRA, but task {cfg.task!r} "
                                   f"is a {cfg.kind} task (needs {want})")
    if not hasattr(task, "label_names"):  # generate: no head, the LM head is the backbone's
        print(f"[calora] imported teacher {cfg.teacher} ({want})", flush=True)
        attach_lora(teacher, adapter.config, adapter.tensors)
        return
    print(f"[calora] imported teacher {cfg.teacher}: head output i = label i of "
          f"{dict(enumerate(task.label_names))}" + ("" if cfg.labels else
                                                     " (sorted label names; pass --labels to give the order "
                                                     "the adapter was trained with)"), flush=True)
    try:
        attach_lora(teacher, adapter.config, adapter.tensors)
    except AdapterMismatchError:
        heads = [k for k in adapter.tensors if k.split(".")[0] in head_modules(teacher) and k.endswith("weight")]
        outs = {tuple(adapter.tensors[k].shape)[0] for k in heads if adapter.tensors[k].ndim == 2}
        if heads and task.num_labels not in outs:
            raise AdapterMismatchError(
                f"--teacher {cfg.teacher}: its classification head has {sorted(outs)[-1]} outputs but task "
                f"{cfg.task!r} has {task.num_labels} labels {list(task.label_names)}; the adapter was trained on "
                "another label set") from None
        raise


def _set_trainable(model: nn.Module) -> int:
    """Freeze everything, then unfreeze LoRA, recovery and the task head. Returns the count."""
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in adapted_layers(model).values():
        for part in (layer.lora_A, layer.lora_B, layer.recovery):
            if part is not None:
                for p in part.parameters():
                    p.requires_grad_(True)
    for head in head_modules(model):
        for p in getattr(model, head).parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def prepare(cfg: RunConfig) -> Context:
    """Load the task and the teacher (imported, reused from a previous run, or trained now)."""
    imported = read_lora_dir(cfg.teacher) if cfg.teacher else None  # bad input fails before any load
    kind = get_kind(cfg.kind)
    task = kind.load_task(cfg)
    dropped = task.record.get("dropped_rows", {})
    if kind.name == KindName.CLASSIFY:
        task.record["label_order"] = ("--labels" if cfg.labels else "fixed by the task" if not cfg.data
                                      else "sorted names")
        if any(dropped.values()):
            print(f"[calora] {task.record['source']}: dropped {dropped.get('blank_text', 0)} rows with a blank text "
                  f"and {dropped.get('blank_label', 0)} with a blank or missing label", flush=True)
    elif any(dropped.values()):
        print(f"[calora] {task.record['source']}: dropped {sum(dropped.values())} rows with a blank prompt or "
              "response", flush=True)
    tokenizer = load_tokenizer(cfg.backbone)
    sets = kind.encode(cfg, task, tokenizer)
    task_dir = Path(cfg.out) / cfg.task
    teacher = kind.load_model(cfg.backbone, task_block(cfg, task, tokenizer, kind), cfg.train.seed, tokenizer)
    _check_max_length(cfg, teacher)
    check_group_sizes(teacher, cfg.compression)  # before the teacher trains, not after
    fam = family(teacher)
    teacher_dir = task_dir / "teacher"
    recipe = {"backbone": cfg.backbone, "lora": cfg.to_dict()["lora"], "train": cfg.to_dict()["train"],
              "task_record": task.record, "imported_from": cfg.teacher, "evaluation": EVAL_PADDING, "kind": cfg.kind}
    if kind.name == KindName.GENERATE:
        recipe["generation"] = cfg.to_dict()["generation"]
    if imported is not None:
        adapter = imported
        _import_teacher(cfg, task, teacher, adapter)
        ctx = Context(cfg, task, tokenizer, sets, teacher, adapter, {}, task_dir, kind)
        ctx.teacher_metrics = evaluate(teacher, ctx, "teacher")
        # Recorded in the task folder, so validation finds the teacher the student was distilled from.
        if is_main():
            with AtomicDir(teacher_dir, OutputKind.MODEL, "--out") as tmp:
                copy_lora_dir(cfg.teacher, tmp)
                write_json(tmp / "metrics.json", ctx.teacher_metrics)
                write_json(tmp / "recipe.json", recipe | {"label_names": list(getattr(task, "label_names", ()))})
        barrier()
    elif (teacher_dir / "recipe.json").is_file() and read_json(teacher_dir / "recipe.json") == recipe:
        adapter = read_lora_dir(teacher_dir)  # same recipe as last time: reuse, do not retrain
        attach_lora(teacher, adapter.config, adapter.tensors)
        ctx = Context(cfg, task, tokenizer, sets, teacher, adapter, read_json(teacher_dir / "metrics.json"), task_dir,
                      kind)
    else:
        targets = list(cfg.lora.targets or DEFAULT_LORA_TARGETS.get(fam, ["query", "value"]))
        lcfg = new_lora_config(targets, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout,
                               head_modules(teacher), cfg.backbone, kind.peft_task_type)
        attach_lora(teacher, lcfg, None)
        n = _set_trainable(teacher)
        heads = " + head" if head_modules(teacher) else ""
        print(f"[calora] teacher: LoRA r={cfg.lora.rank} on {targets}{heads}, {n:,} trainable parameters", flush=True)
        result = fit(teacher, sets["train"], cfg.train, task_dir / ".teacher-work", desc="teacher",
                     restart=cfg.restart, objective=kind.objective)
        ctx = Context(cfg, task, tokenizer, sets, teacher, None, {}, task_dir, kind)
        scores = evaluate(teacher, ctx, "teacher")
        refuse_degenerate(scores, "the teacher (uncompressed backbone + LoRA)")
        ctx.teacher_metrics = {**scores, "train_seconds": round(result.seconds, 1),
                               "train_steps": result.steps}
        if is_main():
            with AtomicDir(teacher_dir, OutputKind.MODEL, "--out") as tmp:
                write_lora_dir(teacher, lcfg, tmp)
                write_json(tmp / "metrics.json", ctx.teacher_metrics)
                write_json(tmp / "recipe.json", recipe)
        barrier()  # the others read the teacher directory the main process has just written
        ctx.teacher_adapter = read_lora_dir(teacher_dir)
    for p in ctx.teacher.parameters():
        p.requires_grad_(False)
    ctx.teacher.eval()
    return ctx


def build_student(ctx: Context, settings: CALoRASettings, seed: int,
                  eval_inherited: bool = False) -> tuple[nn.Module, dict, object]:
    """The compressed backbone with LoRA (inherited or fresh), head, and recovery attached.
    With `eval_inherited`, also score the inherited LoRA before any training (an ablation row)."""
    cfg = ctx.cfg
    model = ctx.kind.load_model(cfg.backbone, task_block(cfg, ctx.task, ctx.tokenizer, ctx.kind), seed + 1,
                                ctx.tokenizer)
    kept: KeptChannels = {}
    compress_model(model, cfg.compression, kept)
    info = {"fingerprint": fingerprint(model), "size": stored_size(model, cfg.compression)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    recovery_layers = compressible_linears(model)
    if settings.recovery_targets:
        recovery_layers = [n for n in recovery_layers if n.split(".")[-1] in settings.recovery_targets
                           or any(n.endswith(t) for t in settings.recovery_targets)]
        if not recovery_layers:
            raise ConfigError(f"--recovery-targets {' '.join(settings.recovery_targets)}: match no compressed "
                              "linear layer")
    tcfg = ctx.teacher_adapter.config
    if settings.inherit:
        # heads or FFN pruning removed rows/columns: inherit the teacher's LoRA on what is left
        tensors, cut = inherit_through_pruning(ctx.teacher_adapter.tensors, kept)
        if cut:
            print(f"[calora] inherited LoRA cut to the channels structured pruning kept on {cut} layers", flush=True)
        attach_lora(model, tcfg, tensors)
        model.to(device)
        if eval_inherited:
            info["inherited_untrained"] = evaluate(model, ctx, "inherited")
        lora_config = tcfg
    else:
        rank = tcfg.r
        lora_config = new_lora_config(sorted(tcfg.target_modules) if not isinstance(tcfg.target_modules, str)
                                      else [tcfg.target_modules], rank, tcfg.lora_alpha, tcfg.lora_dropout,
                                      list(tcfg.modules_to_save or head_modules(model)), cfg.backbone,
                                      ctx.kind.peft_task_type)
        torch.manual_seed(seed)
        attach_lora(model, lora_config, None)
        if settings.loftq:
            info["loftq"] = loftq_init(model, ctx.teacher)
    if settings.recover:
        torch.manual_seed(seed + 2)
        attach_recovery(model, recovery_layers, settings.recovery_rank, settings.recovery_activation)
    model.to(device)
    info["recovery_layers"] = recovery_layers if settings.recover else []
    info["trainable_parameters"] = _set_trainable(model)
    return model, info, lora_config


def fit_student(ctx: Context, settings: CALoRASettings, seed: int | None = None, eval_inherited: bool = False):
    """Build and train one CA-LoRA variant (LoRA from scratch when all switches are off).
    Returns (model, metrics, info, lora_config)."""
    cfg = ctx.cfg
    seed = cfg.train.seed if seed is None else seed
    train_cfg = dataclasses.replace(cfg.train, seed=seed)
    model, info, lora_config = build_student(ctx, settings, seed, eval_inherited)
    print(f"[calora] student {settings.label}: compression {cfg.compression}, "
          f"{info['trainable_parameters']:,} trainable parameters", flush=True)
    work = ctx.task_dir / f".work-{settings.label}-seed{seed}"  # checkpoints; removed when done
    result = fit(model, ctx.sets["train"], train_cfg, work, teacher=ctx.teacher if settings.distill else None,
                 calora=settings, desc=f"ca-lora[{settings.label}]", restart=cfg.restart, objective=ctx.kind.objective)
    scores = evaluate(model, ctx, "student")
    out = {"student": scores, "train_seconds": round(result.seconds, 1), "train_steps": result.steps,
           "resumed_from_step": result.resumed_from_step,
           "inherited_untrained": info.get("inherited_untrained"), "teacher": ctx.teacher_metrics,
           "loftq": info.get("loftq"),
           "compression": {"fingerprint": info["fingerprint"], "size": info["size"]}}
    info["seed"] = seed
    return model, out, info, lora_config


def score_inherited(ctx: Context) -> dict:
    """The teacher's LoRA and head on the compressed backbone before any training: what compression
    alone costs the inherited adapter (an ablation row). Nothing is trained and nothing random is
    drawn (recovery starts at zero, so it is left off), so one evaluation serves every seed."""
    settings = dataclasses.replace(ctx.cfg.calora, inherit=True, recover=False, distill=False, loftq=False)
    _, info, _ = build_student(ctx, settings, ctx.cfg.train.seed, eval_inherited=True)
    return {"student": info["inherited_untrained"], "train_seconds": 0.0, "train_steps": 0,
            "teacher": ctx.teacher_metrics, "compression": {"fingerprint": info["fingerprint"], "size": info["size"]}}


def train_student(ctx: Context, settings: CALoRASettings, out_dir: Path | None = None, seed: int | None = None,
                  eval_inherited: bool = False) -> dict:
    """Train one variant and, if `out_dir` is given, save it as a task directory. Returns metrics."""
    model, out, info, lora_config = fit_student(ctx, settings, seed, eval_inherited)
    if out_dir is not None:
        refuse_degenerate(out["student"], f"the CA-LoRA student ({settings.label})")
        if is_main():
            save_student(model.cpu(), lora_config, out_dir, run_record(ctx, settings, info, lora_config, info["seed"]),
                         out)
        barrier()
    return out


def run_record(ctx: Context, settings: CALoRASettings, info: dict, lora_config, seed: int) -> dict:
    import peft
    import transformers

    cfg = ctx.cfg
    return {
        "schema_version": SCHEMA_VERSION,
        "calora_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backbone": {"source": cfg.backbone, "resolved": resolve(cfg.backbone), "family": family(ctx.teacher)},
        "task": task_block(cfg, ctx.task, ctx.tokenizer, ctx.kind),
        "compression": {"spec": cfg.compression.to_dict(), "text": str(cfg.compression),
                        "fingerprint": info["fingerprint"], "size": info["size"]},
        "lora": {"rank": lora_config.r, "alpha": lora_config.lora_alpha,
                 "targets": sorted(lora_config.target_modules) if not isinstance(lora_config.target_modules, str)
                 else lora_config.target_modules, "modules_to_save": list(lora_config.modules_to_save or [])},
        "recovery": ({"rank": settings.recovery_rank, "activation": settings.recovery_activation.value,
                      "layers": info["recovery_layers"]} if settings.recover else None),
        "calora": cfg.to_dict()["calora"] | {"inherit": settings.inherit, "recover": settings.recover,
                                             "distill": settings.distill, "loftq": settings.loftq},
        "train": dataclasses.asdict(cfg.train) | {"seed": seed, "mixed_precision": cfg.train.mixed_precision.value,
                                                  "processes": num_processes()},
        "teacher": {"imported_from": cfg.teacher, "dir": str(ctx.task_dir / "teacher"),
                    "files_sha256": _teacher_hashes(ctx.task_dir / "teacher")},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "python": platform.python_version()},
        "trainable_parameters": info["trainable_parameters"],
    }


def _teacher_hashes(folder: Path) -> dict[str, str]:
    from .tasks import file_sha256

    return {p.name: file_sha256(p) for p in sorted(folder.glob("adapter_*")) if p.is_file()}


def run(cfg: RunConfig) -> dict:
    """`calora-train`: teacher LoRA (trained or imported), then CA-LoRA on the compressed backbone."""
    # A refusal found after OUT/TASK was made (a flag checked against the loaded backbone) leaves no
    # empty folder behind; one that holds a checkpoint or a saved teacher stays.
    with removed_if_unused(Path(cfg.out) / cfg.task, enabled=is_main()):
        check_outputs(cfg)
        ctx = prepare(cfg)
        return train_student(ctx, cfg.calora, ctx.task_dir / "calora")
