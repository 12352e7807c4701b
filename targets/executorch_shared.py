"""ExecuTorch `--mode shared`: one ``backbone.ptd``, one small program per task.

ExecuTorch's program-data separation, the way its own LoRA export keeps "foundation" weights:
every backbone constant is tagged for the external data file ``executorch/backbone.ptd``; each
task's ``executorch/<task>.pte`` keeps its graph and its adapter (LoRA and recovery matrices, a
classifier's head) as constants, which XNNPACK packs once at load, so the program runs at baked
speed. Generative programs: the stock TextLLMRunner loads ``<task>.pte`` with ``backbone.ptd`` as
its data path. Classifiers: any ExecuTorch ``Module`` / ``Runtime.load_program`` given the data file.

The adapter is float32 (the trained values) or, with ``--adapter-dtype int8``, the int8 codes the
swappable int8 files store (`adapter_codec`: one scale per rank component), run as XNNPACK int8
linears with dynamic int8 activations like the backbone's own: about a quarter of the bytes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from calora.export.decoder import DecoderShape, StaticCache

from . import adapter_codec
from .base import AdapterDType, ArtifactFile, ExportJob, step
from .generation import smoke as smoke_run

BACKBONE_DATA = "backbone"  # the external-data tag, and so the name of executorch/backbone.ptd


def is_adapter_constant(fqn: str | None, modules: frozenset[str]) -> bool:
    """Whether constant `fqn` belongs to one of the adapter `modules` (module paths): a weight, or
    the inner tensors a quantized weight flattens into (``<module>.parametrizations.weight.original0``),
    or the pre-scale of an int8 up-projection (``<module>.0.scale``)."""
    if fqn is None:
        return False
    parts = fqn.split(".")
    return any(".".join(parts[:i]) in modules for i in range(1, len(parts)))


def tag_backbone_constants(ep, modules: frozenset[str]):
    """`ep` decomposed, with every constant outside the adapter `modules` marked for backbone.ptd.

    XNNPACK reads the tag of each weight it packs from the weight's placeholder
    (``meta["custom"]["delegate_constant_tag"]``, as ExecuTorch's own LoRA export sets it); the
    program is decomposed first so the torchao weights are plain placeholders (codes, scales) by
    then: a tag on a tensor subclass is lost when it is flattened, leaving the weight in the program."""
    ep = ep.run_decompositions({})
    sig = ep.graph_signature
    fqn = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in fqn and not is_adapter_constant(fqn[node.name], modules):
            node.meta.setdefault("custom", {})["delegate_constant_tag"] = BACKBONE_DATA
    return ep


def adapter_modules(names: list[str], prefix: str) -> frozenset[str]:
    """The module paths (under the exported wrapper's `prefix`) that own the adapter parameters `names`."""
    return frozenset(prefix + n.rpartition(".")[0] for n in names)


def external_data(et) -> bytes:
    """backbone.ptd's bytes from a serialized program manager whose backbone constants were tagged out."""
    # ExecutorchProgramManager.data_files is this dict behind an @experimental wrapper that 1.5.1
    # breaks as a property; the field it reads is filled by serializing the program.
    data = {name: bytes(cord) for name, cord in (et._tensor_data or {}).items()}
    if set(data) != {BACKBONE_DATA}:  # an adapter constant tagged out, or nothing external at all
        raise RuntimeError(f"shared export: expected one external data file {BACKBONE_DATA!r}, got {sorted(data)}")
    return data[BACKBONE_DATA]


def _same_backbone(ptd: Path, weights: bytes, backbone: bytes | None, task: str, first: str) -> bytes:
    """Write backbone.ptd from the first task; every later task's must be byte-identical (the
    programs name backbone weights by content hash, and all of them load this one file)."""
    from calora.train.errors import CaloraError

    if backbone is None:
        ptd.write_bytes(weights)
        return weights
    if weights != backbone:
        raise CaloraError(f"shared export: {task}'s backbone weights differ from {first}'s; the tasks cannot share "
                          "one backbone.ptd (were they trained on one compressed backbone?)")
    return backbone


def external_tag(fqn: dict[str, str], modules: frozenset[str]):
    """`ExecutorchBackendConfig.external_constants` for the constants left outside the delegates
    (the int8 embedding table, norms): placeholder -> backbone.ptd unless it is the adapter's."""
    def tag(node) -> str | None:
        return None if is_adapter_constant(fqn.get(node.name), modules) else BACKBONE_DATA

    return tag


class _PreScale(nn.Module):
    """x * scale over the last dimension: the per-rank-component scale of an int8 up-projection
    (codes [out, rank] times scale [1, rank]) moved in front of the matmul, so the matrix itself is
    int8 codes with unit per-row scales, the layout XNNPACK's int8 linear takes."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.reshape(-1).float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def int8_linear(codes: torch.Tensor, scale: torch.Tensor) -> nn.Linear:
    """An int8-weight, dynamic-int8-activation linear (XNNPACK 8da8w) computing codes * scale
    per output row, with those exact codes (`scale`: one per row, any shape of that size): the
    adapter matrices of int8 shared programs, and the LM head over the tied int8 embedding table."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    lin = nn.Sequential(nn.Linear(codes.shape[1], codes.shape[0], bias=False))
    with torch.no_grad():
        lin[0].weight.copy_(codes.float() * scale.reshape(-1, 1))
    quantize_(lin, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)))
    w = lin[0].weight
    w.qdata = codes.clone().to(torch.int8).contiguous()
    w.scale = scale.detach().clone().to(w.scale.dtype).reshape(w.scale.shape).contiguous()
    w.zero_point = torch.zeros_like(w.zero_point)
    return lin[0]


