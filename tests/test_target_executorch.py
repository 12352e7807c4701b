"""ExecuTorch target on the two tiny trained tasks: each mode is lowered once per module (lowering is
the slow part), then its artifacts are checked in the ExecuTorch runtime against PyTorch."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("executorch")
pytest.importorskip("torchao")

# A real bug (wrong scales, dropped LoRA/recovery, wrong adapter order, weight-only ints as floats)
# moves these 2-class logits by whole units; measured error on the tiny model is ~0.003-0.009
# (int8 dynamic activations of XNNPACK vs the trained fake-quant simulation).
MAX_LOGIT_ERROR = 0.1


@pytest.fixture
def exported(tiny_export):
    return {mode: tiny_export("executorch", mode) for mode in ("baked", "swappable")}


def _inputs(job):
    from calora.export.graph import example_inputs

    return example_inputs(job.tokenizer, list(job.smoke_texts), job.max_length)


def _reference(job, task):
    from calora.export.graph import Baked

    model = next(t.model for t in job.tasks if t.name == task)
    ids, mask = _inputs(job)
    with torch.no_grad():
        return Baked(model)(ids, mask)


def test_module_import_is_cheap():
    import subprocess
    import sys

    code = ("import sys, calora.targets.executorch as m; "
            "assert 'executorch.exir' not in sys.modules and 'torchao' not in sys.modules, 'heavy import'; "
            "assert m.ExecuTorchTarget.name == 'executorch'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("mode", ["baked", "swappable"])
def test_files_and_roles(exported, mode):
    job, out_dir, result = exported[mode]
    roles = {(f.role, f.task) for f in result.files}
    if mode == "baked":
        assert roles == {("model", "toy_a"), ("model", "toy_b")}
        assert {f.path for f in result.files} == {"executorch/toy_a.pte", "executorch/toy_b.pte"}
    else:
        assert roles == {("backbone", None), ("adapter", "toy_a"), ("adapter", "toy_b")}
        assert "executorch/backbone.pte" in {f.path for f in result.files}
    for f in result.files:
        path = out_dir / f.path
        assert path.is_file() and path.stat().st_size == f.bytes > 0
    assert result.runtime["name"] == "executorch" and result.runtime["version"]
    assert [t.name for t in result.inputs[:2]] == ["input_ids", "attention_mask"]
    assert [t.name for t in result.outputs] == ["logits"]


@pytest.mark.parametrize("mode", ["baked", "swappable"])
def test_smoke_against_pytorch(exported, mode):
    _job, _out, result = exported[mode]
    assert set(result.smoke) == {"toy_a", "toy_b"}
    for task, s in result.smoke.items():
        assert s["examples"] >= 2, task
        assert s["argmax_agreement"] >= 0.9, (task, s)
        assert s["max_abs_logit_error"] < MAX_LOGIT_ERROR, (task, s)
        assert "ExecuTorch" in s["runtime"] and "XNNPACK" in s["runtime"]


@pytest.mark.parametrize("mode", ["baked", "swappable"])
def test_weights_bit_identical(exported, mode):
    result = exported[mode][2]
    assert result.weight_error["backbone_linear_max_abs"] == 0.0
    # the spec of tiny_runs has emb:int8: the table is stored int8 with the trained codes
    assert result.weight_error.get("embedding_max_abs") == 0.0


@pytest.mark.parametrize("mode", ["baked", "swappable"])
def test_xnnpack_delegation(exported, mode):
    import re

    result = exported[mode][2]
    described = [n for n in result.notes if "XNNPACK delegate calls" in n]
    assert described
    for note in described:
        calls = int(re.search(r"(\d+) XNNPACK delegate calls", note).group(1))
        left = int(re.search(r"(\d+) quantize ops", note).group(1))
        # every matmul runs in XNNPACK, the swappable adapter's float linears (non-constant weights) too
        matmuls = int(re.search(r"(\d+) matmul/linear ops outside", note).group(1))
        assert calls >= 1 and left == 0 and matmuls == 0, note


@pytest.mark.parametrize("mode", ["baked", "swappable"])
def test_manifest_lists_what_the_runtime_must_link(tiny_bundle, mode):
    """The classification bundle's manifest names its programs' operators outside XNNPACK (read
    from the .pte files), the backend, and each namespace's kernel library: int8 embeddings need
    ExecuTorch's quantized kernels, and nothing needs the LLM kernels."""
    import json

    runtime = json.loads((tiny_bundle("executorch", mode) / "manifest.json").read_text())["runtime"]
    ops = set(runtime["operators"])
    assert runtime["backends"] == ["XnnpackBackend"] and ops, runtime
    assert "quantized_decomposed::embedding_byte.out" in ops, sorted(ops)
    assert "kernels_quantized" in runtime["kernel_libraries"]["quantized_decomposed"]
    assert not any(op.startswith("llama::") for op in ops)
    assert set(runtime["kernel_libraries"]) == {op.split("::")[0] for op in ops}
    # --attention fused (the default): attention and norms run inside XNNPACK, not between partitions
    assert runtime["attention"] == "fused"
    assert "aten::native_layer_norm.out" not in ops and "aten::any.out" not in ops, sorted(ops)


