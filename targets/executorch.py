"""ExecuTorch target: XNNPACK-delegated .pte programs (8da4w / 8da8w backbone linears).

Baked mode writes one program per task (`executorch/<task>.pte`). Swappable mode writes one
program (`executorch/backbone.pte`) whose `forward` takes the task's adapter tensors (LoRA,
recovery, head) as extra inputs after `input_ids` and `attention_mask`, plus one safetensors file
per task (`executorch/adapters/<task>.safetensors`) holding those tensors; the order the method
expects is stored in the file's metadata (`calora.input_order`, a JSON list).

Why the backbone codes are copied instead of re-quantized: torchao's quantizer, run again on the
trained (already on-grid) weights, does not reproduce them: a group whose largest magnitude rounded
to code -8 has a dequantized amax of 8*scale, so a second pass picks a different scale. The
trained integer codes and scales are therefore written into torchao's quantized tensors directly,
which makes the stored weights bit-identical to the trained ones (weight_error 0.0).

Heavy SDKs (torch.export, executorch, torchao) are imported inside methods only.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import ClassVar

from calora.targets import adapter_codec
from calora.targets.base import (AdapterDType, ArtifactFile, Attention, ExportJob, Mode, TargetResult, TensorSpec,
                                keep_worst, step)
from calora.train.errors import ConfigError

ADAPTER_ORDER_KEY = "calora.input_order"
BACKBONE_KEY = "calora.backbone_fingerprint"  # the compressed backbone the adapter was trained on
_EMBEDDING = ("word_embeddings", "embed_tokens")  # BERT-family, Llama-family


def _runtime_version() -> str:
    from importlib.metadata import version

    return version("executorch")


def _weight_format(spec) -> tuple[str, int | None]:
    """('int4', group) / ('int8', None) / ('none', None) for the backbone linears."""
    from calora.targets.base import refuse_per_tensor_activations
    from calora.train.spec import QuantScheme

    refuse_per_tensor_activations(spec, "executorch", "(XNNPACK) quantizes them per token")
    quant, group = spec.deployed()
    if quant == QuantScheme.INT4:
        return "int4", group
    if quant == QuantScheme.INT8:
        return "int8", None
    if quant == QuantScheme.NONE:
        return "none", None
    raise ConfigError(f"compression.quant={quant.value!r} cannot be represented by the ExecuTorch target "
                      "(it runs int4 per-group or int8 per-channel weights with int8 dynamic activations)")


class ExecuTorchTarget:
    name: ClassVar[str] = "executorch"
    modes: ClassVar[frozenset[Mode]] = frozenset({Mode.BAKED, Mode.SWAPPABLE, Mode.SHARED})

    # ---- model preparation ----------------------------------------------------------------------
    def _prepare(self, trained, spec, notes: list[str] | None = None) -> tuple[object, dict[str, float], dict]:
        """deployable() copy with backbone linears (and, if asked, the token embedding) converted to
        torchao quantized tensors carrying the trained codes and scales. Returns (model,
        weight_error, info)."""
        import torch
        from torch import nn

        from calora.export.graph import backbone_linears, deployable
        from calora.train.quant import QuantEmbedding, QuantLinear
        from calora.train.spec import EmbeddingQuant

        fmt, group = _weight_format(spec)
        model = deployable(trained)
        names = backbone_linears(model)
        info: dict = {"format": fmt, "group_size": group, "linears": len(names), "embedding": "float32"}
        if fmt == "none":
            return model, {"backbone_linear_max_abs": 0.0}, info

        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
        from torchao.quantization.granularity import PerAxis, PerGroup

        for n in names:
            in_f = model.get_submodule(n).in_features
            if fmt == "int4" and in_f % group:
                raise ConfigError(f"compression.group_size={group} does not divide in_features={in_f} of {n}")
        trained_w = {n: model.get_submodule(n).weight.detach().clone() for n in names}
        wanted = set(names)
        config = (Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group))
                  if fmt == "int4" else
                  Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)))
        quantize_(model, config, filter_fn=lambda mod, fqn: fqn in wanted and isinstance(mod, nn.Linear))
        copied = 0
        for n in names:
            w = model.get_submodule(n).weight
            src = trained.get_submodule(n)
            if isinstance(src, QuantLinear) and tuple(src.codes.shape) == tuple(w.qdata.shape) \
                    and src.scale.numel() == w.scale.numel():
                w.qdata = src.codes.detach().clone().to(torch.int8).contiguous()
                w.scale = src.scale.detach().clone().to(w.scale.dtype).reshape(w.scale.shape).contiguous()
                w.zero_point = torch.zeros_like(w.zero_point)
                copied += 1
        info["codes_copied"] = copied
        err = max((float((model.get_submodule(n).weight.dequantize().float() - trained_w[n]).abs().max())
                   for n in names), default=0.0)
        weight_error = {"backbone_linear_max_abs": err}

        if spec.embeddings != EmbeddingQuant.NONE:
            emb_name = next((n for n, m in trained.named_modules()
                             if n.endswith(_EMBEDDING) and isinstance(m, QuantEmbedding)), None)
            if emb_name is not None:
                from torchao.quantization import IntxWeightOnlyConfig

                src = trained.get_submodule(emb_name)
                before = model.get_submodule(emb_name).weight.detach().clone()
                # padding_idx only affects gradients; with it the traced aten.embedding carries an
                # extra argument and ExecuTorch's embedding_byte fusion pattern does not match.
                model.get_submodule(emb_name).padding_idx = None
                int4 = src.bits == 4
                quantize_(model, IntxWeightOnlyConfig(weight_dtype=torch.int4 if int4 else torch.int8,
                                                      granularity=PerGroup(src.group_size) if int4 else PerAxis(0)),
                          filter_fn=lambda mod, fqn: fqn == emb_name)
                w = model.get_submodule(emb_name).weight
                w.qdata = src.codes.detach().clone().to(torch.int8).contiguous()
                w.scale = src.scale.detach().clone().to(w.scale.dtype).reshape(w.scale.shape).contiguous()
                w.zero_point = torch.zeros_like(w.zero_point)
                weight_error["embedding_max_abs"] = float((w.dequantize().float() - before).abs().max())
                info["embedding"] = f"int4 group {src.group_size}" if int4 else "int8 per-row"
                info["embedding_name"] = emb_name
        return model, weight_error, info

    # ---- lowering -------------------------------------------------------------------------------
    def _lower(self, module, example: tuple, dynamic_weights: bool = False,
               keep: frozenset[str] | None = None) -> tuple[bytes, dict, bytes | None]:
        """torch.export -> XNNPACK lowering -> (quantized embedding fusion) -> (.pte bytes, graph
        stats, None). `keep` (shared mode): the module paths of the task's adapter, whose constants
        stay in the program; every other constant goes to the external data returned third, the
        bytes of backbone.ptd (`executorch_shared`)."""
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.passes.quant_fusion_pass import quant_fusion_and_const_prop_pass

        from .executorch_shared import external_data, external_tag, tag_backbone_constants

        t0 = time.perf_counter()
        ep = torch.export.export(module.eval(), example, strict=False)
        if keep is not None:
            ep = tag_backbone_constants(ep, keep)
        # Swappable: the adapter tensors are method inputs, so their float linears have non-constant
        # weights; XNNPACK's partitioner leaves those on portable kernels unless told to take them.
        partitioner = XnnpackPartitioner(force_non_static_weights_for_f32_linear=dynamic_weights)
        edge = to_edge_transform_and_lower(ep, partitioner=[partitioner])
        # torchao's weight-only int8 embedding leaves dequantize_affine + embedding on the CPU
        # side; this pass fuses them into quantized_decomposed::embedding_byte (a portable kernel).
        quant_fusion_and_const_prop_pass(edge.exported_program())
        external = False
        if keep is not None:  # constants left outside the delegates (the int4 embedding table, norms) by name
            sig = edge.exported_program().graph_signature
            external = external_tag({**sig.inputs_to_parameters, **sig.inputs_to_buffers}, keep)
        et = edge.to_executorch(ExecutorchBackendConfig(external_constants=external))
        stats = _graph_stats(et.exported_program().graph)
        stats["lower_s"] = round(time.perf_counter() - t0, 2)
        buffer = bytes(et.buffer)  # serializing also produces the external data
        return buffer, stats, None if keep is None else external_data(et)

    def open(self, bundle: Path, manifest: dict):
        if manifest.get("kind") == "generate":
            from calora.targets.executorch_llm_runtime import ExecuTorchGenRunner

            return ExecuTorchGenRunner(Path(bundle), manifest)
        from calora.targets.executorch_runtime import ExecuTorchRunner

        return ExecuTorchRunner(Path(bundle), manifest)

    # ---- export ---------------------------------------------------------------------------------
    def export(self, job: ExportJob, out_dir: Path) -> TargetResult:
        import torch

        from calora.export.graph import Baked, Swappable, adapter_tensors, check_same_layout, example_inputs

        if job.mode not in self.modes:
            raise ConfigError(f"--mode {job.mode.value!r} is not supported by the executorch target")
        torch.manual_seed(0)
        if job.kind == "generate":
            if job.attention == Attention.OPS:  # refused, not ignored
                raise ConfigError("--attention ops: generative ExecuTorch programs always run attention in "
                                  "ExecuTorch's LLM kernels (llama::custom_sdpa with the KV cache); drop the flag")
            from calora.targets.executorch_llm import export_generative

            return export_generative(self, job, out_dir)
        out_dir = Path(out_dir)
        sub = out_dir / "executorch"
        sub.mkdir(parents=True, exist_ok=True)
        version = _runtime_version()
        runtime_label = f"ExecuTorch {version} runtime, XNNPACK"
        ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts), job.max_length)
        example = (ids[:1].contiguous(), mask[:1].contiguous())
        notes: list[str] = []
        files: list[ArtifactFile] = []
        smoke: dict[str, dict] = {}
        inputs = [TensorSpec("input_ids", "int64", (1, job.max_length)),
                  TensorSpec("attention_mask", "int64", (1, job.max_length))]
        outputs = [TensorSpec("logits", "float32", (1, len(job.tasks[0].label_names)))]

        rewrites: list[dict[str, str]] = []
        if job.mode == Mode.BAKED:
            programs, weight_error, info = task_programs(self, job, sub, out_dir, example, (ids, mask), smoke, notes,
                                                         rewrites, runtime_label)
            files += programs
            task_switch = ("Baked: each task is its own .pte; switching tasks means loading another program "
                           "(Runtime.load_program + load_method) and XNNPACK re-initialising its delegate.")
        elif job.mode == Mode.SHARED:
            from .executorch_shared import export_shared_classifier

            weight_error, info, task_switch = export_shared_classifier(self, job, sub, out_dir, example, (ids, mask),
                                                                       files, smoke, notes, rewrites, runtime_label)
        else:
            models = {t.name: t.model for t in job.tasks}
            names = check_same_layout(models)
            first = job.tasks[0]
            model, weight_error, info = self._prepare(first.model, job.spec)
            rewrites.append(_rewrite(model, job))
            # Files store job.adapter_dtype; the program takes float32 inputs: an app widens the
            # tensors once when it loads a task (per-run casts inside the program cost XNNPACK 10%).
            adapters = {t.name: adapter_tensors(t.model, job.adapter_dtype) for t in job.tasks}
            first_ad = adapter_codec.decode(adapters[first.name], names)
            data, stats, _ = self._lower(Swappable(model, names), (*example, *first_ad), dynamic_weights=True)
            _check_delegation(stats, info, "backbone")
            path = sub / "backbone.pte"
            path.write_bytes(data)
            files.append(ArtifactFile.of(out_dir, path, "backbone", None))
            notes.append(f"backbone.pte: {_describe(stats, info)}; {path.stat().st_size} bytes")
            from calora.export.graph import smoke_stats

            ad_dir = sub / "adapters"
            ad_dir.mkdir(exist_ok=True)
            program, method = _load(path)
            per_call: list[float] = []
            for task in job.tasks:
                ad_path = ad_dir / f"{task.name}.safetensors"
                write_adapter(ad_path, adapters[task.name], names, task.name, task.label_names, job.fingerprint)
                files.append(ArtifactFile.of(out_dir, ad_path, "adapter", task.name))
                # Feed the adapter exactly as an app would: read the file, order by its metadata.
                extra = read_adapter(ad_path)
                got = _run_rows(method, [ids, mask], extra, timings=per_call)
                with torch.no_grad():
                    ref = Baked(task.model)(ids, mask)
                smoke[task.name] = smoke_stats(ref, got, runtime_label)
            inputs += [TensorSpec(n, "float32", tuple(t.shape)) for n, t in zip(names, first_ad)]
            med = statistics.median(per_call) * 1e3 if per_call else float("nan")
            task_switch = (f"Swappable: one backbone.pte stays loaded; switching tasks means passing another "
                           f"task's {len(names)} adapter tensors (from its .safetensors file) as the method's "
                           f"extra inputs, no program reload. Median forward with another task's adapter inputs, "
                           f"measured at export on the exporting machine: {med:.2f} ms (Python runtime, "
                           f"1 x {job.max_length} tokens).")
            notes.append(f"Adapter files are safetensors, not ExecuTorch .ptd: a .ptd only supplies named "
                         f"constants to a program at load time (and XNNPACK keys delegated constants by content "
                         f"hash), it cannot feed method inputs. The app reads executorch/adapters/<task>."
                         f"safetensors, orders its tensors by the JSON list in metadata key "
                         f"'{ADAPTER_ORDER_KEY}' (the same for every task) and calls forward(input_ids, "
                         f"attention_mask, *tensors). The file stores {job.adapter_dtype.value}; forward takes float32: "
                         f"{widen_sentence(job.adapter_dtype)} The adapter matmuls run in XNNPACK as float32 "
                         f"linears "
                         f"with non-constant weights (force_non_static_weights_for_f32_linear).")
            notes.append("Alternative measured on the tiny test model (not written): one multi-method .pte with a "
                         "baked `forward` per task was 134,920 bytes for 2 tasks vs 85,256 for one (the int4 "
                         "backbone blobs are shared, float parts are not), against 77,184 + 24,544 per task here; "
                         "it also needs a re-export to add a task.")
            del program
        if info.get("embedding") == "float32" and _wants_quantized_embedding(job.spec):
            notes.append("spec asks for quantized embeddings but no trained QuantEmbedding was found: embeddings "
                         "float32")
        elif info.get("embedding") != "float32":
            kernel = "embedding_4bit" if info["embedding"].startswith("int4") else "embedding_byte"
            notes.append(f"Token embedding stored {info['embedding']} (trained codes and scales) and run by the "
                         f"portable quantized_decomposed::{kernel} kernel; position/type embeddings stay float32. A native app must "
                         "link ExecuTorch's quantized kernels (quantized_ops_lib) besides XNNPACK and the portable "
                         "kernels; in Python, `import executorch.kernels.quantized` before loading.")
        notes.append(f"Backbone linears: {info['format']}"
                     + (f" group {info['group_size']}" if info["group_size"] else "")
                     + " weights with int8 dynamic per-token activations (torchao Int8DynamicActivationIntx"
                       "WeightConfig), trained codes and scales copied in; "
                     + ("LoRA and recovery int8 linears, head float32." if job.deployed_adapter_dtype == AdapterDType.INT8
                        and job.mode == Mode.SHARED else "LoRA, recovery and head float32."))
        attention = _attention_record(rewrites)
        if job.attention != Attention.OPS:
            kept = "" if attention == Attention.FUSED.value else " (attention kept: the model takes no registered one)"
            notes.append("Attention and norms written as XNNPACK operators (--attention fused, the default)"
                         f"{kept}: softmax(Q K^T * scale + mask) V as batched matmuls with the additive padding mask "
                         "built once, and each LayerNorm / RMSNorm's mean as a product with a constant column "
                         f"({rewrites[0]['norms']}), so XNNPACK runs the encoder in few delegate calls; --attention "
                         "ops keeps the model's own SDPA and norms (portable kernels between partitions).")
        notes.append(f"Fixed input shape [1, {job.max_length}]: apps pad to max_length and run one row per call.")
        notes.append("Re-exporting the same tasks gives byte-identical .pte files (checked on the tiny test model, "
                     "also across processes); safetensors adapter files are deterministic too.")
        from .executorch_requirements import program_requirements

        # What an app's runtime must link (the manifest says it; the runtime refuses a program without them).
        needs = program_requirements([out_dir / f.path for f in files if f.path.endswith(".pte")])
        return TargetResult(files=files, inputs=inputs, outputs=outputs,
                            runtime={"name": "executorch", "version": version, "attention": attention, **needs},
                            weight_error=weight_error,
                            smoke=smoke, task_switch=task_switch, notes=notes)


# ---- helpers ----------------------------------------------------------------------------------

def task_programs(target, job: ExportJob, sub: Path, out_dir: Path, example: tuple, rows: tuple, smoke: dict,
                  notes: list[str], rewrites: list[dict], runtime_label: str,
                  data_file: Path | None = None) -> tuple[list[ArtifactFile], dict[str, float], dict]:
    """Classification: one ``<task>.pte`` per task, lowered from its baked model, smoke-run in
    ExecuTorch's runtime against PyTorch. With `data_file` (shared mode) every backbone constant is
    tagged out to that file, which must come out byte-identical for every task, and the adapter
    (LoRA, recovery, head; int8 codes under `--adapter-dtype int8`) stays in the program; without
    it (baked) the program holds every weight. Appends smoke results and notes; returns (the
    programs' files, weight error, the backbone's quantization info)."""
    import torch

    from calora.export.graph import Baked, adapter_names, smoke_stats

    from .executorch_shared import _same_backbone, adapter_modules, int8_adapter

    int8 = data_file is not None and job.deployed_adapter_dtype == AdapterDType.INT8
    weight_error: dict[str, float] = {}
    info: dict = {}
    programs: list[ArtifactFile] = []
    backbone: bytes | None = None
    for task in job.tasks:
        model, werr, info = target._prepare(task.model, job.spec)
        keep_worst(weight_error, werr)
        rewrites.append(_rewrite(model, job))
        keep, where = None, "every weight inside"
        if data_file is not None:
            names = adapter_names(model)
            if int8:
                int8_adapter(model, names)
            keep = adapter_modules(names, "model.")
            where = f"against the shared {data_file.name} ({job.deployed_adapter_dtype.value} adapter)"
        with step(f"executorch: lowering {task.name}.pte, {where}"):
            data, stats, weights = target._lower(Baked(model), example, keep=keep)
        _check_delegation(stats, info, task.name)
        if data_file is not None:
            backbone = _same_backbone(data_file, weights, backbone, task.name, job.tasks[0].name)
        path = sub / f"{task.name}.pte"
        path.write_bytes(data)
        programs.append(ArtifactFile.of(out_dir, path, "model", task.name))
        _program, method = _load(path, data_file)  # as an app loads it (a shared program with its data file)
        got = _run_rows(method, list(rows), [])
        with torch.no_grad():
            ref = Baked(task.model)(*rows)
        smoke[task.name] = smoke_stats(ref, got, runtime_label)
        inside = ("" if data_file is None else f" (graph and {job.deployed_adapter_dtype.value} adapter; the "
                  f"backbone's weights are in {data_file.name})")
        notes.append(f"{task.name}.pte: {_describe(stats, info)}; {path.stat().st_size} bytes{inside}")
    return programs, weight_error, info



def _rewrite(model, job: ExportJob) -> dict[str, str]:
    """--attention fused (default): attention and norms as XNNPACK operators (`executorch_graph`);
    ops: the model's graph as transformers writes it."""
    if job.attention == Attention.OPS:
        return {"attention": "model", "norms": "0 rewritten"}
    from calora.targets.executorch_graph import xnnpack_friendly

    return xnnpack_friendly(model)