def int8_adapter(model: nn.Module, names: list[str]) -> None:
    """Replace, in place, each LoRA / recovery matrix of `model` (parameter `names`) with its int8
    codes from `adapter_codec` (the grid the swappable int8 files store and `round_adapter`
    computes): down-projections (scale per output row) directly, up-projections as a pre-scale
    then unit-scale codes. Tensors without a rank dimension stay float32."""
    params = dict(model.named_parameters())
    for name in names:
        dim = adapter_codec.rank_dim(name)
        if dim is None:
            continue
        codes, scale = adapter_codec.int8_codes(params[name], dim)
        parent, _, attr = name.removesuffix(".weight").rpartition(".")
        owner = model.get_submodule(parent)
        if getattr(owner, attr).bias is not None:
            raise RuntimeError(f"{name}: adapter matrices have no bias")
        if dim == 0:  # [rank, in]: one scale per output row
            new: nn.Module = int8_linear(codes, scale)
        else:  # [out, rank]: one scale per input column
            new = nn.Sequential(_PreScale(scale), int8_linear(codes, torch.ones(codes.shape[0], 1)))
        setattr(owner, attr, new)


def export_shared(job: ExportJob, sub: Path, out_dir: Path, shape: DecoderShape, meta: dict, example: tuple,
                  prepared, smoke: dict, notes: list[str], runtime_label: str) -> tuple[list[ArtifactFile], str]:
    """Lower each task with its adapter kept in the program and every backbone constant tagged out
    to one external data file, which must come out byte-identical for every task (it is the one
    ``backbone.ptd`` they all load)."""
    from calora.export.graph import adapter_names

    from .executorch import _check_delegation, _describe
    from .executorch_llm import lower
    from .executorch_llm_runtime import PteSession

    int8 = job.deployed_adapter_dtype == AdapterDType.INT8
    ptd = sub / f"{BACKBONE_DATA}.ptd"
    files: list[ArtifactFile] = []
    backbone: bytes | None = None
    for task in job.tasks:
        model, info = prepared(task)
        names = adapter_names(model)
        modules = adapter_modules(names, "body.model.")
        if int8:
            int8_adapter(model, names)
        with step(f"executorch: lowering {task.name}.pte against the shared {ptd.name} ({shape.layers} layers to "
                  f"XNNPACK, {job.deployed_adapter_dtype.value} adapter; minutes on a phone-sized decoder)"):
            data, stats, weights = lower(StaticCache(model, shape), example, shape, meta, keep=modules)
        _check_delegation(stats, info, task.name)
        backbone = _same_backbone(ptd, weights, backbone, task.name, job.tasks[0].name)
        path = sub / f"{task.name}.pte"
        path.write_bytes(data)
        files.append(ArtifactFile.of(out_dir, path, "model", task.name))
        pte = PteSession(path, ptd)
        smoke[task.name] = smoke_run(lambda p, n, e, s=pte: s.generate(p, n, e, []), task, job, runtime_label)
        notes.append(f"{task.name}.pte: {_describe(stats, info)}; {path.stat().st_size} bytes (graph and "
                     f"{job.deployed_adapter_dtype.value} adapter; the backbone's weights are in {ptd.name})")
    files.insert(0, ArtifactFile.of(out_dir, ptd, "backbone", None))
    notes.append(f"{ptd.name}: {ptd.stat().st_size} bytes, every backbone weight (XNNPACK's packed-weight sources "
                 "by content hash, the token embedding), shared by every task's program")
    if int8:
        notes.append("Adapter int8: each LoRA / recovery matrix as int8 codes with one scale per rank component (the "
                     "swappable int8 files' grid), run as XNNPACK int8 linears with dynamic int8 activations; an "
                     "up-projection's scales multiply its input first, so its codes take unit row scales")
    return files, ("Shared: one backbone.ptd on the device; each task's small .pte holds its graph and adapter and "
                   "loads in ExecuTorch's LLM runner with backbone.ptd as its data file (TextLLMRunner data_path, "
                   "LlmModule dataPath). A task switch loads that task's program (XNNPACK packs the weights at "
                   "load, as for a baked model); decoding then runs at baked speed.")