def test_xnnpack_rewrite_computes_the_same_logits(tiny_bert, tiny_llama):
    """The rewritten copy (attention as bmm + softmax over the additive mask, norms with a
    constant-column mean) computes the original's logits, padded keys included, for a BERT and for a
    grouped-query Llama (4 query heads over 2 key heads, RMSNorm)."""
    from calora.targets.executorch_graph import NAME, xnnpack_friendly
    from calora.train.backbones import load_classifier

    ids = torch.tensor([[2, 5, 9, 12, 7, 3, 0, 0], [2, 8, 6, 3, 0, 0, 0, 0]])
    for folder in (tiny_bert, tiny_llama):
        model = load_classifier(folder, 2, seed=0).eval()
        with torch.no_grad():
            before = model(input_ids=ids, attention_mask=(ids != 0).long()).logits
            norms = sum(type(m).__name__ in ("LayerNorm", "LlamaRMSNorm") for m in model.modules())
            done = xnnpack_friendly(model)
            after = model(input_ids=ids, attention_mask=(ids != 0).long()).logits
        assert done == {"attention": "bmm", "norms": f"{norms} rewritten"} and norms >= 2, (folder, done)
        assert model.config._attn_implementation == NAME
        assert not any(type(m).__name__ in ("LayerNorm", "LlamaRMSNorm") for m in model.modules())
        assert torch.allclose(before, after, atol=1e-5), (folder, (before - after).abs().max())


