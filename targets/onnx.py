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
4. `.ort` conversion as `onnxruntime.tools.convert_onnx_models_to_ort` does it (every graph
   optimization applied and saved, the NCHWc transformer excluded as for an ARM phone), except that
   classification models keep Add + LayerNormalization unfused (`CLASSIFY_UNFUSED`), and a smoke
   run of each `.ort` against PyTorch.
"""

from __future__ import annotations

import contextlib
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
                                 check_same_layout, deployable, example_inputs, smoke_stats,
                                 trim_positions)
from calora.targets import adapter_codec
from calora.targets.onnx_adapter_inputs import INT8_NOTE, adapters_as_defaulted_inputs
from calora.targets.onnx_attention import use_fused_attention
from calora.targets.onnx_quant import quantize_backbone, store_trained_embedding
from calora.targets.base import (Activations, AdapterDType, ArtifactFile, Attention, ExportJob, Mode, TargetResult,
                                 TensorSpec, fingerprint_version, keep_worst)
from calora.train.errors import ConfigError

OPSET = 21  # MatMulNBits is com.microsoft; opset 21 is the one the dynamo exporter and ORT 1.32 both handle
#: MatMulNBits accuracy_level for the int4 backbone linears: None = float activations (ONNX
#: Runtime's default). Level 4 (int8 activations: MLAS quantizes each block of `group` inputs to
#: int8 and multiplies in integers) was measured side by side on MiniLM (batch 1, 64 tokens, 2 AVX2
#: x86 cores without VNNI): 13.24 ms against 12.83 ms per example at level 0, with the same parity
#: (docs/RESULTS.md). On SmolLM2-135M (a Xeon with VNNI and AMX, 2026-12-06) level 4 was 1.23x
#: slower (101.1 against 82.3 ms). So float stays the default; on CPUs with int8 dot-product
#: instructions (ARM sdot/i8mm) level 4 may win, which these machines cannot show, so bundles take it
#: with `--activations int8` (`body_accuracy_level`), validated with the int8-activation gates. The
#: generative LM head is the exception (8-bit B has no fast float path: onnx_graph_gen.py).
INT4_ACCURACY_LEVEL: int | None = None


def body_accuracy_level(job: ExportJob, fmt: str) -> int | None:
    """MatMulNBits' accuracy_level for the int4 backbone linears from `--activations` (None: float
    activations), or one clear error for a choice this bundle cannot make."""
    requested = job.activations
    if requested is None:
        return None
    flag = f"--activations {requested.value}"
    if fmt == "int8" and requested == Activations.FLOAT32:
        raise ConfigError(f"{flag}: this backbone is int8 (--compression {job.spec}), which ONNX Runtime runs with "
                          "int8 activations (DynamicQuantizeLinear); drop the flag")
    if requested == Activations.INT8 and fmt != "int8":
        if fmt != "int4":
            raise ConfigError(f"{flag}: only an int4 backbone's MatMulNBits can run int8 activations; this one is "
                              f"{fmt} (--compression {job.spec})")
        return 4
    return None


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
        level = body_accuracy_level(job, fmt)  # refuses what this bundle cannot run, before any lowering
        if job.kind == "generate":
            if job.attention == Attention.OPS:  # refused, not ignored
                raise ConfigError("--attention ops: generative ONNX graphs always write attention as "
                                  "GroupQueryAttention (onnxruntime-genai's contract); drop the flag")
            from calora.targets.onnx_genai import export_generative

            return export_generative(job, out_dir, level)
        acc = level if level is not None else INT4_ACCURACY_LEVEL  # the int4 linears' accuracy_level
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

        fused: list[bool] = []
        if job.mode == Mode.BAKED:
            for task in job.tasks:
                model = deployable(task.model)
                trimmed = trim_positions(model, job.max_length)
                fused.append(job.attention != Attention.OPS and use_fused_attention(model))
                proto, info = _export(Baked(model), (ids, mask), list(INPUT_NAMES), job.max_length, model)
                proto, err, kept = quantize_backbone(proto, model, task.model, fmt, group, accuracy_level=acc)
                keep_worst(weight_error, err)
                keep_worst(weight_error, store_trained_embedding(proto, task.model))
                onnx_path, ort_path = onnx_dir / f"{task.name}.onnx", onnx_dir / f"{task.name}.ort"
                _save(proto, onnx_path)
                _to_ort(onnx_path, ort_path, CLASSIFY_UNFUSED)
                files += [ArtifactFile.of(out_dir, onnx_path, "model", task.name),
                          ArtifactFile.of(out_dir, ort_path, "model", task.name)]
                sess = ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"])
                got = run_logits(sess, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()},
                                 rows_one_by_one=per_example(job.spec))
                smoke[task.name] = smoke_stats(_reference(task.model, ids, mask), got, runtime_str)
            task_switch = ("Baked: each task is its own .ort model; switching tasks means creating another "
                           "InferenceSession (or keeping one session per task in memory).")
        else:
            names = check_same_layout({t.name: t.model for t in job.tasks})
            first = job.tasks[0]
            model = deployable(first.model)
            trimmed = trim_positions(model, job.max_length)
            fused.append(job.attention != Attention.OPS and use_fused_attention(model))
            example = adapter_tensors(model)
            args = (ids, mask, *[example[n] for n in names])
            proto, info = _export(Swappable(model, names), args, [*INPUT_NAMES, *names], job.max_length, model)
            adapters_as_defaulted_inputs(proto, names, job.adapter_dtype)
            proto, err, kept = quantize_backbone(proto, model, first.model, fmt, group, adapter_inputs=set(names),
                                         accuracy_level=acc)
            keep_worst(weight_error, err)
            keep_worst(weight_error, store_trained_embedding(proto, first.model))
            onnx_path, ort_path = onnx_dir / "backbone.onnx", onnx_dir / "backbone.ort"
            _save(proto, onnx_path)
            _to_ort(onnx_path, ort_path, CLASSIFY_UNFUSED)
            files += [ArtifactFile.of(out_dir, onnx_path, "backbone", None),
                      ArtifactFile.of(out_dir, ort_path, "backbone", None)]
            (onnx_dir / "adapters").mkdir(exist_ok=True)
            sess = ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"])
            feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
            for task in job.tasks:
                path = onnx_dir / "adapters" / f"{task.name}.onnx_adapter"
                write_adapter(adapter_tensors(task.model, job.adapter_dtype),
                              adapter_codec.stored_names(names, job.adapter_dtype), path, job.fingerprint)
                files.append(ArtifactFile.of(out_dir, path, "adapter", task.name))
                got = run_with_adapter(sess, path, feed, per_example(job.spec))
                smoke[task.name] = smoke_stats(_reference(task.model, ids, mask), got, runtime_str)
            load_ms, run_ms = _switch_timing(sess, onnx_dir / "adapters" / f"{job.tasks[-1].name}.onnx_adapter", feed)
            task_switch = (f"Swappable: one backbone.ort session serves every task; a task switch is loading that "
                           f"task's .onnx_adapter once (onnxruntime.LoraAdapter().Load, median {load_ms:.2f} ms here) "
                           f"and activating it per run with RunOptions.add_active_adapter (no session reload; a "
                           f"run with an active adapter took a median {run_ms:.2f} ms for {ids.shape[0]} examples "
                           f"of {ids.shape[1]} tokens on the exporting machine's CPU, not a phone).")
            notes.append(f"Swappable: the adapter tensors (LoRA, recovery, head) are {job.adapter_dtype.value} graph "
                         f"inputs{INT8_NOTE if job.adapter_dtype == AdapterDType.INT8 else ''}, "
                         "widened to float32 inside the graph, with defaults that are empty along the rank "
                         "dimension (LoRA, recovery) or all-zero (head): running backbone.ort without an active "
                         ".onnx_adapter gives meaningless (zero) logits. Always activate exactly one task adapter "
                         "per run.")

        notes.append(f"Backbone linear layers stored as {fmt}"
                     + (f" (MatMulNBits, symmetric, block {group}, the trained int4 codes and scales copied "
                        "bit-for-bit)" if fmt == "int4" else
                        " (quantize_dynamic: per-channel int8 weights, the trained int8 codes and scales copied "
                        "bit-for-bit; activations quantized to int8 per tensor at run time)" if fmt == "int8"
                        else " (float32)")
                     + f"; kept float32: {kept}.")
        if fused and all(fused):
            notes.append("Self-attention runs as one com.microsoft MultiHeadAttention node per layer (ONNX Runtime's "
                         "fused CPU kernel; the padding mask is its additive attention_bias); the projections and "
                         "their adapters are the model's own nodes.")
        elif job.attention == Attention.OPS:
            notes.append("Self-attention is exported op by op (--attention ops).")
        else:
            notes.append("Self-attention is exported op by op (this model does not take a registered attention "
                         "implementation, or its key heads differ from its query heads).")
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
        if fmt == "int4" and acc:
            notes.append(f"MatMulNBits runs with accuracy_level {acc} (--activations int8): ONNX Runtime quantizes each "
                         f"block of {group} activations to int8 and multiplies in integers (the trained model "
                         "simulated per-token int8 activations; the two round independently, so validation holds "
                         "this bundle to the int8-activation gates).")
        elif fmt == "int4":
            notes.append("Activations are float32 in MatMulNBits (accuracy_level unset; level 4, --activations int8, "
                         "measured no faster per example on x86, 1.23x slower on SmolLM2): the trained model simulated "
                         "int8 dynamic activations, so validation compares this bundle with the same weights run float.")
        if fmt == "int8":
            notes.append("Run it at batch 1 (one example per run): DynamicQuantizeLinear gives a batch one int8 "
                         "scale, so each row's result would depend on the others in the batch."
                         + (" The trained model simulated exactly this (--compression act:tensor)."
                            if job.spec.per_tensor_activations else
                            " The trained model simulated per-token int8 activations (XNNPACK's scheme): expect a "
                            "larger logit error than ExecuTorch's; for ONNX Runtime train with "
                            "--compression ...+act:tensor."))
        if trimmed:
            notes.append(f"Position embeddings cut to the {job.max_length} positions the bundle takes "
                         f"({trimmed / 1e6:.2f} MB of float32 rows beyond max_sequence_length not stored): the "
                         f"graph's sequence dimension runs 2..{job.max_length}.")
        if not info.get("dynamic_sequence", True):
            notes.append(f"Sequence length is fixed at {job.max_length}: the dynamic-sequence export failed "
                         f"({info.get('dynamic_error')}); pad inputs to max_length.")
        notes.append("The .ort files keep each residual Add + LayerNormalization unfused (ONNX Runtime's "
                     "SkipLayerNormalization CPU kernel measured 4x slower on x86); an app that loads the .onnx "
                     "instead gets that fusion unless it creates the session with "
                     f"disabled_optimizers={list(CLASSIFY_UNFUSED)}.")
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
                     "attention": Attention.FUSED.value if fused and all(fused) else Attention.OPS.value,
                     # picks validation's reference and gates (calora.validate.thresholds.runtime_activations)
                     "activations": "int8-dynamic" if fmt == "int8" or (fmt == "int4" and acc) else "float32",
                     **({"backbone_activations": "int8-per-tensor"} if fmt == "int8" else {}),
                     **({"backbone_activations": f"int8-block{group}"} if fmt == "int4" and acc else {})},
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


def _save(proto, path: Path) -> None:
    import onnx

    onnx.save_model(proto, str(path))


#: graph optimizations the classification .ort files are converted without. SkipLayerNormFusion turns
#: each residual Add + LayerNormalization into one SkipLayerNormalization, whose CPU kernel took about
#: 69 us per [64, 384] call on MiniLM-L6 against 17 us for LayerNormalization; unfused, the same
#: .onnx ran 8-13% faster per example (int4 9.45 -> 8.70 ms, int8 4.78 -> 4.14 ms), the logits
#: equal to 4e-7; a SmolLM2 (RMSNorm) classifier ran the same either way (CPU-X x86, 2026-12-07,
#: docs/results/2026-12-07/fused-attention/skipln_probe_*.txt). Measured on x86 only, not on ARM.
CLASSIFY_UNFUSED = ("SkipLayerNormFusion",)


def _to_ort(onnx_path: Path, ort_path: Path, unfused: tuple[str, ...] = ()) -> None:
    """Convert to the ORT format as `onnxruntime.tools.convert_onnx_models_to_ort` does (its default
    'fixed' style: every optimization applied at conversion and saved; the NCHWc transformer
    excluded as for an ARM phone), leaving out the optimizers named in `unfused` too; written to a
    scratch file, then moved into place."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "model.ort"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(scratch)
        so.add_session_config_entry("session.save_model_format", "ORT")
        with contextlib.redirect_stdout(io.StringIO()):
            ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=["NchwcTransformer", *unfused])
        shutil.move(str(scratch), ort_path)


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


