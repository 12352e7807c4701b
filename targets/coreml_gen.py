"""Generative tasks on Core ML: an iOS 18 stateful mlprogram, the KV cache as model state.

`forward(input_ids [1,S] int32, causal_mask [1,1,S,T] float32) -> logits [1,S,vocab]` with the
cache in two `ct.StateType`s (`k_cache`, `v_cache`: [layers, 1, kv_heads, max_context, head_dim],
float16 because Core ML states must be), written at [T-S, T): prefill is S = prompt length (a
`ct.RangeDim`), decode S = 1, as Apple documents stateful LLMs. Backbone weights carry the trained
int4 codes (constexpr_blockwise_shift_scale), the tied int8 embedding table its trained codes.

Baked: ``coreml/<task>.mlpackage``; swappable: one multifunction ``coreml/tasks.mlpackage`` (a
function per task, backbone weights stored once, each function with its own state). On Linux the
program is evaluated with the stateful extension of calora's MIL reference evaluator.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import torch

from calora.export.decoder import StateCache, causal_mask, decoder_shape
from calora.export.graph import adapter_tensors, check_same_layout, deployable

from .base import AdapterDType, ArtifactFile, ExportJob, Mode, TargetResult, TensorSpec, keep_worst
from .generation import smoke as smoke_run

STATES = ("k_cache", "v_cache")


@contextlib.contextmanager
def _numpy2_cast_fix():
    """coremltools 9.0's torch frontend does `int(x.val)` on one-element (1,) arrays when it folds
    aten::Int, which numpy >= 2.3 refuses ("only 0-dimensional arrays can be converted"); the traced
    decoder has such casts (shapes of the dynamic prompt). Patched for the conversion only."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import ops

    original = ops._cast

    def _cast(context, node, dtype, dtype_name):
        x = ops._get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const() and isinstance(x.val, np.ndarray) and x.val.size == 1:
            context.add(mb.const(val=dtype(x.val.reshape(()).item()), name=node.name), node.name)
            return
        original(context, node, dtype, dtype_name)

    ops._cast = _cast
    try:
        yield
    finally:
        ops._cast = original


def convert(task, job: ExportJob, ct):
    """Trace the stateful decoder, convert it with the KV cache as state, store the trained codes."""
    from .coreml import BACKBONE_KEY, _weights
    from .coreml_mil import adapter_consts, quantize_consts

    dep = deployable(task.model)
    shape = decoder_shape(dep, job.max_length)
    weights = _weights(task.model, dep, job.spec)
    module = StateCache(dep, shape).eval()
    prompt = torch.tensor([list(job.smoke_prompts[0])[:5]], dtype=torch.int32)
    with torch.no_grad():
        traced = torch.jit.trace(module, (prompt, causal_mask(0, prompt.shape[1])), check_trace=False)
    seq, total = ct.RangeDim(1, shape.max_context, default=1), ct.RangeDim(1, shape.max_context, default=1)
    cache = (shape.layers, 1, shape.kv_heads, shape.max_context, shape.head_dim)
    kw = dict(minimum_deployment_target=ct.target.iOS18, compute_precision=ct.precision.FLOAT32)
    with _numpy2_cast_fix():
        prog = ct.convert(traced, convert_to="milinternal",
                          inputs=[ct.TensorType(name="input_ids", shape=(1, seq), dtype=np.int32),
                                  ct.TensorType(name="causal_mask", shape=(1, 1, seq, total), dtype=np.float32)],
                          outputs=[ct.TensorType(name="logits")],
                          states=[ct.StateType(wrapped_type=ct.TensorType(shape=cache, dtype=np.float16), name=n)
                                  for n in STATES], **kw)
    quantize_consts(prog, weights)
    if job.deployed_adapter_dtype != AdapterDType.FLOAT32:  # swappable: each task function's own weights
        adapter_consts(prog, {n: t.numpy() for n, t in adapter_tensors(task.model).items() if t.ndim == 2},
                       job.deployed_adapter_dtype)
    mlmodel = ct.convert(prog, convert_to="mlprogram", skip_model_load=True, **kw)
    mlmodel.user_defined_metadata[BACKBONE_KEY] = job.fingerprint
    mlmodel.user_defined_metadata["calora.kind"] = "generate"
    return mlmodel, weights, shape


