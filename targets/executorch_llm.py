"""Generative tasks on ExecuTorch: a `.pte` in the layout ExecuTorch's LLM runner loads.

`forward(tokens [1, S], input_pos [1]) -> logits [1, S, vocab]` with a static KV cache of the
maximum context held in the program's mutable buffers (prefill: S = prompt length, dynamic;
decode: S = 1), XNNPACK-delegated with the trained int4/int8 codes, and the metadata methods the
runner reads (get_max_seq_len, get_max_context_len, get_bos_id, get_eos_ids, get_vocab_size,
use_kv_cache, use_sdpa_with_kv_cache, enable_dynamic_shape, get_n_layers).

Baked: ``executorch/<task>.pte`` per task, loadable by the stock runner (C++ TextLLMRunner,
Android LlmModule, iOS). Swappable: one ``executorch/backbone.pte`` whose forward takes the task's
adapter tensors after (tokens, input_pos), plus ``executorch/adapters/<task>.safetensors`` (order in
its metadata, as for classification); the stock runner cannot feed extra inputs, so apps call
forward through the Module API. Shared: ``executorch/backbone.ptd`` holds every backbone weight
(ExecuTorch's program-data separation, as its own LoRA export keeps "foundation" weights), and each
task's ``executorch/<task>.pte`` holds only its graph and its adapter: the stock runner loads
``<task>.pte`` with ``backbone.ptd`` as its data file, and the adapter weights are constants XNNPACK
packs once at load, so decoding runs at baked speed.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from calora.export.decoder import DecoderShape, StaticCache, Swappable, decoder_shape
from calora.export.graph import adapter_tensors, check_same_layout

from . import adapter_codec
from .base import ArtifactFile, ExportJob, Mode, TargetResult, TensorSpec, keep_worst, step
from .executorch_requirements import program_requirements
from .executorch_shared import export_shared, external_data, external_tag, int8_linear, tag_backbone_constants
from .generation import smoke as smoke_run


def metadata(shape: DecoderShape, generation: dict) -> dict:
    """The constant methods ExecuTorch's LLM runner reads (extension/llm/runner/constants.h)."""
    special = generation["special_tokens"]
    bos = special.get("bos") if special.get("bos") is not None else special["eos"]
    return {"get_max_seq_len": shape.max_context, "get_max_context_len": shape.max_context,
            "get_bos_id": int(bos), "get_eos_ids": [int(special["eos"])], "get_vocab_size": shape.vocab,
            "get_n_layers": shape.layers, "use_kv_cache": True, "use_sdpa_with_kv_cache": True,
            "enable_dynamic_shape": True}


def _untie_head(model: nn.Module, trained: nn.Module, spec) -> dict[str, float]:
    """XNNPACK runs linear layers, not a matmul against an embedding table: give the prepared model
    its own LM head holding the tied table, int8 per row with the embedding's trained codes (so it
    equals the trained head) when the embeddings are int8. Returns its weight error."""
    from calora.train.quant import QuantEmbedding

    emb = next((m for m in trained.modules() if isinstance(m, QuantEmbedding)), None)
    src = trained.get_input_embeddings()
    head = nn.Linear(src.embedding_dim, src.num_embeddings, bias=False)
    with torch.no_grad():
        head.weight.copy_(src.weight.detach().float())
    model.lm_head = head
    if model.config.tie_word_embeddings:
        model.config.tie_word_embeddings = False
    if emb is None:
        return {}
    model.lm_head = int8_linear(emb.codes.detach(), emb.scale.detach())
    w = model.lm_head.weight
    return {"lm_head_max_abs": float((w.dequantize().float() - emb.weight.detach().float()).abs().max())}