def per_example(spec: Any) -> bool:
    """Whether a bundle's rows must run one per `session.run`: int8 backbones quantize their
    activations per tensor (DynamicQuantizeLinear), so a batch would share one scale across its
    examples and give each a result that depends on the others. The app runs batch 1."""
    return deploy_format(spec)[0] == "int8"


def run_logits(sess, feed: dict, run_options=None, rows_one_by_one: bool = False) -> np.ndarray:
    """The logits of `feed`'s rows: one run for the batch, or one run per row."""
    if not rows_one_by_one:
        return sess.run(list(OUTPUT_NAMES), feed, run_options=run_options)[0]
    n = next(iter(feed.values())).shape[0]
    return np.concatenate([sess.run(list(OUTPUT_NAMES), {k: v[i:i + 1] for k, v in feed.items()},
                                    run_options=run_options)[0] for i in range(n)])


def run_with_adapter(sess, adapter_path: Path, feed: dict, rows_one_by_one: bool = False) -> np.ndarray:
    import onnxruntime as ort

    adapter = ort.LoraAdapter()
    adapter.Load(str(adapter_path))
    opts = ort.RunOptions()
    opts.add_active_adapter(adapter)
    return run_logits(sess, feed, opts, rows_one_by_one)


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


__all__ = ["OnnxTarget", "deploy_format", "per_example", "run_logits", "write_adapter", "run_with_adapter"]