def export_generative(job: ExportJob, out_dir: Path) -> TargetResult:
    import coremltools as ct

    from .coreml import BACKBONE_KEY, _deterministic_manifest, _save_multifunction, weight_error
    from .coreml_gen_runtime import StatefulProgram, program_runtime

    out_dir = Path(out_dir)
    folder = out_dir / "coreml"
    folder.mkdir(parents=True, exist_ok=True)
    files: list[ArtifactFile] = []
    smoke: dict[str, dict] = {}
    werr: dict[str, float] = {}
    tasks = list(job.tasks)
    if job.mode == Mode.SWAPPABLE:
        check_same_layout({t.name: t.model for t in tasks})
    with tempfile.TemporaryDirectory(prefix="calora-coreml-") as tmp:
        paths, weights_of = {}, {}
        for t in tasks:
            mlmodel, weights, shape = convert(t, job, ct)
            p = (folder if job.mode == Mode.BAKED else Path(tmp)) / f"{t.name}.mlpackage"
            mlmodel.save(str(p))
            _deterministic_manifest(p)
            paths[t.name], weights_of[t.name] = p, weights
        if job.mode == Mode.BAKED:
            where = {t.name: (paths[t.name], "main") for t in tasks}
            files += [ArtifactFile.of(out_dir, paths[t.name], "model", t.name) for t in tasks]
            task_switch = "Each task is its own stateful .mlpackage: switching tasks loads another model."
        else:
            pkg = folder / "tasks.mlpackage"
            _save_multifunction([(t.name, paths[t.name]) for t in tasks], pkg, ct,
                                metadata={BACKBONE_KEY: job.fingerprint, "calora.kind": "generate"})
            where = {t.name: (pkg, t.name) for t in tasks}
            files.append(ArtifactFile.of(out_dir, pkg, "backbone", None))
            task_switch = ("One multifunction .mlpackage, one stateful function per task (function name = task "
                           "name, each with its own KV-cache state); backbone weights are stored once and shared. "
                           "Load a task with MLModelConfiguration.functionName, then model.makeState().")
        for t in tasks:
            path, function = where[t.name]
            keep_worst(werr, weight_error(path, function, weights_of[t.name]))
            program = StatefulProgram(path, function)  # the evaluator runs op by op in numpy: 2 prompts
            smoke[t.name] = smoke_run(program.generate, t, job, program_runtime(), limit=2)
    notes = [
        "Stateful mlprogram (iOS 18): KV cache as ct.StateType k_cache/v_cache in float16 (Core ML states must be "
        f"fp16), {shape.max_context} positions; compute in float32; prompt length flexible (RangeDim 1.."
        f"{shape.max_context}); the app passes a [1,1,S,T] additive causal mask, whose shape gives the write position.",
        "Backbone weights carry calora's trained int4 codes and scales (constexpr_blockwise_shift_scale); the tied "
        "int8 embedding table is stored once with its trained codes, read by the lookup and the LM head.",
        "Pruned zeros are stored dense in generative packages (the sparse re-encoding used for classification is "
        "not applied to stateful programs yet).",
        "On Linux the program was run with calora's stateful extension of coremltools' MIL reference evaluator "
        "(program-level check, not Apple's runtime).",
    ]
    vocab = shape.vocab
    return TargetResult(
        files=files,
        inputs=[TensorSpec("input_ids", "int32", (1, "sequence")),
                TensorSpec("causal_mask", "float32", (1, 1, "sequence", "total_sequence"))],
        outputs=[TensorSpec("logits", "float32", (1, "sequence", vocab))],
        runtime={"name": "coremltools", "version": ct.__version__, "activations": "float32"},
        weight_error=werr, smoke=smoke,
        task_switch=task_switch, notes=notes)
