"""ONNX Runtime Mobile target: `.onnx` + `.ort` models, and `.onnx_adapter` files for swappable tasks.

Pipeline (every heavy import happens inside `OnnxTarget.export`):

1. `torch.onnx.export(..., dynamo=True)` of `Baked(deployable(model))` (baked) or of
   `Swappable(deployable(first model), adapter names)` (swappable), with dynamic batch and sequence.
2. The backbone's linear layers are found in the graph by value: the exporter renames (and
   transposes) weights, so each MatMul/Gemm whose constant weight equals a backbone linear's
   trained weight is a backbone node. Backbone Gemms (2-D inputs, e.g. BERT's pooler) are rewritten
   as MatMul (+ Add) so that the quantizers see them. Everything else - LoRA, recovery, head -
   stays float.
3. Quantization per spec: int4 -> `MatMulNBitsQuantizer` (symmetric, block = group size); its codes
   and scales are then replaced by the trained model's own int4 codes and scales (the trained
   weights already lie on a symmetric group grid with scale amax/7.5, which ONNX Runtime's quantizer
   reproduces only for groups whose largest magnitude is negative), so the stored weights are
   bit-identical to the trained ones. int8 -> `quantize_dynamic` (per channel, int8 weights).
4. `.ort` conversion with `onnxruntime.tools.convert_onnx_models_to_ort` (fixed optimizations, the
   tool's default), and a smoke run of each `.ort` against PyTorch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from calora.export.graph import (INPUT_NAMES, OUTPUT_NAMES, Baked, Swappable, adapter_tensors,
                                 backbone_linears, check_same_layout, deployable, example_inputs, smoke_stats,
                                 trim_positions)
from calora.targets.base import (AdapterDType, ArtifactFile, ExportJob, Mode, TargetResult, TensorSpec,
                                 fingerprint_version)
from calora.train.errors import ConfigError

OPSET = 21  # MatMulNBits is com.microsoft; opset 21 is the one the dynamo exporter and ORT 1.32 both handle
#: MatMulNBits accuracy_level for the int4 backbone linears: None = float activations (ONNX
#: Runtime's default). Level 4 (int8 activations: MLAS quantizes each block of `group` inputs to
#: int8 and multiplies in integers) was measured side by side on MiniLM (batch 1, 64 tokens, 2 AVX2
#: x86 cores without VNNI): 13.24 ms against 12.83 ms per example at level 0, with the same parity
#: (docs/RESULTS.md). So float stays the default; on CPUs with int8 dot-product instructions (ARM
#: sdot/i8mm, AVX-VNNI) level 4 may win, which this machine cannot show. The generative LM head is
#: the exception (8-bit B has no fast float path: onnx_graph_gen.py).
INT4_ACCURACY_LEVEL: int | None = None


def deploy_format(spec: Any) -> tuple[str, int | None]:
    """("int4", group) / ("int8", None) / ("none", None): what the backbone linears are stored as."""
    scheme, group = spec.deployed()
    quant = scheme.value
    if quant == "int4":
        if not group or group < 16 or group & (group - 1):
            raise ConfigError(f"compression group size {group}: ONNX Runtime's MatMulNBits needs a power of two "
                              ">= 16 (e.g. int4:g32)")
        return "int4", int(group)
    if quant in ("int8", "none"):
        return quant, None
    raise ConfigError(f"compression.quant={quant!r}: the onnx target stores backbone weights as int4, int8 or "
                      "float only")


class OnnxTarget:
    name: ClassVar[str] = "onnx"
    modes: ClassVar[frozenset[Mode]] = frozenset({Mode.BAKED, Mode.SWAPPABLE})

    def open(self, bundle: Path, manifest: dict):
        if manifest.get("kind") == "generate":
            from calora.targets.onnx_genai_runtime import OnnxGenaiRunner

            return OnnxGenaiRunner(Path(bundle), manifest)
        from calora.targets.onnx_runtime import OnnxRunner

        return OnnxRunner(Path(bundle), manifest)

    def export(self, job: ExportJob, out_dir: Path) -> TargetResult:
        import onnxruntime as ort

        from calora.train.cli_support import disable_ort_telemetry

        disable_ort_telemetry()

        fmt, group = deploy_format(job.spec)
        if job.mode not in self.modes:
            raise ConfigError(f"--mode {job.mode.value}: the onnx target supports {sorted(m.value for m in self.modes)}")
        if job.kind == "generate":
            from calora.targets.onnx_genai import export_generative

            return export_generative(job, out_dir)
        out_dir = Path(out_dir)
        onnx_dir = out_dir / "onnx"
        onnx_dir.mkdir(parents=True, exist_ok=True)
        ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts), job.max_length)
        runtime_str = f"onnxruntime {ort.__version__} CPU, .ort"
        files: list[ArtifactFile] = []
        smoke: dict[str, dict] = {}
        weight_error: dict[str, float] = {}
        notes: list[str] = []
        info: dict = {}

        def merge_error(err: dict[str, float]) -> None:
            for k, v in err.items():
                weight_error[k] = max(weight_error.get(k, 0.0), v)

        if job.mode == Mode.BAKED:
            for task in job.tasks:
                model = deployable(task.model)
                trimmed = trim_positions(model, job.max_length)
                proto, info = _export(Baked(model), (ids, mask), list(INPUT_NAMES), job.max_length, model)
                proto, err, kept = _quantize(proto, model, task.model, fmt, group, accuracy_level=INT4_ACCURACY_LEVEL)
                merge_error(err)
                merge_error(_int8_embedding(proto, task.model))
                onnx_path, ort_path = onnx_dir / f"{task.name}.onnx", onnx_dir / f"{task.name}.ort"
                _save(proto, onnx_path)
                _to_ort(onnx_path, ort_path)
                files += [ArtifactFile.of(out_dir, onnx_path, "model", task.name),
                          ArtifactFile.of(out_dir, ort_path, "model", task.name)]
                sess = ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"])
                got = sess.run(list(OUTPUT_NAMES), {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
                smoke[task.name] = smoke_stats(_reference(task.model, ids, mask), got, runtime_str)
            task_switch = ("Baked: each task is its own .ort model; switching tasks means creating another "
                           "InferenceSession (or keeping one session per task in memory).")
        else:
            names = check_same_layout({t.name: t.model for t in job.tasks})
            first = job.tasks[0]
            model = deployable(first.model)
            trimmed = trim_positions(model, job.max_length)
            example = adapter_tensors(model)
            args = (ids, mask, *[example[n] for n in names])
            proto, info = _export(Swappable(model, names), args, [*INPUT_NAMES, *names], job.max_length, model)
            _adapters_as_defaulted_inputs(proto, names, job.adapter_dtype)
            proto, err, kept = _quantize(proto, model, first.model, fmt, group, adapter_inputs=set(names),
                                         accuracy_level=INT4_ACCURACY_LEVEL)
            merge_error(err)
            merge_error(_int8_embedding(proto, first.model))
            onnx_path, ort_path = onnx_dir / "backbone.onnx", onnx_dir / "backbone.ort"
            _save(proto, onnx_path)
            _to_ort(onnx_path, ort_path)
            files += [ArtifactFile.of(out_dir, onnx_path, "backbone", None),
                      ArtifactFile.of(out_dir, ort_path, "backbone", None)]
            (onnx_dir / "adapters").mkdir(exist_ok=True)
            sess = ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"])
            feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
            for task in job.tasks:
                path = onnx_dir / "adapters" / f"{task.name}.onnx_adapter"
                write_adapter(adapter_tensors(task.model, job.adapter_dtype.torch_dtype), names, path, job.fingerprint)
                files.append(ArtifactFile.of(out_dir, path, "adapter", task.name))
                got = run_with_adapter(sess, path, feed)
                smoke[task.name] = smoke_stats(_reference(task.model, ids, mask), got, runtime_str)
            load_ms, run_ms = _switch_timing(sess, onnx_dir / "adapters" / f"{job.tasks[-1].name}.onnx_adapter", feed)
            task_switch = (f"Swappable: one backbone.ort session serves every task; a task switch is loading that "
                           f"task's .onnx_adapter once (onnxruntime.LoraAdapter().Load, median {load_ms:.2f} ms here) "
                           f"and activating it per run with RunOptions.add_active_adapter (no session reload; a "
                           f"run with an active adapter took a median {run_ms:.2f} ms for {ids.shape[0]} examples "
                           f"of {ids.shape[1]} tokens on the exporting machine's CPU, not a phone).")
            notes.append(f"Swappable: the adapter tensors (LoRA, recovery, head) are {job.adapter_dtype.value} graph "
                         "inputs, cast to float32 inside the graph, with defaults that are empty along the rank "
                         "dimension (LoRA, recovery) or all-zero (head): running backbone.ort without an active "
                         ".onnx_adapter gives meaningless (zero) logits. Always activate exactly one task adapter "
                         "per run.")

        notes.append(f"Backbone linear layers stored as {fmt}"
                     + (f" (MatMulNBits, symmetric, block {group}, the trained int4 codes and scales copied "
                        "bit-for-bit)" if fmt == "int4" else
                        " (quantize_dynamic: per-channel int8 weights, int8 dynamic activations)" if fmt == "int8"
                        else " (float32)")
                     + f"; kept float32: {kept}.")
        if "embedding_max_abs" in weight_error:
            notes.append("Token embedding table stored as the trained int4 codes + float32 scales per group of "
                         f"{job.spec.embeddings.group_size} (com.microsoft GatherBlockQuantized: bit-exact with the "
                         "trained table); position and token-type embeddings stay float32."
                         if job.spec.embeddings.bits == 4 else
                         "Token embedding table stored as the trained int8 codes + float32 per-row scales "
                         "(Gather codes, Gather scales, Cast, Mul: bit-exact with the trained table); position "
                         "and token-type embeddings stay float32.")
        else:
            notes.append("Embeddings are stored as float32 (the spec does not quantize them).")
        if fmt == "int4" and INT4_ACCURACY_LEVEL:
            notes.append(f"MatMulNBits runs with accuracy_level {INT4_ACCURACY_LEVEL}: ONNX Runtime quantizes each "
                         f"block of {group} activations to int8 and multiplies in integers (the trained model "
                         "simulated per-token int8 activations; the difference is a small source of the smoke "
                         "logit error).")
        elif fmt == "int4":
            notes.append("Activations are float32 in MatMulNBits (accuracy_level unset; level 4 measured no faster on "
                         "x86 AVX2): the trained model simulated int8 dynamic activations, a small source of the smoke "
                         "logit error.")
        if trimmed:
            notes.append(f"Position embeddings cut to the {job.max_length} positions the bundle takes "
                         f"({trimmed / 1e6:.2f} MB of float32 rows beyond max_sequence_length not stored): the "
                         f"graph's sequence dimension runs 2..{job.max_length}.")
        if not info.get("dynamic_sequence", True):
            notes.append(f"Sequence length is fixed at {job.max_length}: the dynamic-sequence export failed "
                         f"({info.get('dynamic_error')}); pad inputs to max_length.")
        notes.append("Inputs are padded to max_length by the tokenizer in the smoke run; the .onnx files are the "
                     "ONNX form of the same graphs (for Netron / desktop ONNX Runtime), the .ort files are what "
                     "ONNX Runtime Mobile loads.")
        notes.append("Re-exporting gives byte-identical .onnx files. The .ort files are logically identical (same "
                     "nodes, initializers and kernel-type table, in the same order) but their FlatBuffer byte layout "
                     "varies between conversions inside onnxruntime's serializer, so their sha256 changes per export.")
        seq_dim: int | str = "sequence" if info.get("dynamic_sequence", True) else job.max_length
        num_labels = len(job.tasks[0].label_names)
        return TargetResult(
            files=files,
            inputs=[TensorSpec(n, "int64", ("batch", seq_dim)) for n in INPUT_NAMES],
            outputs=[TensorSpec(OUTPUT_NAMES[0], "float32", ("batch", num_labels))],
            runtime={"name": "onnxruntime", "version": ort.__version__,
                     **({"backbone_activations": f"int8-block{group}"} if fmt == "int4" and INT4_ACCURACY_LEVEL
                        else {})},
            weight_error=weight_error, smoke=smoke, task_switch=task_switch, notes=notes)


# ---- export -------------------------------------------------------------------------------------
def _reference(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return Baked(model).eval()(ids, mask).float()


def _export(module: torch.nn.Module, args: tuple, input_names: list[str], max_length: int,
            model: torch.nn.Module):
    """Dynamo export with dynamic batch and sequence; falls back to a fixed sequence length."""
    module = module.eval()
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    batch = torch.export.Dim("batch", min=1)
    seq = torch.export.Dim("sequence", min=2, max=max_pos) if max_pos else torch.export.Dim("sequence", min=2)
    n_extra = len(args) - 2
    info: dict = {"dynamic_sequence": True}
    attempts = [({0: batch, 1: seq}, True), ({0: batch}, False)]
    last: Exception | None = None
    for dims, dynamic_seq in attempts:
        dynamic_shapes = (dims, dims, tuple([None] * n_extra)) if n_extra else (dims, dims)
        try:
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
                # torch.export first: the Swappable module's *adapter varargs need a tuple in
                # dynamic_shapes, which torch.onnx.export's own argument handling turns into a list.
                ep = torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
                prog = torch.onnx.export(ep, args, dynamo=True, input_names=input_names,
                                         output_names=list(OUTPUT_NAMES), opset_version=OPSET, verbose=False)
            info["dynamic_sequence"] = dynamic_seq
            if not dynamic_seq:
                info["dynamic_error"] = f"{type(last).__name__}: {str(last)[:200]}"
            proto = prog.model_proto
            _strip_metadata(proto)
            return proto, info
        except Exception as exc:  # noqa: BLE001 - retried with a fixed sequence, then re-raised
            last = exc
    raise last  # type: ignore[misc]


def _strip_metadata(proto) -> None:
    """Drop the exporter's per-node metadata (source stack traces with local paths, FX names): it is
    most of a small model's bytes and would make the files depend on where calora is installed."""
    graph = proto.graph
    for coll in (graph.node, graph.input, graph.output, graph.initializer, graph.value_info):
        for item in coll:
            item.ClearField("metadata_props")
    graph.ClearField("metadata_props")
    proto.ClearField("metadata_props")


