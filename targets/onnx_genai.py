"""Generative tasks on ONNX Runtime: onnxruntime-genai model folders.

Baked: ``onnx/<task>/`` per task; swappable: one ``onnx/genai/`` folder plus
``onnx/adapters/<task>.onnx_adapter``, loaded with onnxruntime-genai's multi-LoRA API
(``og.Adapters(model).load(path, task)``; ``generator.set_active_adapter(adapters, task)`` before
the prompt is appended). Each folder holds ``model.onnx`` (for desktop ONNX Runtime / Netron),
``model.ort`` (what ORT Mobile loads; ``genai_config.json`` names it), ``genai_config.json`` and the
tokenizer files og reads (tokenizer.json, tokenizer_config.json).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

from calora.export.decoder import DecoderShape, decoder_shape, round_head_input
from calora.export.graph import adapter_tensors, check_same_layout, deployable

from . import adapter_codec
from .base import AdapterDType, ArtifactFile, ExportJob, Mode, TargetResult, TensorSpec, keep_worst
from .generation import FLOAT_ACTIVATIONS
from .generation import smoke as smoke_run
from .onnx import _save, _to_ort, deploy_format, write_adapter
from .onnx_adapter_inputs import INT8_NOTE, adapters_as_defaulted_inputs
from .onnx_graph_gen import INPUTS, export_graph, head_block, io_names, quantize

GENAI_CONFIG = "genai_config.json"
MODEL_FILE = "model.ort"


def genai_config(shape: DecoderShape, generation: dict, filename: str = MODEL_FILE) -> dict:
    """onnxruntime-genai's config for calora's growing-cache graph (verified keys: see the module
    docstring of calora.export.decoder for the I/O contract)."""
    special = generation["special_tokens"]
    eos, pad = special["eos"], special.get("pad")
    return {
        "model": {
            "type": "llama", "context_length": shape.max_context, "vocab_size": shape.vocab,
            "bos_token_id": special.get("bos") if special.get("bos") is not None else eos,
            "eos_token_id": eos, "pad_token_id": pad if pad is not None else eos,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename, "head_size": shape.head_dim, "hidden_size": shape.hidden,
                "num_attention_heads": shape.heads, "num_key_value_heads": shape.kv_heads,
                "num_hidden_layers": shape.layers,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        # Greedy, as calora-train evaluated. past_present_share_buffer: one cache buffer of max_length per layer that
        # GroupQueryAttention writes in place (it reads the valid lengths from the attention mask), as the builder
        # writes it; the growing cache copied every past key and value on every step (SmolLM2, 2 threads: 3-4.5%).
        "search": {
            "do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": shape.max_context,
            "min_length": 0, "past_present_share_buffer": True, "temperature": 1.0, "top_k": 1, "top_p": 1.0,
            "repetition_penalty": 1.0, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
            "diversity_penalty": 0.0, "early_stopping": True,
        },
    }


def _write_folder(folder: Path, proto, shape: DecoderShape, job: ExportJob) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    _save(proto, folder / "model.onnx")
    _to_ort(folder / "model.onnx", folder / MODEL_FILE)
    (folder / GENAI_CONFIG).write_text(json.dumps(genai_config(shape, job.generation), indent=2) + "\n")
    job.tokenizer.save_pretrained(str(folder / ".tok"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.move(str(folder / ".tok" / name), folder / name)
    shutil.rmtree(folder / ".tok")
    return [folder / n for n in ("model.onnx", MODEL_FILE, GENAI_CONFIG, "tokenizer.json", "tokenizer_config.json")]


def export_generative(job: ExportJob, out_dir: Path, accuracy_level: int | None = None) -> TargetResult:
    """`accuracy_level`: the int4 body's MatMulNBits activations (None: float; 4: int8, `--activations int8`)."""
    import onnxruntime as ort

    from .onnx_genai_runtime import GenaiSession, og_version

    fmt, group = deploy_format(job.spec)
    out_dir = Path(out_dir)
    files: list[ArtifactFile] = []
    smoke: dict[str, dict] = {}
    weight_error: dict[str, float] = {}
    notes: list[str] = []
    runtime_str = f"onnxruntime-genai {og_version()} (onnxruntime {ort.__version__} CPU), .ort"
    shape = decoder_shape(job.tasks[0].model, job.max_length)
    int8_acts = fmt == "int8" or accuracy_level is not None  # the body computes int8 activations

    if job.mode == Mode.BAKED:
        for task in job.tasks:
            model = deployable(task.model)
            proto = export_graph(model, shape)
            proto, err, kept = quantize(proto, model, task.model, fmt, group, accuracy_level=accuracy_level)
            keep_worst(weight_error, err)
            folder = out_dir / "onnx" / task.name
            paths = _write_folder(folder, proto, shape, job)
            files += [ArtifactFile.of(out_dir, p, "model", task.name) for p in paths]
            session = GenaiSession(folder)
            smoke[task.name] = smoke_run(lambda p, n, e, s=session: s.generate(p, n, e), task, job, runtime_str,
                                         **_smoke_reference(task, shape, int8_acts, "embedding_max_abs" in weight_error))
        task_switch = ("Baked: each task is its own onnxruntime-genai folder; switching tasks means creating "
                       "another og.Model (or keeping one per task in memory).")
    else:
        names = check_same_layout({t.name: t.model for t in job.tasks})
        first = job.tasks[0]
        model = deployable(first.model)
        example = adapter_tensors(model)
        proto = export_graph(model, shape, {n: example[n] for n in names})
        adapters_as_defaulted_inputs(proto, names, job.adapter_dtype)
        proto, err, kept = quantize(proto, model, first.model, fmt, group, adapter_inputs=set(names),
                                    accuracy_level=accuracy_level)
        keep_worst(weight_error, err)
        folder = out_dir / "onnx" / "genai"
        paths = _write_folder(folder, proto, shape, job)
        files += [ArtifactFile.of(out_dir, p, "backbone", None) for p in paths]
        (out_dir / "onnx" / "adapters").mkdir(parents=True, exist_ok=True)
        session = GenaiSession(folder)
        for task in job.tasks:
            path = out_dir / "onnx" / "adapters" / f"{task.name}.onnx_adapter"
            write_adapter(adapter_tensors(task.model, job.adapter_dtype),
                          adapter_codec.stored_names(names, job.adapter_dtype), path, job.fingerprint)
            files.append(ArtifactFile.of(out_dir, path, "adapter", task.name))
            session.load_adapter(task.name, path)
            reference = _smoke_reference(task, shape, int8_acts, "embedding_max_abs" in weight_error)
            smoke[task.name] = smoke_run(lambda p, n, e, a=task.name: session.generate(p, n, e, a), task, job,
                                         runtime_str, **reference)
        load_ms = _adapter_load_ms(session, out_dir / "onnx" / "adapters" / f"{job.tasks[-1].name}.onnx_adapter")
        task_switch = (f"Swappable: one og.Model serves every task; a task switch is og.Adapters.load of that "
                       f"task's .onnx_adapter once (median {load_ms:.2f} ms here) and "
                       "generator.set_active_adapter(adapters, task) before the prompt is appended; the adapter "
                       "stays active for every decode step (no per-step upload).")
        notes.append(f"Swappable: the adapter tensors are {job.adapter_dtype.value} graph inputs"
                     f"{INT8_NOTE if job.adapter_dtype == AdapterDType.INT8 else ''} (widened to float32 "
                     "inside the graph) whose defaults are empty along the rank dimension; a generator with no "
                     "active adapter runs the bare compressed backbone.")
    if accuracy_level is not None:
        notes.append(f"--activations int8: the int4 MatMulNBits run with accuracy_level {accuracy_level}, as "
                     f"onnxruntime-genai's builder emits: ONNX Runtime rounds each block of {group} inputs to int8 "
                     "and multiplies in integers (training simulated int8 activations per token). A prompt's logits "
                     "then differ slightly between one prefill and token-by-token decoding (a kernel whose rounding "
                     "depends on the row count), so calora-validate applies the gates for int8 activations that "
                     "ExecuTorch's programs get, against the trained model.")
    notes.append(f"Backbone linear layers stored as {fmt}"
                 + (f" (MatMulNBits, block {group}, the trained int4 codes copied bit-for-bit)" if fmt == "int4"
                    else "") + f"; kept float32: {kept}.")
    if "embedding_max_abs" in weight_error:
        notes.append("The tied int8 token embedding table is stored once as the trained codes: the lookup "
                     "dequantizes the gathered rows, the LM head is an 8-bit MatMulNBits over the same bytes with "
                     "accuracy_level 4 (int8 activations for the head only: 5.7x faster decoding on 2 x86 cores).")
    notes.append("Attention and norms are ONNX Runtime's fused contrib ops, as onnxruntime-genai's builder writes "
                 "Llama graphs: GroupQueryAttention (rotary embedding and cache append inside; positions from the "
                 "attention mask) and SkipSimplifiedLayerNormalization; the projections, MLP and adapter "
                 "branches are the trained modules' own ops.")
    notes.append("KV cache: onnxruntime-genai keeps one buffer of the maximum context per layer, which "
                 "GroupQueryAttention writes in place (past_present_share_buffer true, as onnxruntime-genai's builder "
                 "writes it); run with ONNX Runtime directly, the same graph also takes a growing cache (present = "
                 f"past + this step's keys/values). Maximum context {shape.max_context} tokens. genai_config.json names model.ort; "
                 "model.onnx is the same graph for desktop ONNX Runtime (set \"filename\" to use it).")
    notes.append("Batch size is 1 (one sequence per generator), as an app on a phone runs it.")
    kv = (1, shape.kv_heads, "past_sequence", shape.head_dim)
    return TargetResult(
        files=files,
        inputs=[TensorSpec("input_ids", "int64", (1, "sequence")),
                TensorSpec("attention_mask", "int64", (1, "total_sequence")),
                TensorSpec("position_ids", "int64", (1, "sequence")),
                *[TensorSpec(n, "float32", kv) for n in io_names(shape)[0][len(INPUTS):]]],
        outputs=[TensorSpec("logits", "float32", (1, "sequence", shape.vocab)),
                 *[TensorSpec(n, "float32", kv[:2] + ("total_sequence",) + kv[3:]) for n in io_names(shape)[1][1:]]],
        runtime={"name": "onnxruntime-genai", "version": og_version(),
                 "activations": "int8-dynamic" if int8_acts else "float32",
                 **({"backbone_activations": f"int8-block{group}"} if accuracy_level is not None else {}),
                 **({"lm_head_activations": f"int8-block{head_block(shape.hidden)}"}
                    if "embedding_max_abs" in weight_error else {})},
        weight_error=weight_error, smoke=smoke, task_switch=task_switch, notes=notes)


