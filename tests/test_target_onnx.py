"""The ONNX Runtime Mobile target on two tiny trained tasks (int4 g32 backbone): baked and swappable."""

from __future__ import annotations

import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest
import torch

from calora.export.graph import Baked, adapter_tensors, backbone_linears, deployable, example_inputs
from calora.train.errors import ConfigError
from calora.train.spec import CompressionSpec

pytest.importorskip("onnxruntime")
MAX_LOGIT_ERR = 0.2  # measured 0.053 (toy_a) / 0.013 (toy_b); a missing adapter or wrong scale is >> 1


@pytest.fixture
def baked(tiny_export):
    return tiny_export("onnx", "baked")


@pytest.fixture
def swappable(tiny_export):
    return tiny_export("onnx", "swappable")


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _ref(task, ids, mask):
    with torch.no_grad():
        return Baked(task.model)(ids, mask).numpy()


def _float_inits(path):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return m, [numpy_helper.to_array(i) for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]


def _contains(arrays, w):
    return any(a.shape == w.shape and np.array_equal(a, w) for a in arrays) or \
        any(a.shape == w.T.shape and np.array_equal(a, w.T) for a in arrays)


def test_module_import_is_cheap():
    code = "import sys, calora.targets.onnx; print('onnxruntime' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_deploy_format_from_spec():
    from calora.targets.onnx import deploy_format

    assert deploy_format(CompressionSpec.parse("int4:g64+sparse:0.5")) == ("int4", 64)
    assert deploy_format(CompressionSpec.parse("int8")) == ("int8", None)
    assert deploy_format(CompressionSpec()) == ("none", None)
    assert deploy_format(CompressionSpec.parse("nf4")) == ("int4", 32)
    assert deploy_format(CompressionSpec.parse("bnb-int8")) == ("int8", None)
    with pytest.raises(ConfigError, match="MatMulNBits"):
        deploy_format(CompressionSpec.parse("int4:g24"))


def test_baked_files_and_smoke(baked):
    job, out, r = baked
    assert {(f.path, f.role, f.task) for f in r.files} == {
        (f"onnx/{t}.{ext}", "model", t) for t in ("toy_a", "toy_b") for ext in ("onnx", "ort")}
    for f in r.files:
        assert (out / f.path).stat().st_size == f.bytes > 0
        assert [o.name for o in _session(out / f.path).get_outputs()] == ["logits"]
    assert [(t.name, t.shape) for t in r.inputs] == [("input_ids", ("batch", "sequence")),
                                                     ("attention_mask", ("batch", "sequence"))]
    assert r.outputs[0].shape == ("batch", 2) and r.runtime["name"] == "onnxruntime"
    for task in ("toy_a", "toy_b"):
        s = r.smoke[task]
        assert s["examples"] == len(job.smoke_texts) and ".ort" in s["runtime"]
        assert s["argmax_agreement"] >= 0.9
        assert s["max_abs_logit_error"] < MAX_LOGIT_ERR


def test_baked_backbone_int4_and_adapters_float(baked):
    job, out, r = baked
    task = job.tasks[0]
    model = deployable(task.model)
    m, floats = _float_inits(out / "onnx/toy_a.onnx")
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("MatMulNBits") == len(backbone_linears(model)) == 7
    # self-attention is one fused node per layer, with no op-by-op softmax left beside it
    assert ops.count("MultiHeadAttention") == model.config.num_hidden_layers and "Softmax" not in ops
    assert any("MultiHeadAttention" in n for n in r.notes) and r.runtime["attention"] == "fused"
    from onnx import helper

    from calora.targets.onnx import INT4_ACCURACY_LEVEL

    # the int4 kernels' activation precision is the module's measured choice, and the manifest says so
    levels = {helper.get_attribute_value(a) for n in m.graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "accuracy_level"}
    if INT4_ACCURACY_LEVEL:
        assert levels == {INT4_ACCURACY_LEVEL} and r.runtime["backbone_activations"] == "int8-block32"
    else:
        assert levels <= {0} and "backbone_activations" not in r.runtime
    for name in backbone_linears(model):  # no float copy of a backbone weight is left behind
        assert not _contains(floats, model.get_submodule(name).weight.numpy())
    tensors = adapter_tensors(model)
    assert any(".lora_A." in n for n in tensors) and any(".recovery." in n for n in tensors)
    for name, t in tensors.items():
        if t.ndim == 2:  # LoRA, recovery and classifier weights stay float, bit for bit
            assert _contains(floats, t.numpy()), name
    assert r.weight_error == {"backbone_linear_max_abs": 0.0, "embedding_max_abs": 0.0}
    # emb:int8: the token table is stored as int8 codes, and no float copy of it is left behind
    table = model.bert.embeddings.word_embeddings.weight.numpy()
    assert not _contains(floats, table)
    from onnx import TensorProto

    assert any(i.data_type == TensorProto.INT8 and tuple(i.dims) == table.shape for i in m.graph.initializer)


