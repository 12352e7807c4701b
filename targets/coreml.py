"""Core ML export target: mlprogram `.mlpackage` files made with coremltools.

- baked: `coreml/<task>.mlpackage` per task, LoRA + recovery + head folded into the program.
- swappable: `coreml/tasks.mlpackage`, a multifunction model with one function per task (function
  name = task name). Backbone weights are identical in every function, so `save_multifunction`
  stores them once; Core ML has no separate adapter file, a task is chosen at load time with
  `MLModelConfiguration.functionName`.

Backbone weights are not re-quantized by coremltools (its symmetric int4/int8 grid differs from
calora's): the trained integer codes and scales are written as `constexpr_blockwise_shift_scale`
ops (`targets/coreml_mil.py`), then the already-zero weights of a pruned backbone are stored as
a sparse bitmask with `prune_weights(joint_compression=True)` restricted to those ops by name.
LoRA, recovery and head weights stay plain float32 `const` ops.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import torch

from calora.export.graph import (INPUT_NAMES, OUTPUT_NAMES, Baked, adapter_tensors, backbone_linears,
                                 check_same_layout, deployable, example_inputs, round_adapter, smoke_stats)
from calora.targets.base import AdapterDType, ArtifactFile, ExportJob, Mode, TargetResult, TensorSpec, keep_worst
from calora.targets.coreml_mil import QuantWeight, adapter_consts, constexpr_name, evaluate, quantize_consts
from calora.train.errors import ConfigError
from calora.train.quant import QuantEmbedding, QuantLinear, quantize_weight
from calora.train.spec import EmbeddingQuant, QuantScheme

MIL_RUNTIME = "coremltools MIL reference evaluator (program-level; not Apple's runtime)"
SMOKE_EXAMPLES = 4
BACKBONE_KEY = "calora.backbone_fingerprint"


def _plan(spec) -> tuple[int | None, int | None]:
    """(bits, group_size) of the backbone linears: bits None = float; group None = per channel."""
    from calora.targets.base import refuse_per_tensor_activations

    refuse_per_tensor_activations(spec, "coreml", "runs them in float")
    quant, group = spec.deployed()
    if quant == QuantScheme.NONE:
        return None, None
    if quant == QuantScheme.INT8:
        return 8, None
    if quant == QuantScheme.INT4:
        return 4, group
    raise ConfigError(f"coreml: compression.quant={spec.quant.value} cannot be represented in Core ML "
                      "(supported: none, int4 per group, int8 per channel; nf4/bnb-int8 via deploy_quant)")


def _weights(model: torch.nn.Module, dep: torch.nn.Module, spec) -> list[QuantWeight]:
    """The backbone weights to store quantized, with the trained codes and scales."""
    bits, group = _plan(spec)
    out: list[QuantWeight] = []
    if bits is not None:
        for name in backbone_linears(model):
            trained, lin = model.get_submodule(name), dep.get_submodule(name)
            if not isinstance(lin, torch.nn.Linear):
                raise ConfigError(f"coreml: backbone layer {name} is a {type(lin).__name__}, which cannot be "
                                  "exported (dequantize bitsandbytes layers first)")
            w = lin.weight.detach().float()
            if isinstance(trained, QuantLinear) and trained.bits == bits and trained.group_size == group:
                codes, scale = trained.codes, trained.scale
            else:  # e.g. a bitsandbytes backbone re-quantized to its deploy format
                if group is not None and w.shape[1] % group:
                    raise ConfigError(f"coreml: {name} has in_features={w.shape[1]}, not divisible by group {group}")
                codes, scale = quantize_weight(w, bits, group)
            out.append(QuantWeight(name, w.numpy().copy(), codes.numpy().astype(np.int8), scale.float().numpy().copy()))
    if spec.embeddings != EmbeddingQuant.NONE:
        for name, mod in model.named_modules():
            if isinstance(mod, QuantEmbedding):
                out.append(QuantWeight(name, mod.weight.detach().float().numpy().copy(),
                                       mod.codes.numpy().astype(np.int8), mod.scale.float().numpy().copy()))
    return out


def _convert(task, job: ExportJob, ct):
    """torch.export -> MIL program (float32) -> exact backbone quantization -> sparse -> MLModel."""
    import coremltools.optimize as cto

    spec = job.spec
    dep = deployable(task.model)
    weights = _weights(task.model, dep, spec)
    ids = torch.zeros(1, job.max_length, dtype=torch.int32)
    ep = torch.export.export(Baked(dep).eval(), (ids, torch.ones_like(ids))).run_decompositions()
    for node in list(ep.graph.nodes):  # Llama graphs carry aten.alias nodes the converter rejects
        if node.op == "call_function" and node.target in (torch.ops.aten.alias.default,):
            node.replace_all_uses_with(node.args[0])
            ep.graph.erase_node(node)
    target = ct.target.iOS18
    kw = dict(minimum_deployment_target=target, compute_precision=ct.precision.FLOAT32,
              inputs=[ct.TensorType(name=n, shape=(1, job.max_length), dtype=np.int32) for n in INPUT_NAMES],
              outputs=[ct.TensorType(name=OUTPUT_NAMES[0])])
    prog = ct.convert(ep, convert_to="milinternal", **kw)
    quantize_consts(prog, weights)
    if job.deployed_adapter_dtype != AdapterDType.FLOAT32:  # swappable: each task function's own weights
        adapter_consts(prog, {n: t.numpy() for n, t in adapter_tensors(task.model).items() if t.ndim == 2},
                       job.deployed_adapter_dtype)
    mlmodel = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                         compute_precision=ct.precision.FLOAT32, skip_model_load=True)
    if spec.sparsity > 0:
        names = {constexpr_name(w.name) for w in weights if "embeddings" not in w.name}
        names |= set(_float_backbone_const_names(mlmodel, dep, task.model, {w.name for w in weights}))
        if names:
            cfg = cto.coreml.OpThresholdPrunerConfig(threshold=1e-30, minimum_sparsity_percentile=0.0,
                                                     weight_threshold=0)
            mlmodel = cto.coreml.prune_weights(
                mlmodel, cto.coreml.OptimizationConfig(global_config=None, op_name_configs={n: cfg for n in names}),
                joint_compression=True)
    mlmodel.user_defined_metadata[BACKBONE_KEY] = job.fingerprint  # checked by calora-validate
    mlmodel.user_defined_metadata["calora.label_names"] = json.dumps(list(task.label_names))
    return mlmodel, weights


def _float_backbone_const_names(mlmodel, dep, model, quantized: set[str]) -> list[str]:
    """Names of the float const ops holding backbone linear weights that were not quantized."""
    todo = {n: dep.get_submodule(n).weight.detach().float().numpy() for n in backbone_linears(model) if n not in quantized}
    if not todo:
        return []
    names = []
    for op in mlmodel._mil_program.functions["main"].operations:
        if op.op_type == "const" and isinstance(op.outputs[0].val, np.ndarray) and op.outputs[0].val.ndim == 2:
            v = op.outputs[0].val
            if any(np.array_equal(v, w) or np.array_equal(v, w.T) for w in todo.values()):
                names.append(op.name)
    return names


def load_program(path: Path):
    """The pymil program stored in an .mlpackage (works on Linux)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    return milproto_load(spec, spec.specificationVersion, file_weights_dir=mlmodel.weights_dir)