def lower(module: nn.Module, example: tuple, shape: DecoderShape, meta: dict, n_extra: int = 0,
          keep: frozenset[str] | None = None) -> tuple[bytes, dict, bytes | None]:
    """torch.export with a dynamic prompt length -> XNNPACK -> (.pte bytes with the runner metadata,
    graph stats, None). `keep` (shared mode): the module paths of the task's adapter, whose constants
    stay in the program; every other constant goes to the external data returned third, the bytes of
    backbone.ptd (`executorch_shared`)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass
    from executorch.exir.passes.quant_fusion_pass import quant_fusion_and_const_prop_pass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    from .executorch import _graph_stats

    t0 = time.perf_counter()
    seq = torch.export.Dim("sequence", min=1, max=shape.max_context - 1)
    if n_extra:  # Swappable.forward(*args)
        dims = (({1: seq}, None, *[None] * n_extra),)
    else:
        dims = ({1: seq}, None)
    with torch.no_grad():
        ep = torch.export.export(module.eval(), example, dynamic_shapes=dims, strict=False)
    if keep is not None:
        ep = tag_backbone_constants(ep, keep)
    # Swappable: the adapter linears have non-constant weights (method inputs); XNNPACK takes them only
    # when told to, else they run on portable kernels (as classification measured: 1.56x slower).
    partitioner = XnnpackPartitioner(force_non_static_weights_for_f32_linear=bool(n_extra))
    edge = to_edge_transform_and_lower(ep, partitioner=[partitioner], constant_methods=meta)
    quant_fusion_and_const_prop_pass(edge.exported_program())
    # The cache buffers are saved as zeros: a mutable buffer's initial bytes are otherwise undefined. custom_sdpa
    # reads no slot past input_pos + S; zeros keep a never-written slot harmless (not NaN) should anything else read it.
    external = False
    if keep is not None:  # constants left outside the delegates (the int8 embedding table, norms) by name
        sig = edge.exported_program().graph_signature
        fqn = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        external = external_tag(fqn, keep)
    et = edge.to_executorch(ExecutorchBackendConfig(passes=[InitializedMutableBufferPass(["k_cache", "v_cache"])],
                                                    sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
                                                    external_constants=external))
    stats = _graph_stats(et.exported_program().graph)
    stats["lower_s"] = round(time.perf_counter() - t0, 2)
    buffer = bytes(et.buffer)  # serializing also produces the external data
    return buffer, stats, None if keep is None else external_data(et)


def export_generative(target, job: ExportJob, out_dir: Path) -> TargetResult:
    """`target` is the ExecuTorchTarget (its `_prepare` copies the trained codes into torchao tensors)."""
    from .executorch import _check_delegation, _describe, _runtime_version, read_adapter, write_adapter
    from .executorch_llm_runtime import PteSession

    out_dir = Path(out_dir)
    sub = out_dir / "executorch"
    sub.mkdir(parents=True, exist_ok=True)
    shape = decoder_shape(job.tasks[0].model, job.max_length)
    meta = metadata(shape, job.generation)
    runtime_label = f"ExecuTorch {_runtime_version()} runtime, XNNPACK"
    files: list[ArtifactFile] = []
    smoke: dict[str, dict] = {}
    notes: list[str] = []
    weight_error: dict[str, float] = {}
    prompt = list(job.smoke_prompts[0])
    example = (torch.tensor([prompt[:4]]), torch.tensor([0]))

    def prepared(task) -> tuple[nn.Module, dict]:
        model, werr, info = target._prepare(task.model, job.spec)
        werr |= _untie_head(model, task.model, job.spec)
        keep_worst(weight_error, werr)
        return model, info

    if job.mode == Mode.BAKED:
        for task in job.tasks:
            model, info = prepared(task)
            with step(f"executorch: lowering {task.name}.pte ({shape.layers} layers to XNNPACK; minutes on a phone-"
                      "sized decoder)"):
                data, stats, _ = lower(StaticCache(model, shape), example, shape, meta)
            _check_delegation(stats, info, task.name)
            path = sub / f"{task.name}.pte"
            path.write_bytes(data)
            files.append(ArtifactFile.of(out_dir, path, "model", task.name))
            pte = PteSession(path)
            smoke[task.name] = smoke_run(lambda p, n, e, s=pte: s.generate(p, n, e, []), task, job, runtime_label)
            notes.append(f"{task.name}.pte: {_describe(stats, info)}; {path.stat().st_size} bytes")
        task_switch = ("Baked: each task is its own .pte, loadable by ExecuTorch's LLM runner (TextLLMRunner / "
                       "LlmModule); switching tasks means loading another program.")
        names: list[str] = []
    elif job.mode == Mode.SHARED:
        names = []
        files, task_switch = export_shared(job, sub, out_dir, shape, meta, example, prepared, smoke, notes,
                                            runtime_label)
    else:
        names = check_same_layout({t.name: t.model for t in job.tasks})
        first = job.tasks[0]
        model, info = prepared(first)
        adapters = {t.name: adapter_tensors(t.model, job.adapter_dtype) for t in job.tasks}
        first_ad = adapter_codec.decode(adapters[first.name], names)  # forward takes float32 (widened at load)
        module = Swappable(StaticCache(model, shape), names, 2)
        with step(f"executorch: lowering backbone.pte ({shape.layers} layers to XNNPACK, {len(names)} adapter "
                  "inputs; minutes on a phone-sized decoder)"):
            data, stats, _ = lower(module, (*example, *first_ad), shape, meta, n_extra=len(names))
        _check_delegation(stats, info, "backbone")
        path = sub / "backbone.pte"
        path.write_bytes(data)
        files.append(ArtifactFile.of(out_dir, path, "backbone", None))
        notes.append(f"backbone.pte: {_describe(stats, info)}; {path.stat().st_size} bytes")
        (sub / "adapters").mkdir(exist_ok=True)
        session = PteSession(path)
        for task in job.tasks:
            ad_path = sub / "adapters" / f"{task.name}.safetensors"
            write_adapter(ad_path, adapters[task.name], names, task.name, (), job.fingerprint)
            files.append(ArtifactFile.of(out_dir, ad_path, "adapter", task.name))
            extra = read_adapter(ad_path)
            smoke[task.name] = smoke_run(lambda p, n, e, x=extra: session.generate(p, n, e, x), task, job,
                                         runtime_label)
        task_switch = (f"Swappable: one backbone.pte stays loaded; a task switch is reading that task's adapter file "
                       f"once and passing its {len(names)} tensors as forward's trailing inputs on every prefill and "
                       "decode call (the Module API keeps no inputs between calls; benchmarks/gen_decode.py measures "
                       "decode speed with them, with all-zero ones and baked).")
    notes.append(f"KV cache: static, {shape.max_context} positions in mutable buffers, written in place at "
                 "input_pos; prefill takes 1 to max_context-1 tokens (dynamic shape), decode one token per call. "
                 "A new conversation starts at input_pos 0 (attention reads positions before input_pos + S only, "
                 "no reset needed).")
    notes.append("Cache writes and attention run ExecuTorch's LLM kernels llama::update_cache and llama::custom_sdpa, "
                 "as ExecuTorch's own Llama export does: link them with the runtime (Android: the executorch AAR "
                 "ships them; iOS: kernels_llm; C++: the custom_ops library); in Python import "
                 "executorch.extension.llm.custom_ops.custom_ops before loading (calora's runners do).")
    if "embedding_max_abs" in weight_error:
        notes.append("Token embedding int8 per row (trained codes) through quantized_decomposed::embedding_byte: link "
                     "ExecuTorch's quantized kernels (quantized_ops_lib) with the runner; in Python import "
                     "executorch.kernels.quantized before loading (calora's TextLLMRunner check does).")
    if "lm_head_max_abs" in weight_error:
        # One .pte cannot hold the table once: the head's copy is XNNPACK named data, the lookup's a plain constant, and
        # the runtime resolves a constant by name only from an external data file (Method::parse_external_constants).
        stored = ("stored once in backbone.ptd, which dedups the lookup's and the head's copies by content"
                  if job.mode == Mode.SHARED else
                  "stored twice (embedding_byte lookup and head), as ExecuTorch's own Llama export does; --mode shared "
                  "stores it once, in backbone.ptd")
        notes.append(f"LM head: the tied int8 embedding table as an 8da8w linear with the trained codes (XNNPACK); the "
                     f"table is {stored}.")
    inputs = [TensorSpec("tokens", "int64", (1, "sequence")), TensorSpec("input_pos", "int64", (1,))]
    if names:
        inputs += [TensorSpec(n, "float32", tuple(adapter_tensors(job.tasks[0].model)[n].shape)) for n in names]
    # What an app's runtime must link (the manifest says it; the runtime refuses a program without them).
    needs = program_requirements([out_dir / f.path for f in files if f.path.endswith(".pte")])
    return TargetResult(files=files, inputs=inputs,
                        outputs=[TensorSpec("logits", "float32", (1, "sequence", shape.vocab))],
                        runtime={"name": "executorch", "version": _runtime_version(),
                                 "activations": "int8-dynamic", **needs}, weight_error=weight_error,
                        smoke=smoke, task_switch=task_switch, notes=notes)