def _attention_record(rewrites: list[dict[str, str]]) -> str:
    """The manifest's runtime.attention: fused only when every exported model took the rewrite."""
    done = rewrites and all(r["attention"] == "bmm" for r in rewrites)
    return Attention.FUSED.value if done else Attention.OPS.value


def _wants_quantized_embedding(spec) -> bool:
    """The spec quantizes the token embeddings (int8 or int4)."""
    from calora.train.spec import EmbeddingQuant

    return spec.embeddings != EmbeddingQuant.NONE


def write_adapter(path: Path, tensors: dict, names: list[str], task: str, label_names, backbone_fingerprint: str) -> None:
    """One task's adapter file: its stored tensors (`adapter_codec.encode`: int8 adds a
    `<name>.scale` beside each LoRA/recovery matrix), the order the backbone method takes them in,
    its label names and the fingerprint of the compressed backbone it belongs to (checked by
    calora-validate)."""
    from safetensors.torch import save_file

    save_file({n: t.contiguous() for n, t in tensors.items()}, str(path),
              metadata={ADAPTER_ORDER_KEY: json.dumps(list(names)), "task": task,
                        "label_names": json.dumps(list(label_names)), BACKBONE_KEY: backbone_fingerprint})


def widen_sentence(dtype: AdapterDType) -> str:
    """How an app turns the file's tensors into `forward`'s float32 inputs, once per task load."""
    if dtype == AdapterDType.INT8:
        return ("for each name in the order, where the file has a float32 '<name>.scale' (one scale per rank "
                "component), multiply the int8 tensor by it: scale[r] times row r of a lora_A / recovery.down "
                "matrix, times column r of a lora_B / recovery.up one; widen the other (float16) tensors; once "
                "when loading the task, not per call.")
    if dtype == AdapterDType.FLOAT16:
        return ("widen each tensor once when loading the task (Android: android.util.Half.toFloat; Swift: "
                "Float(Float16)), not per call.")
    return "the tensors are float32 already."