def test_baked_dynamic_sequence_matches_pytorch(baked):
    job, out, _ = baked
    task = job.tasks[1]
    ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts[:3]), 9)
    got = _session(out / "onnx/toy_b.ort").run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    ref = _ref(task, ids, mask)
    assert got.shape == (3, 2)
    assert np.abs(got - ref).max() < MAX_LOGIT_ERR and (got.argmax(-1) == ref.argmax(-1)).all()


def test_swappable_files_and_smoke(swappable):
    job, out, r = swappable
    assert {(f.path, f.role, f.task) for f in r.files} == {
        ("onnx/backbone.onnx", "backbone", None), ("onnx/backbone.ort", "backbone", None),
        ("onnx/adapters/toy_a.onnx_adapter", "adapter", "toy_a"),
        ("onnx/adapters/toy_b.onnx_adapter", "adapter", "toy_b")}
    for task in ("toy_a", "toy_b"):
        assert r.smoke[task]["argmax_agreement"] >= 0.9
        assert r.smoke[task]["max_abs_logit_error"] < MAX_LOGIT_ERR
    assert "no session reload" in r.task_switch and r.weight_error["backbone_linear_max_abs"] == 0.0
    m, _ = _float_inits(out / "onnx/backbone.onnx")
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("MatMulNBits") == 7 and ops.count("MultiHeadAttention") == job.tasks[0].model.config.num_hidden_layers
    inputs = {i.name for i in m.graph.input}
    assert set(adapter_tensors(deployable(job.tasks[0].model))) <= inputs  # adapter tensors are inputs


def test_swappable_really_swaps(swappable):
    import onnxruntime as ort

    from calora.targets.onnx import run_with_adapter

    job, out, _ = swappable
    ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts), job.max_length)
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    sess = _session(out / "onnx/backbone.ort")
    ref = {t.name: _ref(t, ids, mask) for t in job.tasks}
    assert (ref["toy_a"].argmax(-1) != ref["toy_b"].argmax(-1)).mean() > 0.5  # the tasks really disagree
    got_b = run_with_adapter(sess, out / "onnx/adapters/toy_b.onnx_adapter", feed)
    got_a = run_with_adapter(sess, out / "onnx/adapters/toy_a.onnx_adapter", feed)
    assert (got_b.argmax(-1) == ref["toy_b"].argmax(-1)).all() and np.abs(got_b - ref["toy_b"]).max() < MAX_LOGIT_ERR
    assert (got_b.argmax(-1) == ref["toy_a"].argmax(-1)).mean() < 0.5
    assert (got_a.argmax(-1) == ref["toy_a"].argmax(-1)).all() and np.abs(got_a - ref["toy_a"]).max() < MAX_LOGIT_ERR
    # an adapter read back from its file holds the task's tensors
    params = ort.AdapterFormat.read_adapter(str(out / "onnx/adapters/toy_b.onnx_adapter")).get_parameters()
    want = adapter_tensors(job.tasks[1].model, "float16")  # the default --adapter-dtype
    assert set(params) == set(want)
    for n, v in params.items():
        assert v.numpy().dtype == np.float16
        np.testing.assert_array_equal(v.numpy(), want[n].numpy())
    # without an adapter the zero defaults give constant logits, not some task's answers
    plain = sess.run(["logits"], feed)[0]
    assert np.abs(plain).max() < 1e-6