#: Adapter tensor names whose first / second dimension is the low rank (peft's and calora's layouts:
#: lora_A and recovery.down are (rank, in); lora_B and recovery.up are (out, rank)).
_RANK_DIM = {".lora_A.weight": 0, ".recovery.down.weight": 0, ".lora_B.weight": 1, ".recovery.up.weight": 1}


def _rank_dim(name: str) -> int | None:
    return next((d for suffix, d in _RANK_DIM.items() if name.endswith(suffix)), None)


def _adapters_as_defaulted_inputs(proto, names: list[str], dtype: AdapterDType = AdapterDType.FLOAT32) -> None:
    """Make each adapter graph input an overridable initializer that an active LoRA adapter replaces
    (ONNX Runtime then does not demand a feed for it), stored in `dtype` and cast to float32 once.

    The defaults are empty along the rank dimension (a LoRA A of [8, 384] gets a [0, 384] default,
    its rank dimension symbolic): a product through a zero rank is exactly zero, so without an
    active adapter the LoRA and recovery branches add nothing, and the shared backbone file carries
    no adapter-sized block of zeros (1.65 MB on MiniLM when the defaults were full-size). Head
    tensors keep full-size all-zero defaults (a few KB; their shapes fix the output's)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    inputs = {i.name: i for i in graph.input}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise RuntimeError(f"the exported graph lost adapter inputs {missing[:3]}")
    np_dtype = np.float16 if dtype == AdapterDType.FLOAT16 else np.float32
    casts = []
    for n in names:
        t = inputs[n].type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        rank_dim = _rank_dim(n)
        if rank_dim is not None:
            shape[rank_dim] = 0
            t.shape.dim[rank_dim].Clear()
            t.shape.dim[rank_dim].dim_param = "lora_rank" if ".lora_" in n else "recovery_rank"
        graph.initializer.append(numpy_helper.from_array(np.zeros(shape, dtype=np_dtype), n))
        if dtype == AdapterDType.FLOAT16:
            t.elem_type = TensorProto.FLOAT16
            casts.append(helper.make_node("Cast", [n], [n + "_f32"], name=n + "_cast", to=TensorProto.FLOAT))
    if casts:
        renamed = {c.input[0]: c.output[0] for c in casts}
        for node in graph.node:
            for i, x in enumerate(node.input):
                if x in renamed:
                    node.input[i] = renamed[x]
        nodes = [*casts, *graph.node]
        graph.ClearField("node")
        graph.node.extend(nodes)
    # The exporter's intermediate shapes name the concrete rank; ONNX Runtime infers them again.
    graph.ClearField("value_info")


def _save(proto, path: Path) -> None:
    import onnx

    onnx.save_model(proto, str(path))


def _to_ort(onnx_path: Path, ort_path: Path) -> None:
    """onnxruntime.tools.convert_onnx_models_to_ort (its default 'fixed' optimization style; the NCHWc
    transformer excluded as for an ARM phone) into a scratch folder, then move the .ort into place."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in" / "model.onnx"
        src.parent.mkdir()
        shutil.copyfile(onnx_path, src)
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(src, output_dir=Path(tmp) / "out", optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform="arm")
        shutil.move(str(Path(tmp) / "out" / "model.ort"), ort_path)