def read_adapter(path: Path) -> list:
    """An adapter file's tensors in the order the backbone method expects them, as the float32
    inputs it takes (widened or dequantized here, once per task load, as an app does)."""
    order, _, stored = read_adapter_file(path)
    return adapter_codec.decode(stored, order)


def read_adapter_file(path: Path) -> tuple[list[str], dict, dict]:
    """(input order, metadata, every stored tensor by name) of an adapter file, read in one pass:
    the file is read once and parsed from memory (safetensors' header is 8 bytes of length + JSON),
    which is what a task switch costs; opening it per tensor took twice as long for MiniLM's 100
    tensors."""
    import struct

    from safetensors.torch import load

    data = Path(path).read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
    order = json.loads(meta[ADAPTER_ORDER_KEY])
    return order, meta, load(data)


def shared_data(bundle: Path, manifest: dict) -> Path | None:
    """A shared bundle's backbone.ptd, the data file every task program loads (None otherwise)."""
    from calora.targets.base import manifest_file

    return manifest_file(bundle, manifest, "backbone", None, ".ptd") if manifest["mode"] == Mode.SHARED.value else None


def _load(path: Path, data: Path | None = None):
    """(program, forward method) of a .pte; `data`: the .ptd holding the weights it keeps outside."""
    import executorch.kernels.quantized  # noqa: F401  registers quantized_decomposed kernels (embedding_byte)
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(path), data_path=None if data is None else str(data))
    return program, program.load_method("forward")