def _smoke_reference(task, shape: DecoderShape, int8_acts: bool, int8_head: bool) -> dict:
    """The smoke's reference, as validation's: where the decoder body runs MatMulNBits with float
    activations, the trained weights with float activations (and the tied int8 head's input rounded
    to int8 blocks, as accuracy_level 4 does); the trained model where it runs int8 activations."""
    if int8_acts:
        return {}
    model = deployable(task.model)
    block = head_block(shape.hidden) if int8_head else None
    if block is not None:
        round_head_input(model, block)
    return {"reference": model, "reference_label": FLOAT_ACTIVATIONS
            + (f", int8-block{block} LM head input" if block is not None else "")}


def _adapter_load_ms(session, path: Path, repeats: int = 5) -> float:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        session.load_adapter(f"_timing{i}", path)
        times.append((time.perf_counter() - t0) * 1e3)
        session.unload_adapter(f"_timing{i}")
    return statistics.median(times)


def folder_of(bundle: Path, manifest: dict, task: str | None) -> Path:
    """The genai folder holding the model for `task` (None: the shared swappable backbone)."""
    entries = manifest["backbone"]["files"] if task is None else \
        next(t for t in manifest["tasks"] if t["name"] == task)["files"]
    role = "backbone" if task is None else "model"
    for f in entries:
        if f["role"] == role and f["path"].endswith(GENAI_CONFIG):
            return (Path(bundle) / f["path"]).parent
    raise FileNotFoundError(f"manifest lists no {GENAI_CONFIG} for {task or 'the backbone'}")