# ---- quantization -------------------------------------------------------------------------------
def _backbone_weights(model: torch.nn.Module) -> dict[bytes, str]:
    """sha256 of the transposed (in, out) float32 weight -> backbone linear name."""
    out = {}
    for name in backbone_linears(model):
        w = model.get_submodule(name).weight.detach().float().numpy()
        out[_digest(np.ascontiguousarray(w.T))] = name
    return out


def _digest(a: np.ndarray) -> bytes:
    return hashlib.sha256(str(a.shape).encode() + a.astype(np.float32).tobytes()).digest()


def _int8_embedding(proto, trained: torch.nn.Module) -> dict[str, float]:
    """Store the token embedding table as the trained integer codes and scales.

    int8 (one scale per row): each Gather of the float table becomes Gather(codes) -> Cast ->
    Mul(Gather(scales)), a quarter of the bytes. int4 (one scale per group): one com.microsoft
    GatherBlockQuantized over the codes packed two per byte (stored code + 8, ONNX Runtime's default
    zero point 8 for 4-bit data in uint8), an eighth of the bytes. Both compute codes * scale in
    float32 exactly as training did, so the values are bit-identical. Returns
    {"embedding_max_abs": error} (0.0), or {} when the trained model has no quantized embedding."""
    from onnx import TensorProto, helper, numpy_helper

    from calora.train.quant import QuantEmbedding

    emb = next((m for m in trained.modules() if isinstance(m, QuantEmbedding)), None)
    if emb is None:
        return {}
    table = emb.weight.detach().cpu().numpy()
    codes = emb.codes.detach().cpu().numpy().astype(np.int8)
    scale = emb.scale.detach().cpu().numpy().astype(np.float32)
    vocab, hidden = table.shape
    group = hidden // scale.shape[1]
    graph = proto.graph
    name = next((i.name for i in graph.initializer if tuple(i.dims) == table.shape
                 and i.data_type == TensorProto.FLOAT and np.array_equal(numpy_helper.to_array(i), table)), None)
    if name is None:
        raise ConfigError("onnx: the trained token embedding table is not an initializer of the exported graph")
    users = [n for n in graph.node if name in n.input]
    if not users or any(n.op_type != "Gather" or n.input[0] != name or
                        any(a.name == "axis" and a.i != 0 for a in n.attribute) for n in users):
        raise ConfigError(f"onnx: the embedding table {name} is used by other ops than a row Gather")
    if emb.bits == 4 and (group < 16 or group & (group - 1) or hidden % 2):
        raise ConfigError(f"onnx: int4 embeddings need a power-of-two group >= 16 (GatherBlockQuantized), got {group}")
    keep = [i for i in graph.initializer if i.name != name]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if emb.bits == 4:
        q = (codes.astype(np.int16) + 8).astype(np.uint8)
        packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
        graph.initializer.extend([numpy_helper.from_array(packed, name + "_int4"),
                                  numpy_helper.from_array(scale, name + "_scale")])
    else:
        graph.initializer.extend([numpy_helper.from_array(codes, name + "_int8"),
                                  numpy_helper.from_array(scale.reshape(-1, 1), name + "_scale")])
    nodes = []
    for node in graph.node:
        if node not in users:
            nodes.append(node)
            continue
        idx, out, base = node.input[1], node.output[0], node.name or node.output[0]
        if emb.bits == 4:
            nodes.append(helper.make_node("GatherBlockQuantized", [name + "_int4", idx, name + "_scale"], [out],
                                          name=base + "_int4", domain="com.microsoft", gather_axis=0,
                                          quantize_axis=1, block_size=group, bits=4))
        else:
            nodes += [helper.make_node("Gather", [name + "_int8", idx], [out + "_q"], name=base + "_codes", axis=0),
                      helper.make_node("Gather", [name + "_scale", idx], [out + "_s"], name=base + "_scales", axis=0),
                      helper.make_node("Cast", [out + "_q"], [out + "_f"], name=base + "_cast", to=TensorProto.FLOAT),
                      helper.make_node("Mul", [out + "_f", out + "_s"], [out], name=base + "_dequant")]
    del graph.node[:]
    graph.node.extend(nodes)
    if emb.bits == 4 and not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    dequant = (codes.astype(np.float32).reshape(vocab, -1, group) * scale[..., None]).reshape(vocab, hidden)
    return {"embedding_max_abs": float(np.abs(dequant - table).max())}