def _run_rows(method_or_path, rows: list, extra: list, timings: list | None = None):
    """Run the fixed-batch-1 method one row at a time; returns the stacked logits."""
    import torch

    if isinstance(method_or_path, Path):
        _program, method = _load(method_or_path)
    else:
        method = method_or_path
    outs = []
    for i in range(rows[0].shape[0]):
        args = [r[i:i + 1].contiguous() for r in rows] + list(extra)
        t0 = time.perf_counter()
        out = method.execute(args)[0]
        if timings is not None:
            timings.append(time.perf_counter() - t0)
        outs.append(torch.as_tensor(out).clone())
    return torch.cat(outs)


def _graph_stats(graph) -> dict:
    """Delegate calls and what is left outside the delegates in the lowered program."""
    from collections import Counter

    ops = Counter()
    for node in graph.nodes:
        if node.op == "call_function":
            ops[str(getattr(node.target, "__name__", node.target))] += 1
    delegates = sum(v for k, v in ops.items() if "call_delegate" in k)
    quant_left = sum(v for k, v in ops.items()
                     if ("quantize" in k or "choose_qparams" in k) and "embedding" not in k)
    matmul_left = sum(v for k, v in ops.items() if any(s in k for s in ("linear", "addmm", ".mm", "bmm", "matmul")))
    return {"delegate_calls": delegates, "quant_ops_outside": quant_left, "matmuls_outside": matmul_left,
            "embedding_byte": sum(v for k, v in ops.items() if "embedding_byte" in k), "ops": dict(ops)}


def _check_delegation(stats: dict, info: dict, what: str) -> None:
    """The quantized backbone linears must run inside XNNPACK: a torchao (de)quantize op left in the
    top-level graph means one was not delegated (and would run wrongly or not at all)."""
    if stats["delegate_calls"] == 0:
        raise RuntimeError(f"ExecuTorch {what}: nothing was delegated to XNNPACK")
    if info["format"] != "none" and stats["quant_ops_outside"]:
        raise RuntimeError(f"ExecuTorch {what}: {stats['quant_ops_outside']} quantize ops were left outside "
                           f"XNNPACK (backbone linears not delegated): {stats['ops']}")


def _describe(stats: dict, info: dict) -> str:
    return (f"{stats['delegate_calls']} XNNPACK delegate calls, {stats['quant_ops_outside']} quantize ops and "
            f"{stats['matmuls_outside']} matmul/linear ops outside delegates, {stats['embedding_byte']} int8 "
            f"embedding_byte ops; lowering {stats['lower_s']} s")
