"""Core ML target on the two tiny trained tasks: each mode is converted once per module.

`MLModel.predict` needs macOS; on Linux the smoke and the per-function checks run the converted
program with coremltools' MIL reference evaluator (a program-level check, not Apple's runtime)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")

from calora.export.graph import (Baked, adapter_tensors, backbone_linears, deployable, example_inputs,  # noqa: E402
                                 round_adapter)
from calora.export.job import load_job  # noqa: E402
from calora.targets import get_target  # noqa: E402
from calora.targets.coreml import dense_weights, load_program  # noqa: E402
from calora.targets.coreml_mil import evaluate  # noqa: E402


def _export(tiny_runs, tmp_path_factory, mode, tasks=("toy_a", "toy_b")):
    """A fresh export (for the determinism test: the shared one cannot be compared with itself)."""
    job = load_job(tiny_runs, list(tasks), mode)
    out = tmp_path_factory.mktemp(f"coreml-{mode}")
    return job, out, get_target("coreml").export(job, out)


@pytest.fixture
def baked(tiny_export):
    return tiny_export("coreml", "baked")


@pytest.fixture
def swappable(tiny_export):
    return tiny_export("coreml", "swappable")


def _float_consts(func) -> list[np.ndarray]:
    return [op.outputs[0].val for op in func.operations if op.op_type == "const"
            and isinstance(op.outputs[0].val, np.ndarray) and op.outputs[0].val.dtype == np.float32]


def _holds(arrays, w: np.ndarray) -> bool:
    return any(a.shape == w.shape and np.array_equal(a, w) or a.shape == w.T.shape and np.array_equal(a, w.T)
               for a in arrays)


def _feeds(job, n=4):
    ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts)[:n], job.max_length)
    return ids, mask


def _run(pkg: Path, function: str, ids, mask) -> np.ndarray:
    rows = []
    for i in range(ids.shape[0]):
        func = load_program(pkg).functions[function]
        rows.append(evaluate(func, {"input_ids": ids[i:i + 1].int().numpy(),
                                    "attention_mask": mask[i:i + 1].int().numpy()})[0][0])
    return np.stack(rows)


def test_baked_packages_load_with_expected_io(baked):
    job, out, res = baked
    assert [(f.path, f.role, f.task) for f in res.files] == [
        ("coreml/toy_a.mlpackage", "model", "toy_a"), ("coreml/toy_b.mlpackage", "model", "toy_b")]
    for f in res.files:
        spec = ct.models.MLModel(str(out / f.path), skip_model_load=True).get_spec()
        assert spec.WhichOneof("Type") == "mlProgram"
        assert [i.name for i in spec.description.input] == ["input_ids", "attention_mask"]
        assert [o.name for o in spec.description.output] == ["logits"]
        assert list(spec.description.input[0].type.multiArrayType.shape) == [1, job.max_length]
    assert res.runtime == {"name": "coremltools", "version": ct.__version__}
    assert [t.name for t in res.inputs] == ["input_ids", "attention_mask"] and res.outputs[0].name == "logits"


def test_baked_backbone_compressed_adapters_float(baked):
    job, out, res = baked
    task = job.tasks[0]
    func = load_program(out / "coreml" / "toy_a.mlpackage").functions["main"]
    types_ = {op.op_type for op in func.operations}
    # int4 per block + sparse bitmask (the spec is int4:g32+sparse:0.5+emb:int8)
    assert {"constexpr_sparse_blockwise_shift_scale", "constexpr_sparse_to_dense",
            "constexpr_blockwise_shift_scale"} <= types_
    floats, dense = _float_consts(func), list(dense_weights(func).values())
    dep = deployable(task.model)
    for name in backbone_linears(task.model):
        w = dep.get_submodule(name).weight.detach().numpy()
        assert not _holds(floats, w), f"backbone weight {name} is stored as a float const"
        assert _holds(dense, w), f"backbone weight {name} does not decompress to the trained weight"
    adapters = {n: t.numpy() for n, t in adapter_tensors(dep).items() if t.ndim == 2}
    assert any(".lora_A." in n for n in adapters) and any("classifier" in n for n in adapters)
    for name, w in adapters.items():
        assert _holds(floats, w), f"adapter/head weight {name} is not a plain float32 const"
    assert res.weight_error["backbone_linear_max_abs"] < 1e-6
    assert res.weight_error["embedding_max_abs"] < 1e-6


def test_baked_smoke(baked):
    job, out, res = baked
    for task in ("toy_a", "toy_b"):
        s = res.smoke[task]
        if "skipped" in s:
            pytest.skip(f"MIL reference evaluator did not run: {s['skipped']}")
        assert s["runtime"].startswith("coremltools MIL reference evaluator")
        assert s["examples"] >= 2
        assert s["argmax_agreement"] >= 0.9
        # the program computes the exported float graph: only float rounding separates them
        assert s["max_abs_logit_error_vs_deployable"] < 1e-4
        # against the trained model (int8 activation simulation, absent from Core ML): still close
        assert s["max_abs_logit_error"] < 0.5


def test_swappable_multifunction(swappable, baked):
    job, out, res = swappable
    assert [(f.path, f.role, f.task) for f in res.files] == [("coreml/tasks.mlpackage", "backbone", None)]
    pkg = out / "coreml" / "tasks.mlpackage"
    spec = ct.models.MLModel(str(pkg), skip_model_load=True).get_spec()
    assert sorted(f.name for f in spec.description.functions) == ["toy_a", "toy_b"]
    for f in spec.description.functions:
        assert [i.name for i in f.input] == ["input_ids", "attention_mask"] and [o.name for o in f.output] == ["logits"]
    assert "functionName" in res.task_switch
    assert any("incremental size per added task" in n for n in res.notes)
    assert res.weight_error["backbone_linear_max_abs"] < 1e-6
    # backbone stored once: far smaller than two baked packages, in the weight file above all
    bjob, bout, bres = baked
    assert res.files[0].bytes < sum(f.bytes for f in bres.files)
    wbin = lambda p: (p / "Data/com.apple.CoreML/weights/weight.bin").stat().st_size  # noqa: E731
    assert wbin(pkg) < 0.75 * sum(wbin(bout / f.path) for f in bres.files)
    # every task function stores its LoRA/recovery/head matrices float16 (constexpr_cast to float32)
    from calora.targets.coreml import load_program

    matrices = [n for n, t in adapter_tensors(job.tasks[0].model).items() if t.ndim == 2]
    for name, func in load_program(pkg).functions.items():
        casts = [op for op in func.operations if op.op_type == "constexpr_cast"]
        assert len(casts) == len(matrices), name
        assert all(op.source_val.val.dtype == np.float16 for op in casts)
    assert any("stored float16" in n for n in res.notes)


def test_swappable_functions_are_their_tasks(swappable):
    job, out, res = swappable
    if any("skipped" in s for s in res.smoke.values()):
        pytest.skip(f"MIL reference evaluator did not run: {res.smoke}")
    pkg = out / "coreml" / "tasks.mlpackage"
    ids, mask = _feeds(job)
    # the swappable package stores the adapter weights float16 (the default --adapter-dtype)
    models = {t.name: round_adapter(t.model, "float16") for t in job.tasks}
    with torch.no_grad():
        ref = {n: Baked(deployable(m))(ids, mask).numpy() for n, m in models.items()}
    got_b = _run(pkg, "toy_b", ids, mask)
    assert np.abs(got_b - ref["toy_b"]).max() < 1e-4
    assert np.abs(got_b - ref["toy_a"]).max() > 0.1  # flipped labels: toy_a's function is not toy_b's
    assert (got_b.argmax(-1) != ref["toy_a"].argmax(-1)).mean() >= 0.5
    for t in ("toy_a", "toy_b"):
        assert res.smoke[t]["argmax_agreement"] >= 0.9
        assert res.smoke[t]["max_abs_logit_error_vs_deployable"] < 1e-4


def test_reexport_is_deterministic(baked, tiny_runs, tmp_path_factory):
    _, _, res = baked
    _, out2, res2 = _export(tiny_runs, tmp_path_factory, "baked", tasks=("toy_a",))
    first = {f.task: f.sha256 for f in res.files}
    assert res2.files[0].sha256 == first["toy_a"]
    assert hashlib.sha256(b"").hexdigest() != res2.files[0].sha256


def test_swappable_int8_adapter_functions(tiny_export):
    """`--adapter-dtype int8`: every task function stores its LoRA/recovery matrices as int8
    `constexpr_blockwise_shift_scale` (one scale per rank component), its head float16, and computes
    what the int8-rounded adapter computes in PyTorch."""
    from calora.targets.coreml import load_program

    job, out, res = tiny_export("coreml", "swappable", ("toy_a", "toy_b"), "int8")
    pkg = out / "coreml" / "tasks.mlpackage"
    tensors = adapter_tensors(job.tasks[0].model)
    ranked = [n for n, t in tensors.items() if t.ndim == 2 and (".lora_" in n or ".recovery." in n)]
    heads = [n for n, t in tensors.items() if t.ndim == 2 and n not in ranked]
    for name, func in load_program(pkg).functions.items():
        ours = [op for op in func.operations if op.name.startswith("calora_int8__") and op.op_type.startswith("constexpr")]
        int8 = [op for op in ours if op.op_type == "constexpr_blockwise_shift_scale"]
        half = [op for op in ours if op.op_type == "constexpr_cast"]
        assert len(int8) == len(ranked) and len(half) == len(heads), name
        assert all(op.data.val.dtype == np.int8 and 1 in op.scale.val.shape for op in int8), name
    assert any("stored int8" in n for n in res.notes)
    if any("skipped" in s for s in res.smoke.values()):
        pytest.skip(f"MIL reference evaluator did not run: {res.smoke}")
    ids, mask = _feeds(job)
    for t in job.tasks:
        with torch.no_grad():
            ref = Baked(deployable(round_adapter(t.model, "int8")))(ids, mask).numpy()
        assert np.abs(_run(pkg, t.name, ids, mask) - ref).max() < 1e-4, t.name