def _quantize(proto, model: torch.nn.Module, trained: torch.nn.Module, fmt: str, group: int | None,
              adapter_inputs: set[str] = frozenset(), accuracy_level: int | None = None):
    """Find the backbone MatMuls, quantize only them per `fmt`; returns (proto, weight_error, kept-float text).
    `accuracy_level`: MatMulNBits' activation precision for int4 (None: float activations)."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    by_digest = _backbone_weights(model)
    # Rewrite backbone Gemm (2-D input, transB=1) as MatMul (+ Add), so the quantizers see it.
    new_nodes, backbone = [], {}  # backbone: node name -> (linear name, B initializer name)
    for node in graph.node:
        if node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in inits and node.input[1] not in adapter_inputs:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            b = numpy_helper.to_array(inits[node.input[1]])
            bt = b.T if attrs.get("transB", 0) else b
            lin = by_digest.get(_digest(np.ascontiguousarray(bt))) if b.ndim == 2 else None
            if lin and not attrs.get("transA", 0) and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
                bname = node.input[1] + "_t" if attrs.get("transB", 0) else node.input[1]
                if bname not in inits:
                    t = numpy_helper.from_array(np.ascontiguousarray(bt), bname)
                    graph.initializer.append(t)
                    inits[bname] = t
                has_c = len(node.input) > 2 and node.input[2]
                mm_out = node.output[0] + "_mm" if has_c else node.output[0]
                mm = helper.make_node("MatMul", [node.input[0], bname], [mm_out], name=node.name + "_matmul")
                new_nodes.append(mm)
                backbone[mm.name] = (lin, bname)
                if has_c:
                    new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                                      name=node.name + "_bias"))
                continue
        if node.op_type == "MatMul" and node.input[1] in inits and node.input[1] not in adapter_inputs:
            b = numpy_helper.to_array(inits[node.input[1]])
            lin = by_digest.get(_digest(np.ascontiguousarray(b))) if b.ndim == 2 else None
            if lin:
                backbone[node.name] = (lin, node.input[1])
        new_nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    # Drop initializers no node uses any more (the pre-transpose Gemm weights).
    used = {i for n in graph.node for i in n.input} | {i.name for i in graph.input}
    keep = [i for i in graph.initializer if i.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(keep)

    expected = set(backbone_linears(model))
    found = {lin for lin, _ in backbone.values()}
    if found != expected:
        raise RuntimeError(f"onnx export: could not find the backbone linears {sorted(expected - found)[:3]} in "
                           "the exported graph (the exporter changed their weights?)")
    matmuls = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    others = [n for n in matmuls if n not in backbone]
    kept = (f"{len(others)} MatMul/Gemm nodes (LoRA lora_A/lora_B, recovery down/up, classifier head, "
            f"attention score products); {len(backbone)} backbone MatMuls quantized" if fmt != "none"
            else "everything")
    trained_w = {lin: model.get_submodule(lin).weight.detach().float().numpy() for lin, _ in backbone.values()}

    with _quiet():
        proto = _run_quantizer(proto, backbone, others, trained, fmt, group, accuracy_level)
    err = _stored_weight_error(proto, backbone, trained_w, fmt)
    proto.producer_name = "calora"
    return proto, {"backbone_linear_max_abs": err}, kept


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizers log every node at INFO (and configure the root logger): mute that."""
    import logging

    before = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(before)