def test_swappable_defaults_are_empty_and_inputs_float16(swappable):
    """The shared backbone carries no adapter-sized zeros: LoRA/recovery defaults are empty along the
    rank (a symbolic input dimension), heads keep tiny zero defaults; adapter inputs are float16 and
    each is cast to float32 once."""
    from onnx import TensorProto, numpy_helper

    job, out, _ = swappable
    m, _ = _float_inits(out / "onnx/backbone.onnx")
    names = list(adapter_tensors(job.tasks[0].model))
    inputs = {i.name: i for i in m.graph.input}
    defaults = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer if i.name in names}
    assert set(defaults) == set(names)
    ranked = [n for n in names if ".lora_" in n or ".recovery." in n]
    assert ranked and all(defaults[n].size == 0 for n in ranked)
    assert all(defaults[n].size > 0 and not defaults[n].any() for n in names if n not in ranked)  # the head
    for n in ranked:
        dims = inputs[n].type.tensor_type.shape.dim
        assert any(d.dim_param in ("lora_rank", "recovery_rank") for d in dims), n
    assert all(inputs[n].type.tensor_type.elem_type == TensorProto.FLOAT16 for n in names)
    casts = [n for n in m.graph.node if n.op_type == "Cast" and n.input[0] in names]
    assert sorted(c.input[0] for c in casts) == sorted(names)
    assert sum(d.nbytes for d in defaults.values()) < 4096


def test_position_table_cut_to_the_bundle_length(baked):
    """The BERT position table is stored for max_length positions only (the bundle's contract),
    and the model still matches PyTorch at shorter lengths (checked above at 9 tokens)."""
    from onnx import numpy_helper

    job, out, r = baked
    m, _ = _float_inits(out / "onnx/toy_a.onnx")
    table = job.tasks[0].model.get_submodule("bert.embeddings.position_embeddings").weight.detach().numpy()
    stored = [numpy_helper.to_array(i) for i in m.graph.initializer if tuple(i.dims) == (job.max_length, table.shape[1])]
    assert any(np.array_equal(a, table[:job.max_length]) for a in stored)
    assert not any(tuple(i.dims) == table.shape for i in m.graph.initializer)
    assert any("Position embeddings cut" in n for n in r.notes)


def test_swappable_int8_adapters(tiny_export, swappable):
    """`--adapter-dtype int8`: LoRA and recovery matrices are int8 graph inputs, each with a float32
    `.scale` input (defaults empty along the rank), dequantized in the graph; the file is far smaller
    than the float16 one and the backbone computes what the rounded adapter computes in PyTorch."""
    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper

    from calora.export.graph import round_adapter
    from calora.targets.onnx import run_with_adapter

    job, out, res = tiny_export("onnx", "swappable", ("toy_a", "toy_b"), "int8")
    m, _ = _float_inits(out / "onnx/backbone.onnx")
    inputs = {i.name: i for i in m.graph.input}
    defaults = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    ranked = [n for n in adapter_tensors(job.tasks[0].model) if ".lora_" in n or ".recovery." in n]
    assert ranked
    for n in ranked:
        assert inputs[n].type.tensor_type.elem_type == TensorProto.INT8, n
        assert inputs[n + ".scale"].type.tensor_type.elem_type == TensorProto.FLOAT, n
        assert defaults[n].size == 0 and defaults[n + ".scale"].size == 0, n
    # the scales multiply rank-sized activations next to the MatMuls, not the widened matrices
    scaled = [node for node in m.graph.node if node.op_type == "Mul" and node.name.endswith("_dequantize")]
    assert len(scaled) == len(ranked)
    on_matrix = [node for node in scaled if node.input[0].endswith("_codes")]
    assert len(on_matrix) <= len(ranked) // 4, [node.name for node in on_matrix]
    params = ort.AdapterFormat.read_adapter(str(out / "onnx/adapters/toy_b.onnx_adapter")).get_parameters()
    assert {params[n].numpy().dtype for n in ranked} == {np.dtype(np.int8)}
    half = ort.AdapterFormat.read_adapter(str(swappable[1] / "onnx/adapters/toy_b.onnx_adapter")).get_parameters()
    payload = lambda p: sum(v.numpy().nbytes for v in p.values())  # noqa: E731  (names and framing aside)
    assert payload(params) < 0.65 * payload(half)  # tiny model: head and scales weigh more than on MiniLM
    ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts), job.max_length)
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    sess = _session(out / "onnx/backbone.ort")
    for task in job.tasks:
        got = run_with_adapter(sess, out / f"onnx/adapters/{task.name}.onnx_adapter", feed)
        want = _ref(task, ids, mask)
        with torch.no_grad():
            grid = Baked(deployable(round_adapter(task.model, "int8")))(ids, mask).numpy()
        assert (got.argmax(-1) == want.argmax(-1)).all() and np.abs(got - want).max() < MAX_LOGIT_ERR
        assert np.abs(got - grid).max() < np.abs(got - want).max() + 1e-3  # the int8 grid is what runs
        assert res.smoke[task.name]["argmax_agreement"] == 1.0
    assert any("int8 codes" in n for n in res.notes)