def test_decoder_classifier_program_does_not_split_per_layer(tiny_bert):
    """A decoder classifier runs without a KV cache (`export.graph._no_cache`): with transformers'
    default every layer appended its keys and values to a new DynamicCache, a one-tensor `cat`
    XNNPACK does not take, so each layer split the program. Lowered, a 3-layer grouped-query
    Llama now needs as many delegate calls as a 1-layer one; the logits are the model's own."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from transformers import BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    from calora.export.graph import Baked
    from calora.targets.executorch import _graph_stats
    from calora.targets.executorch_graph import xnnpack_friendly

    ids = torch.tensor([[2, 5, 9, 12, 7, 3, 0, 0]])
    mask = (ids != 0).long()

    def delegate_calls(layers: int) -> int:
        torch.manual_seed(0)
        model = LlamaForSequenceClassification(LlamaConfig(
            vocab_size=32, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=16, pad_token_id=0)).eval()
        xnnpack_friendly(model)
        graph = Baked(model).eval()
        with torch.no_grad():
            assert torch.allclose(graph(ids, mask), model(input_ids=ids, attention_mask=mask).logits, atol=1e-6)
        ep = torch.export.export(graph, (ids, mask), strict=False)
        lowered = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).exported_program()
        return _graph_stats(lowered.graph)["delegate_calls"]

    assert Baked(BertForSequenceClassification.from_pretrained(tiny_bert)).extra == {}  # encoders take no flag
    one, three = delegate_calls(1), delegate_calls(3)
    assert one == three, (one, three)


def test_xnnpack_norm_covers_layer_norm_variants():
    """LayerNorm with and without its affine weight or bias: the rewritten norm computes the same."""
    from torch import nn

    from calora.targets.executorch_graph import _as_norm

    torch.manual_seed(0)
    x = torch.randn(2, 5, 16) * 3 + 1
    for norm in (nn.LayerNorm(16), nn.LayerNorm(16, elementwise_affine=False), nn.LayerNorm(16, bias=False)):
        if norm.weight is not None:
            nn.init.uniform_(norm.weight, 0.5, 1.5)
        with torch.no_grad():
            assert torch.allclose(_as_norm(norm)(x), norm(x), atol=1e-5), norm
    assert _as_norm(nn.LayerNorm((4, 4))) is None  # over two dimensions: left as it is


def test_attention_ops_keeps_the_model_graph(exported, tiny_runs, tmp_path, capsys):
    """--attention ops: the model's own SDPA and LayerNorm, run as portable kernels between more
    XNNPACK partitions than the default's (the session's baked bundle); recorded in the manifest,
    the smoke run still at parity."""
    import json
    import re

    from calora.export.cli import main as export_main

    def calls(notes):
        note = next(n for n in notes if "XNNPACK delegate calls" in n)
        return int(re.search(r"(\d+) XNNPACK delegate calls", note).group(1))

    out = tmp_path / "ops"
    assert export_main(["--target", "executorch", "--task", "toy_a", "--runs", str(tiny_runs), "--out", str(out),
                        "--attention", "ops"]) == 0, capsys.readouterr().err[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"]["attention"] == "ops"
    assert "aten::native_layer_norm.out" in manifest["runtime"]["operators"]
    smoke = manifest["tasks"][0]["smoke"]
    assert smoke["argmax_agreement"] >= 0.9 and smoke["max_abs_logit_error"] < MAX_LOGIT_ERROR, smoke
    fused = exported["baked"][2]
    assert fused.runtime["attention"] == "fused"
    assert calls(fused.notes) < calls(manifest["notes"]), (fused.notes, manifest["notes"])


def test_baked_pte_runs_in_runtime(exported):
    from calora.targets.executorch import _run_rows

    job, out_dir, _ = exported["baked"]
    ids, mask = _inputs(job)
    for task in ("toy_a", "toy_b"):
        got = _run_rows(out_dir / "executorch" / f"{task}.pte", [ids[:4], mask[:4]], [])
        ref = _reference(job, task)[:4]
        assert got.shape == ref.shape
        assert (got - ref).abs().max() < MAX_LOGIT_ERROR


def test_swappable_really_swaps(exported):
    """backbone.pte fed toy_b's adapter file gives toy_b's outputs, not toy_a's (and vice versa)."""
    from calora.targets.executorch import _load, _run_rows, read_adapter

    job, out_dir, _ = exported["swappable"]
    ids, mask = _inputs(job)
    _program, method = _load(out_dir / "executorch" / "backbone.pte")
    ref_a, ref_b = _reference(job, "toy_a"), _reference(job, "toy_b")
    assert (ref_a.argmax(-1) != ref_b.argmax(-1)).float().mean() >= 0.5  # the tasks really differ
    for task, ref, other in (("toy_b", ref_b, ref_a), ("toy_a", ref_a, ref_b)):
        got = _run_rows(method, [ids, mask], read_adapter(out_dir / "executorch" / "adapters" / f"{task}.safetensors"))
        assert (got - ref).abs().max() < MAX_LOGIT_ERROR, task
        assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9, task
        assert (got.argmax(-1) == other.argmax(-1)).float().mean() <= 0.5, task