def dense_weights(func) -> dict[str, np.ndarray]:
    """{op name: dense value} for every chain of constexpr ops that ends in a non-constexpr op."""
    out = {}
    for op in func.operations:
        if op.op_type.startswith("constexpr_") and any(
                not c.op_type.startswith("constexpr_") for v in op.outputs for c in v.child_ops):
            v = op.materialized_val_inference()
            out[op.name] = np.asarray(v[-1] if isinstance(v, tuple) else v)
    return out


def weight_error(path: Path, function: str, weights: list[QuantWeight]) -> dict[str, float]:
    """max |stored dequantized - trained| over the quantized backbone weights, read back from disk."""
    prog = load_program(path)
    dense = list(dense_weights(prog.functions[function]).values())
    errs: dict[str, float] = {}
    for qw in weights:
        key = "embedding_max_abs" if "embeddings" in qw.name else "backbone_linear_max_abs"
        cands = [d for d in dense if d.shape == qw.weight.shape] + [d.T for d in dense if d.shape == qw.weight.T.shape]
        if not cands:
            raise RuntimeError(f"coreml: stored weight of {qw.name} not found in {path.name}")
        e = min(float(np.abs(c.astype(np.float64) - qw.weight).max()) for c in cands)
        errs[key] = max(errs.get(key, 0.0), e)
    return errs