def test_fused_attention_keeps_eager_logits_and_declines_grouped_query_models(tiny_bert, tiny_llama):
    """The fused-attention switch changes only what the ONNX exporter traces: in eager PyTorch the
    copy computes the same logits, padding included; a grouped-query model keeps its attention."""
    import torch

    from calora.targets.onnx_attention import NAME, use_fused_attention
    from calora.train.backbones import load_classifier

    model = load_classifier(tiny_bert, 2, seed=0).eval()
    ids = torch.tensor([[2, 5, 9, 12, 7, 3, 0, 0], [2, 8, 6, 3, 0, 0, 0, 0]])
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=(ids != 0).long()).logits
        assert use_fused_attention(model) and model.config._attn_implementation == NAME
        after = model(input_ids=ids, attention_mask=(ids != 0).long()).logits
    assert torch.allclose(before, after, atol=1e-6)
    llama = load_classifier(tiny_llama, 2, seed=0)
    implementation = llama.config._attn_implementation
    assert not use_fused_attention(llama) and llama.config._attn_implementation == implementation


def test_attention_ops_keeps_the_op_by_op_graph_and_other_targets_refuse_the_flag(tiny_runs, tmp_path, capsys):
    """--attention ops: the exporter's own attention (Softmax, no MultiHeadAttention), recorded in the
    manifest, the smoke run still at parity; on a target without the choice, one clear error."""
    import json

    import onnx

    from calora.export.cli import main as export_main

    out = tmp_path / "ops"
    assert export_main(["--target", "onnx", "--task", "toy_a", "--runs", str(tiny_runs), "--out", str(out),
                        "--attention", "ops"]) == 0, capsys.readouterr().err[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"]["attention"] == "ops"
    ops = [n.op_type for n in onnx.load(str(out / "onnx" / "toy_a.onnx")).graph.node]
    assert "MultiHeadAttention" not in ops and "Softmax" in ops
    smoke = manifest["tasks"][0]["smoke"]
    assert smoke["argmax_agreement"] >= 0.9 and smoke["max_abs_logit_error"] < MAX_LOGIT_ERR
    capsys.readouterr()
    assert export_main(["--target", "coreml", "--task", "toy_a", "--runs", str(tiny_runs),
                        "--out", str(tmp_path / "cm"), "--attention", "fused"]) == 2
    err = capsys.readouterr().err
    assert "--attention fused" in err and "--target coreml" in err and not (tmp_path / "cm").exists()


def _ops_run(path, feed, scratch: Path) -> set[str]:
    """Op types ONNX Runtime ran for one call of the model at `path` (from its profiler, whose trace
    goes to `scratch`)."""
    import json

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(scratch / "profile")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, feed)
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    return {e["args"]["op_name"] for e in events if e.get("cat") == "Node" and "op_name" in e.get("args", {})}


def test_classification_ort_keeps_add_and_layernorm_unfused(baked, tmp_path):
    """The shipped .ort runs residual Add + LayerNormalization (CLASSIFY_UNFUSED: ONNX Runtime's
    SkipLayerNormalization CPU kernel measured 4x slower); converting the same .onnx with every
    fusion would have fused them, so the check can fail."""
    from calora.targets.onnx import _to_ort

    job, out, _ = baked
    ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts), job.max_length)
    feed = {"input_ids": ids.numpy()[:1], "attention_mask": mask.numpy()[:1]}
    shipped = _ops_run(out / "onnx/toy_a.ort", feed, tmp_path)
    assert "LayerNormalization" in shipped and "SkipLayerNormalization" not in shipped
    _to_ort(out / "onnx/toy_a.onnx", tmp_path / "fused.ort")
    assert "SkipLayerNormalization" in _ops_run(tmp_path / "fused.ort", feed, tmp_path)