def test_swappable_adapter_order_and_switch_sentence(exported):
    from safetensors import safe_open

    job, out_dir, result = exported["swappable"]
    orders = []
    for task in ("toy_a", "toy_b"):
        with safe_open(str(out_dir / "executorch" / "adapters" / f"{task}.safetensors"), framework="pt") as f:
            orders.append(f.metadata()["calora.input_order"])
    assert orders[0] == orders[1]
    extra = [t.name for t in result.inputs[2:]]
    assert extra and extra == __import__("json").loads(orders[0])
    # the files store float16 (the default --adapter-dtype); forward takes float32, widened at load
    from calora.targets.executorch import read_adapter, read_adapter_file

    path = out_dir / "executorch" / "adapters" / "toy_a.safetensors"
    assert {t.dtype for t in read_adapter_file(path)[2].values()} == {__import__("torch").float16}
    assert {t.dtype for t in read_adapter(path)} == {__import__("torch").float32}
    assert {t.dtype for t in result.inputs[2:]} == {"float32"}
    assert "no program reload" in result.task_switch and "ms" in result.task_switch


def test_unrepresentable_spec_is_config_error():
    from calora.targets.executorch import _weight_format
    from calora.train.errors import ConfigError
    from calora.train.spec import CompressionSpec

    assert _weight_format(CompressionSpec.parse("int4:g64")) == ("int4", 64)
    assert _weight_format(CompressionSpec.parse("int8")) == ("int8", None)
    assert _weight_format(CompressionSpec.parse("nf4")) == ("int4", 32)
    assert _weight_format(CompressionSpec.parse("bnb-int8")) == ("int8", None)

    class Odd:  # a quant scheme the target does not know
        quant = type("Q", (), {"is_bnb": False, "value": "fp8"})()
        group_size = None
        per_tensor_activations = False  # the other part of CompressionSpec every target reads

        def deployed(self):  # what CompressionSpec.deployed() gives every target
            return self.quant, self.group_size

    with pytest.raises(ConfigError, match="cannot be represented"):
        _weight_format(Odd())


def test_reexport_is_byte_identical(exported):
    """Lowering the same task again gives the same .pte bytes (bundles are reproducible)."""
    from calora.export.graph import Baked, example_inputs
    from calora.targets.executorch import ExecuTorchTarget, _rewrite

    job, out_dir, _ = exported["baked"]
    target = ExecuTorchTarget()
    task = job.tasks[0]
    model, _, _ = target._prepare(task.model, job.spec)
    _rewrite(model, job)  # as the export does (--attention fused by default)
    ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts), job.max_length)
    data, _, _ = target._lower(Baked(model), (ids[:1].contiguous(), mask[:1].contiguous()))
    assert data == (out_dir / "executorch" / f"{task.name}.pte").read_bytes()


@pytest.mark.parametrize("adapter_dtype", [None, "int8"])
def test_shared_classifier_programs_load_one_backbone_file(tiny_export, adapter_dtype):
    """--mode shared for classification: one backbone.ptd, one program per task holding only its
    adapter. Each program, loaded with that data file, gives its own task's logits (toy_b's adapter
    flips toy_a's answers); without the data file it does not load; the backbone bytes moved, not copied."""
    from calora.targets.executorch import _load, _run_rows

    job, out_dir, result = tiny_export("executorch", "shared", adapter_dtype=adapter_dtype)
    sub = out_dir / "executorch"
    assert {(f.path, f.role, f.task) for f in result.files} == {
        ("executorch/backbone.ptd", "backbone", None), ("executorch/toy_a.pte", "model", "toy_a"),
        ("executorch/toy_b.pte", "model", "toy_b")}
    assert result.weight_error["backbone_linear_max_abs"] == 0.0
    assert [t.name for t in result.inputs] == ["input_ids", "attention_mask"]  # the adapter is no input
    ids, mask = _inputs(job)
    ref_a, ref_b = _reference(job, "toy_a"), _reference(job, "toy_b")
    assert (ref_a.argmax(-1) != ref_b.argmax(-1)).float().mean() >= 0.5  # the tasks really differ
    # int8 codes move these logits by a little more than the float32 adapter does
    limit = MAX_LOGIT_ERROR if adapter_dtype is None else 3 * MAX_LOGIT_ERROR
    for task, ref, other in (("toy_a", ref_a, ref_b), ("toy_b", ref_b, ref_a)):
        _program, method = _load(sub / f"{task}.pte", sub / "backbone.ptd")
        got = _run_rows(method, [ids, mask], [])
        assert (got - ref).abs().max() < limit, task
        assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9, task
        assert (got.argmax(-1) == other.argmax(-1)).float().mean() <= 0.5, task
        assert result.smoke[task]["max_abs_logit_error"] < limit
    with pytest.raises(RuntimeError, match="load method"):  # the backbone's weights are not in the program
        _load(sub / "toy_a.pte")[1].execute([ids[:1].contiguous(), mask[:1].contiguous()])
    # the backbone's bytes moved out of each program, not copied: program + data file ~ the baked program
    baked = (tiny_export("executorch", "baked")[1] / "executorch" / "toy_a.pte").stat().st_size
    program, data = (sub / "toy_a.pte").stat().st_size, (sub / "backbone.ptd").stat().st_size
    assert program < baked - 0.8 * data and program + data < 1.05 * baked, (program, data, baked)
    assert "packs the weights at load" in result.task_switch
    assert any("Module.load" in n and "data file" in n for n in result.notes)  # Android's gap, said