def _run_quantizer(proto, backbone: dict, others: list[str], trained, fmt: str, group: int | None,
                   accuracy_level: int | None = None):
    import onnx

    if fmt == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(proto, bits=4, block_size=group, is_symmetric=True, nodes_to_exclude=others,
                                 accuracy_level=accuracy_level)
        q.process()
        proto = q.model.model
        _use_trained_int4_codes(proto, backbone, trained, group)
    elif fmt == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
            onnx.save_model(proto, str(src))
            quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8,
                             nodes_to_quantize=list(backbone), op_types_to_quantize=["MatMul"],
                             extra_options={"MatMulConstBOnly": True})
            proto = onnx.load_model(str(dst))
    return proto


def _matmulnbits_nodes(proto) -> dict[str, Any]:
    """B-initializer base name -> MatMulNBits node (the quantizer names B as '<orig>_Q4')."""
    out = {}
    for n in proto.graph.node:
        if n.op_type == "MatMulNBits":
            out[n.input[1]] = n
    return out


def _use_trained_int4_codes(proto, backbone: dict, trained: torch.nn.Module, group: int) -> None:
    """Overwrite MatMulNBits' B and scales with the trained codes/scales where the trained layer holds
    int4 codes with this group size (then the stored weights equal the trained ones bit for bit)."""
    from onnx import numpy_helper

    from calora.train.quant import QuantLinear

    inits = {i.name: i for i in proto.graph.initializer}
    nodes = _matmulnbits_nodes(proto)
    modules = dict(trained.named_modules())
    for lin, bname in backbone.values():
        node = nodes.get(bname + "_Q4")
        mod = modules.get(lin)
        if node is None:
            raise RuntimeError(f"MatMulNBitsQuantizer did not quantize backbone linear {lin}")
        if not (isinstance(mod, QuantLinear) and mod.bits == 4 and mod.group_size == group):
            continue
        codes = mod.codes.detach().to(torch.int16).numpy()  # (N, K), in [-8, 7]
        scale = mod.scale.detach().float().numpy()  # (N, K // group)
        n_out, k_in = codes.shape
        q = (codes + 8).astype(np.uint8).reshape(n_out, k_in // group, group)
        packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        b_old, s_old = inits[node.input[1]], inits[node.input[2]]
        if tuple(b_old.dims) != packed.shape or int(np.prod(s_old.dims)) != scale.size:
            raise RuntimeError(f"unexpected MatMulNBits layout for {lin}: B {list(b_old.dims)}, scales {list(s_old.dims)}")
        b_old.CopyFrom(numpy_helper.from_array(packed, b_old.name))
        s_old.CopyFrom(numpy_helper.from_array(scale.reshape(tuple(s_old.dims)).astype(np.float32), s_old.name))


def _stored_weight_error(proto, backbone: dict, trained_w: dict[str, np.ndarray], fmt: str) -> float:
    """max |dequantized stored weight - trained weight| over the backbone linears, read from the graph."""
    from onnx import helper, numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    err = 0.0
    if fmt == "none":
        for lin, bname in backbone.values():
            err = max(err, float(np.abs(inits[bname].T - trained_w[lin]).max()))
        return err
    if fmt == "int4":
        nodes = _matmulnbits_nodes(proto)
        for lin, bname in backbone.values():
            node = nodes[bname + "_Q4"]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            k, n, bs = attrs["K"], attrs["N"], attrs["block_size"]
            packed = inits[node.input[1]].reshape(n, -1)
            q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1)[:, :k].astype(np.float32)
            zp = 8.0
            if len(node.input) > 3 and node.input[3]:
                raise RuntimeError("asymmetric MatMulNBits is not expected here")
            scales = inits[node.input[2]].reshape(n, -1).astype(np.float32)
            w = (q - zp) * np.repeat(scales, bs, axis=1)[:, :k]  # (N, K)
            err = max(err, float(np.abs(w - trained_w[lin]).max()))
        return err
    # int8 dynamic: '<B>_quantized', '<B>_scale', '<B>_zero_point', per channel along N
    for lin, bname in backbone.values():
        q = inits[bname + "_quantized"].astype(np.float32)  # (K, N)
        scale = inits[bname + "_scale"].astype(np.float32)
        zp = inits[bname + "_zero_point"].astype(np.float32)
        w = (q - zp) * scale  # broadcast over the N axis
        err = max(err, float(np.abs(w.T - trained_w[lin]).max()))
    return err