def export_shared_classifier(target, job: ExportJob, sub: Path, out_dir: Path, example: tuple, rows: tuple,
                             files: list[ArtifactFile], smoke: dict, notes: list[str], rewrites: list[dict],
                             runtime_label: str) -> tuple[dict[str, float], dict, str]:
    """Classification tasks in shared mode (`executorch.task_programs` with the one ``backbone.ptd``). Appends
    the files, smoke results and notes; returns (weight error, the backbone's quantization info,
    the task-switch sentence).

    Why: a swappable program takes the adapter as inputs, so XNNPACK runs those linears with
    non-constant weights and packs them on every call (0.4-0.7 ms per example for MiniLM on x86);
    here they are constants, packed once when the task's program loads."""
    from .executorch import task_programs

    ptd = sub / f"{BACKBONE_DATA}.ptd"
    int8 = job.deployed_adapter_dtype == AdapterDType.INT8
    programs, weight_error, info = task_programs(target, job, sub, out_dir, example, rows, smoke, notes, rewrites,
                                                 runtime_label, data_file=ptd)
    files += [ArtifactFile.of(out_dir, ptd, "backbone", None), *programs]
    notes.append(f"{ptd.name}: {ptd.stat().st_size} bytes, every backbone weight (XNNPACK's packed-weight sources "
                 "by content hash, the token embedding, norms), shared by every task's program")
    notes.append("Loading: ExecuTorch's C++ Module(<task>.pte, backbone.ptd), its Swift/Objective-C Module "
                 "(filePath:dataFilePaths:) and Python's Runtime.load_program(<task>.pte, data_path=backbone.ptd) "
                 "take the data file. The Java/Kotlin Module.load of executorch-android takes no data file "
                 "(its LlmModule does, for generation): an Android app loads a shared classifier through "
                 "ExecuTorch's C++ Module from its own JNI code, or ships the swappable or baked bundle.")
    if int8:
        notes.append("Adapter int8: each LoRA / recovery matrix as int8 codes with one scale per rank component (the "
                     "swappable int8 files' grid), run as XNNPACK int8 linears with dynamic int8 activations; the "
                     "head float32")
    return weight_error, info, (
        "Shared: one backbone.ptd on the device; each task's small .pte holds its graph and adapter (LoRA, "
        "recovery, head) as constants. A task switch loads that task's program with backbone.ptd as its data "
        "file (XNNPACK packs the weights at load, as for a baked program); each example then runs at baked speed.")
