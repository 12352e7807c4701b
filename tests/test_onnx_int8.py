"""The ONNX Runtime int8 route (`--compression int8+act:tensor`): trained against ONNX Runtime's
own int8 numerics (per-tensor dynamic activations), exported with the trained codes, validated
at batch 1; ExecuTorch refuses it (XNNPACK quantizes per token)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

SPEC = "int8+act:tensor+sparse:0.5"


@pytest.fixture(scope="module")
def int8_run(tiny_bert, sentiment_csv, tmp_path_factory):
    from calora.train.cli import main

    runs = tmp_path_factory.mktemp("runs-int8")
    rc = main(["--backbone", tiny_bert, "--task", "toy_int8", "--data", sentiment_csv, "--out", str(runs),
               "--epochs", "6", "--batch-size", "16", "--lr", "1e-2", "--max-length", "16", "--lora-rank", "4",
               "--recovery-rank", "4", "--compression", SPEC, "--checkpoint-every", "0"])
    assert rc == 0
    cfg = json.loads((runs / "toy_int8" / "calora" / "calora_config.json").read_text())
    assert cfg["compression"]["spec"]["act_granularity"] == "tensor"
    return runs


@pytest.fixture(scope="module")
def int8_baked(int8_run, tmp_path_factory):
    """The run exported once by `calora-export --target onnx` (baked): read-only for the tests."""
    from calora.export.cli import main as export_main

    bundle = tmp_path_factory.mktemp("int8-baked") / "bundle"
    assert export_main(["--target", "onnx", "--task", "toy_int8", "--runs", str(int8_run), "--out", str(bundle)]) == 0
    return bundle


def test_onnx_int8_bundle_is_the_trained_model_and_passes_validation(int8_run, int8_baked, tmp_path, capsys):
    from calora.validate.cli import main as validate_main

    bundle = int8_baked
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"]["backbone_activations"] == "int8-per-tensor"
    # quantize_dynamic's own re-quantization moved the weights; the export copies the trained codes instead
    assert manifest["weight_error"]["backbone_linear_max_abs"] == 0.0
    import onnx

    ops = [n.op_type for n in onnx.load(str(bundle / "onnx" / "toy_int8.onnx")).graph.node]
    assert ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul") == 7  # every backbone linear
    report = tmp_path / "report"
    rc = validate_main([str(bundle), "--runs", str(int8_run), "--report", str(report)])
    assert rc == 0, capsys.readouterr().out
    task = json.loads((report / "report.json").read_text())["bundles"][0]["tasks"][0]
    # Same numerics end to end: only float rounding is left (measured 2e-6, SQNR 140 dB; the per-token
    # trained MiniLM int8 bundle on this runtime was 0.48 and 22.9 dB).
    assert task["examples"] > 0 and task["values"]["agreement"] == 1.0
    assert task["values"]["max_abs_logit_error"] < 1e-3 and task["values"]["sqnr_db"] > 60


def test_onnx_int8_runner_runs_rows_one_by_one(int8_baked):
    """A batch shares one activation scale in DynamicQuantizeLinear: the runner (like the app) runs
    batch 1, so a row's logits do not depend on the rows beside it."""
    from calora.targets.onnx_runtime import OnnxRunner

    bundle = int8_baked
    manifest = json.loads((bundle / "manifest.json").read_text())
    runner = OnnxRunner(bundle, manifest)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 30, size=(4, 16)).astype(np.int64)
    ids[0, 3] = 2  # rows with different activation ranges
    mask = np.ones_like(ids)
    together = runner.logits("toy_int8", ids, mask)
    alone = np.concatenate([runner.logits("toy_int8", ids[i:i + 1], mask[i:i + 1]) for i in range(4)])
    np.testing.assert_array_equal(together, alone)
    sess = runner._session(runner._ort_path("toy_int8"))
    batched = sess.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    assert not np.array_equal(batched, alone)  # what running the batch at once would have given


@pytest.mark.parametrize("target", ["executorch", "coreml"])
def test_other_targets_refuse_a_per_tensor_run(int8_run, tmp_path, capsys, target):
    """XNNPACK quantizes activations per token and Core ML runs them in float: neither computes what
    an act:tensor adapter was trained against."""
    from calora.export.cli import main as export_main

    out = tmp_path / target
    rc = export_main(["--target", target, "--task", "toy_int8", "--runs", str(int8_run), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "act:tensor" in err and "--target onnx" in err and "Traceback" not in err
    assert not out.exists()


def test_generative_training_refuses_per_tensor_activations():
    from calora.train.config import RunConfig
    from calora.train.errors import ConfigError
    from calora.train.spec import CompressionSpec

    with pytest.raises(ConfigError, match="act:tensor"):
        RunConfig(task="chat", kind="generate", compression=CompressionSpec.parse("int8+act:tensor"))


@pytest.mark.parametrize("dtype", [None, "float16"])
def test_onnx_int8_swappable_keeps_every_adapter_input(int8_run, tmp_path, dtype):
    """quantize_dynamic rewrites transB Gemms over initializers by storing a transposed copy; an
    adapter input (an initializer with a default) must survive it, or activating the task's
    .onnx_adapter fails ("Invalid input name: classifier.weight", found with float32 adapters).
    float32 is the default adapter dtype over an act:tensor backbone (float16 failed parity on MiniLM)."""
    import onnx

    from calora.export.cli import main as export_main
    from calora.targets.onnx_runtime import OnnxRunner

    bundle = tmp_path / "bundle"
    flags = ["--adapter-dtype", dtype] if dtype else []
    assert export_main(["--target", "onnx", "--mode", "swappable", *flags, "--task", "toy_int8",
                        "--runs", str(int8_run), "--out", str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["adapter_dtype"] == (dtype or "float32")
    graph = onnx.load(str(bundle / "onnx" / "backbone.onnx")).graph
    inputs = {i.name for i in graph.input}
    assert {"classifier.weight", "bert.pooler.dense.recovery.down.weight"} <= inputs
    assert manifest["weight_error"]["backbone_linear_max_abs"] == 0.0
    smoke = manifest["tasks"][0]["smoke"]
    assert smoke["argmax_agreement"] == 1.0 and smoke["max_abs_logit_error"] < (0.1 if dtype else 1e-3)
    ids = np.full((2, 16), 7, dtype=np.int64)
    assert OnnxRunner(bundle, manifest).logits("toy_int8", ids, np.ones_like(ids)).shape == (2, 2)