# ---- adapters -----------------------------------------------------------------------------------
def write_adapter(tensors: dict[str, torch.Tensor], names: list[str], path: Path, backbone_fingerprint: str) -> None:
    """An ONNX Runtime LoRA adapter file holding one task's tensors under the graph's input names,
    in their dtype (the backbone's adapter inputs are declared with the same one).
    The format's only model link is an integer model version: it carries 28 bits of the compressed
    backbone's fingerprint, which calora-validate checks against the bundle's backbone."""
    import onnxruntime as ort

    arrays = {n: np.ascontiguousarray(tensors[n].detach().numpy()).copy() for n in names}
    # OrtValue.ortvalue_from_numpy does not copy: `arrays` must outlive export_adapter.
    values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in arrays.items()}
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(fingerprint_version(backbone_fingerprint))
    fmt.set_parameters(values)
    fmt.export_adapter(str(path))
    del values, arrays


def run_with_adapter(sess, adapter_path: Path, feed: dict) -> np.ndarray:
    import onnxruntime as ort

    adapter = ort.LoraAdapter()
    adapter.Load(str(adapter_path))
    opts = ort.RunOptions()
    opts.add_active_adapter(adapter)
    return sess.run(list(OUTPUT_NAMES), feed, run_options=opts)[0]


def _switch_timing(sess, adapter_path: Path, feed: dict, repeats: int = 5) -> tuple[float, float]:
    import onnxruntime as ort

    loads, runs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        adapter = ort.LoraAdapter()
        adapter.Load(str(adapter_path))
        t1 = time.perf_counter()
        opts = ort.RunOptions()
        opts.add_active_adapter(adapter)
        sess.run(list(OUTPUT_NAMES), feed, run_options=opts)
        t2 = time.perf_counter()
        loads.append((t1 - t0) * 1e3)
        runs.append((t2 - t1) * 1e3)
    return statistics.median(loads), statistics.median(runs)


__all__ = ["OnnxTarget", "deploy_format", "write_adapter", "run_with_adapter"]