def test_shared_classifier_bundle_validates(tiny_bundle, tiny_runs):
    """calora-validate runs each task program with backbone.ptd in ExecuTorch's runtime and checks
    that the backbone's weights live only in that file."""
    from calora.targets.base import Stage
    from calora.validate.core import ValidateConfig, validate

    bundle = tiny_bundle("executorch", "shared")
    report = validate(ValidateConfig(bundles=(bundle,), runs=str(tiny_runs)))
    assert report.passed, [f"{c.name}|{c.detail}" for c in report.failures]
    (res,) = report.bundles
    assert {t.task for t in res.tasks} == {"toy_a", "toy_b"} and all(t.values["agreement"] >= 0.99 for t in res.tasks)
    only = [c for c in report.checks if c.stage == Stage.STRUCTURE and "backbone weights only in" in c.name]
    assert len(only) == 2, [c.name for c in report.checks]
    readme = (bundle / "README.md").read_text()
    assert "dataFilePaths" in readme and "backbone.ptd" in readme


def test_task_switch_benchmark_opens_shared_programs_with_their_data_file(tiny_bundle):
    """benchmarks/task_switch.py times a shared bundle's switch as a reload of the other task's
    program with backbone.ptd (without the data file the program would not run)."""
    from benchmarks.task_switch import _et_worker
    from calora.export.manifest import read_manifest

    bundle = tiny_bundle("executorch", "shared")
    ids, mask = torch.ones(1, 16, dtype=torch.long), torch.ones(1, 16, dtype=torch.long)
    out = _et_worker(bundle, read_manifest(bundle), ["toy_a", "toy_b"], ids.numpy(), mask.numpy(), 2)
    assert len(out["reload"]) == len(out["steady_run"]) == 2 and not out["switch_cold"]
    assert all(v > 0 for v in out["reload_open"] + out["steady_run"])


def test_shared_export_refuses_tasks_whose_backbone_bytes_differ(tmp_path):
    """Every task program loads the one backbone.ptd: the first task writes it, a later task with
    other backbone bytes (another compressed backbone) is one clear error, and the file is left as
    the first task wrote it."""
    from calora.targets.executorch_shared import _same_backbone
    from calora.train.errors import CaloraError

    ptd = tmp_path / "backbone.ptd"
    first = _same_backbone(ptd, b"weights-a", None, "toy_a", "toy_a")
    assert ptd.read_bytes() == first == b"weights-a"
    assert _same_backbone(ptd, b"weights-a", first, "toy_b", "toy_a") == first
    with pytest.raises(CaloraError, match="toy_c's backbone weights differ from toy_a's"):
        _same_backbone(ptd, b"weights-c", first, "toy_c", "toy_a")
    assert ptd.read_bytes() == b"weights-a"