def _smoke(path: Path, function: str, task, job: ExportJob, ct) -> dict:
    ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts)[:SMOKE_EXAMPLES], job.max_length)
    with torch.no_grad():
        ref = Baked(task.model.eval())(ids, mask)
        # float16 / int8 adapter weights: the program computes with the rounded values
        ref_dep = Baked(deployable(round_adapter(task.model, job.deployed_adapter_dtype)))(ids, mask)
    got = []
    try:
        if sys.platform == "darwin":
            m = ct.models.MLModel(str(path), function_name=None if function == "main" else function)
            runtime = "Core ML (MLModel.predict)"
            for i in range(ids.shape[0]):
                got.append(m.predict({"input_ids": ids[i:i + 1].int().numpy(),
                                      "attention_mask": mask[i:i + 1].int().numpy()})["logits"][0])
        else:
            runtime = MIL_RUNTIME
            for i in range(ids.shape[0]):
                func = load_program(path).functions[function]  # fresh: the evaluator writes values into it
                got.append(evaluate(func, {"input_ids": ids[i:i + 1].int().numpy(),
                                           "attention_mask": mask[i:i + 1].int().numpy()})[0][0])
    except Exception as exc:  # noqa: BLE001 - report, never claim a pass
        return {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
    got_t = torch.as_tensor(np.stack(got), dtype=torch.float32)
    stats = smoke_stats(ref, got_t, runtime)
    # Against the exported (deployable) model: isolates conversion error from the int8 activation
    # simulation of training, which the Core ML program (weight-only, float activations) does not run.
    stats["max_abs_logit_error_vs_deployable"] = float((ref_dep - got_t).abs().max())
    return stats


def _deterministic_manifest(pkg: Path) -> None:
    """mlpackage Manifest.json keys items by random UUIDs: derive them from the item paths so
    re-exports give identical bytes."""
    manifest = pkg / "Manifest.json"
    data = json.loads(manifest.read_text())
    remap = {}
    for key, item in data.get("itemInfoEntries", {}).items():
        remap[key] = str(uuid.uuid5(uuid.NAMESPACE_URL, "calora:" + item.get("path", key))).upper()
    data["itemInfoEntries"] = {remap[k]: v for k, v in data["itemInfoEntries"].items()}
    if data.get("rootModelIdentifier") in remap:
        data["rootModelIdentifier"] = remap[data["rootModelIdentifier"]]
    # Trailing newline as Core ML's own package writer adds it: opening the package with coremltools
    # rewrites Manifest.json in that form, which would change the bundle's recorded sha256.
    manifest.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class CoreMLTarget:
    name = "coreml"
    modes = frozenset({Mode.BAKED, Mode.SWAPPABLE})

    def open(self, bundle: Path, manifest: dict):
        if manifest.get("kind") == "generate":
            from calora.targets.coreml_gen_runtime import CoreMLGenRunner

            return CoreMLGenRunner(Path(bundle), manifest)
        from calora.targets.coreml_runtime import CoreMLRunner

        return CoreMLRunner(Path(bundle), manifest)

    def export(self, job: ExportJob, out_dir: Path) -> TargetResult:
        import coremltools as ct

        if job.kind == "generate":
            _plan(job.spec)
            from calora.targets.coreml_gen import export_generative

            return export_generative(job, out_dir)
        out_dir = Path(out_dir)
        _plan(job.spec)  # refuse unrepresentable specs before any work
        folder = out_dir / "coreml"
        folder.mkdir(parents=True, exist_ok=True)
        files: list[ArtifactFile] = []
        smoke: dict[str, dict] = {}
        werr: dict[str, float] = {}
        notes = [
            "Backbone weights are stored with calora's own integer codes and scales (constexpr_blockwise_shift_scale, "
            "float32 scales, zero point 0) instead of coremltools' re-quantization, whose symmetric grid "
            "(scale = amax/7 or amax/127) differs from the trained one (amax/7.5, amax/127.5).",
            "compute_precision=FLOAT32, minimum_deployment_target=iOS18; activations run in float: the int8 "
            "dynamic activations simulated in training are not part of the Core ML program.",
            ("LoRA, recovery and head weight matrices are stored float16 (constexpr_cast to float32 at load, "
             "--adapter-dtype float16): each task function's own bytes halve, the program computes in float32; "
             "the head bias stays a float32 const." if job.deployed_adapter_dtype == AdapterDType.FLOAT16 else
             "LoRA and recovery weight matrices are stored int8 with one float32 scale per rank component "
             "(constexpr_blockwise_shift_scale, --adapter-dtype int8), the head matrix float16 (constexpr_cast); "
             "all widen to float32 at load, the program computes in float32; the head bias stays a float32 const."
             if job.deployed_adapter_dtype == AdapterDType.INT8 else
             "LoRA, recovery and head weights are plain float32 const ops (never compressed)."),
        ]
        if job.spec.sparsity > 0:
            notes.append("Pruned backbone weights are stored sparse (bitmask + nonzero int codes: "
                         "constexpr_sparse_blockwise_shift_scale + constexpr_sparse_to_dense, joint compression).")
        if job.spec.embeddings == EmbeddingQuant.INT8:
            notes.append("The token embedding table is stored int8 per row with the trained codes and scales.")
        elif job.spec.embeddings == EmbeddingQuant.INT4:
            notes.append(f"The token embedding table is stored int4 with the trained codes and one scale per "
                         f"{job.spec.embeddings.group_size} values (constexpr_blockwise_shift_scale).")
        tasks = list(job.tasks)
        with tempfile.TemporaryDirectory(prefix="calora-coreml-") as tmp:
            tmp = Path(tmp)
            paths, weights_of = {}, {}
            if job.mode == Mode.SWAPPABLE:
                check_same_layout({t.name: t.model for t in tasks})
            for t in tasks:
                mlmodel, weights = _convert(t, job, ct)
                p = (folder if job.mode == Mode.BAKED else tmp) / f"{t.name}.mlpackage"
                mlmodel.save(str(p))
                _deterministic_manifest(p)
                paths[t.name], weights_of[t.name] = p, weights
            if job.mode == Mode.BAKED:
                for t in tasks:
                    files.append(ArtifactFile.of(out_dir, paths[t.name], "model", t.name))
                    keep_worst(werr, weight_error(paths[t.name], "main", weights_of[t.name]))
                    smoke[t.name] = _smoke(paths[t.name], "main", t, job, ct)
                task_switch = ("Each task is its own .mlpackage: switching tasks loads another model "
                               "(the backbone weights are stored once per task).")
            else:
                pkg = folder / "tasks.mlpackage"
                _save_multifunction([(t.name, paths[t.name]) for t in tasks], pkg, ct,
                                    metadata={BACKBONE_KEY: job.fingerprint})
                files.append(ArtifactFile.of(out_dir, pkg, "backbone", None))
                if len(tasks) >= 2:
                    one, two = tmp / "one.mlpackage", tmp / "two.mlpackage"
                    _save_multifunction([(tasks[0].name, paths[tasks[0].name])], one, ct)
                    _save_multifunction([(t.name, paths[t.name]) for t in tasks[:2]], two, ct)
                    inc = _dir_size(two) - _dir_size(one)
                    wb = "Data/com.apple.CoreML/weights/weight.bin"
                    inc_w = (two / wb).stat().st_size - (one / wb).stat().st_size
                    notes.append(f"Core ML has no separate adapter file: each task is a function of "
                                 f"coreml/tasks.mlpackage. Measured incremental size per added task: {inc} bytes "
                                 f"(2-function package {_dir_size(two)} B minus 1-function {_dir_size(one)} B); "
                                 f"one baked task package: {_dir_size(paths[tasks[0].name])} B. Of the increment, {inc_w} B are "
                                 "weights (the task's float LoRA/recovery/head tensors; the backbone is deduplicated), "
                                 "the rest is the function's program text in model.mlmodel.")
                for t in tasks:
                    keep_worst(werr, weight_error(pkg, t.name, weights_of[t.name]))
                    smoke[t.name] = _smoke(pkg, t.name, t, job, ct)
                task_switch = ("One multifunction .mlpackage, one function per task (function name = task name): "
                               "load a task with MLModelConfiguration.functionName (coremltools: "
                               "MLModel(path, function_name=...)); backbone weights are stored once and shared.")
        if not any(w for w in weights_of.values()):
            werr.setdefault("backbone_linear_max_abs", 0.0)
        notes.append("Re-exporting gives identical files: Manifest.json item identifiers are derived from item "
                     "paths (coremltools writes random UUIDs there).")
        smoked = [s for s in smoke.values() if "skipped" not in s]
        if smoked:
            notes.append("Smoke ran on Linux with coremltools' MIL per-op numpy reference implementations "
                         "(program-level check, not Apple's runtime), against PyTorch on the trained model.")
        return TargetResult(
            files=files,
            inputs=[TensorSpec(n, "int32", (1, job.max_length)) for n in INPUT_NAMES],
            outputs=[TensorSpec(OUTPUT_NAMES[0], "float32", (1, len(tasks[0].label_names)))],
            runtime={"name": "coremltools", "version": ct.__version__},
            weight_error=werr, smoke=smoke, task_switch=task_switch, notes=notes)


def _save_multifunction(items: list[tuple[str, Path]], dest: Path, ct, metadata: dict | None = None) -> None:
    desc = ct.utils.MultiFunctionDescriptor()
    for name, p in items:
        desc.add_function(str(p), src_function_name="main", target_function_name=name)
    desc.default_function_name = items[0][0]
    ct.utils.save_multifunction(desc, str(dest))
    if metadata:  # save_multifunction drops the source packages' user metadata: set it again
        model = ct.models.MLModel(str(dest), skip_model_load=True)
        model.user_defined_metadata.update(metadata)
        tmp = dest.with_name(dest.name + ".tmp.mlpackage")
        model.save(str(tmp))
        shutil.rmtree(dest)
        tmp.rename(dest)
    _deterministic_manifest(dest)
