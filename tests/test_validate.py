"""calora-validate on tiny bundles: passing bundles pass in every runtime, and real failures
(corrupt adapter, swapped label map, adapter from another backbone, torchao weight-only ExecuTorch
export) fail with a message that names the problem."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from calora.targets.base import Stage
from calora.validate.checks import ParityError, Status
from calora.validate.core import ValidateConfig, validate
from calora.validate.references import FLOAT_REFERENCE, TRAINED_REFERENCE

pytest.importorskip("executorch")


def _run(bundle: Path, tiny_runs: Path, **kw):
    return validate(ValidateConfig(bundles=(bundle,), runs=str(tiny_runs), **kw))


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(bundle, dest)
    return dest


def _fails(report) -> list[str]:
    return [f"{c.stage.value}|{c.task}|{c.name}|{c.detail}" for c in report.failures]


@pytest.mark.parametrize("target", ["executorch", "onnx", "coreml"])
def test_good_swappable_bundle_passes(tiny_bundle, tiny_runs, tmp_path, target):
    from calora.validate.report import write

    bundle = tiny_bundle(target, "swappable")
    report = _run(bundle, tiny_runs)
    assert report.passed, _fails(report)
    report.raise_for_failures()
    (res,) = report.bundles
    assert {t.task for t in res.tasks} == {"toy_a", "toy_b"}
    for t in res.tasks:
        assert t.values["agreement"] >= 0.99 and t.metrics["artifact"]["examples"] == t.examples > 10
        assert t.metrics["teacher"]["accuracy"] > 0.5  # the uncompressed teacher was evaluated too
        # Values against what the runtime computes: XNNPACK's int8 activations as training simulated
        # them; float activations (MatMulNBits, Core ML) against the same weights run float, near-exactly.
        floats = target != "executorch"
        assert t.values["reference"] == (FLOAT_REFERENCE if floats else TRAINED_REFERENCE)
        assert not floats or t.values["sqnr_db"] > 60  # float16 adapter files: about 85 dB here
    stages = [c.stage.order for c in report.checks]
    assert stages == sorted(stages), "checks are reported in the fixed stage order"
    structure = {c.name: c for c in report.checks if c.stage == Stage.STRUCTURE}
    assert structure and all(c.status == Status.PASS for c in structure.values())
    if target == "coreml":
        assert "program-level" in res.runtime or "MLModel.predict" in res.runtime
    if target == "executorch":  # the tiny WordPiece tokenizer cannot load in the C++ HF tokenizer: skipped, with why
        (cpp,) = [c for c in report.checks if c.name.startswith("C++ HF tokenizer")]
        assert cpp.status == Status.SKIP and "cannot load" in cpp.detail
        assert cpp in report.skipped
    paths = write(report, tmp_path / "report")
    data = json.loads(paths["json"].read_text())
    assert data["status"] == "pass" and data["schema_version"] == 1 and data["bundles"][0]["runtime"] == res.runtime
    page = paths["html"].read_text()
    assert "<svg" in page and "<script" not in page and "src=" not in page  # self-contained
    assert res.runtime in paths["md"].read_text()


def test_onnx_int8_activations_classification_bundle_validates_against_the_trained_model(tiny_runs, tmp_path,
                                                                                         capsys):
    """calora-export --activations int8 on a classification task: every int4 MatMulNBits runs
    accuracy_level 4 (MLAS int8 activations per block), the manifest records int8 activations, and
    calora-validate compares it with the trained model (which simulated int8 activations) under the
    int8-activation gates, naming their source; the default stays float, against the float reference."""
    import onnx

    from calora.export.cli import main as export_main

    out = tmp_path / "b"
    assert export_main(["--target", "onnx", "--mode", "swappable", "--task", "toy_a,toy_b",
                        "--runs", str(tiny_runs), "--out", str(out), "--activations", "int8"]) == 0, \
        capsys.readouterr().err[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"]["activations"] == "int8-dynamic"
    assert manifest["runtime"]["backbone_activations"] == "int8-block32"
    proto = onnx.load(str(out / "onnx" / "backbone.onnx"))
    levels = [{a.name: a.i for a in n.attribute}.get("accuracy_level") for n in proto.graph.node
              if n.op_type == "MatMulNBits"]
    assert levels and set(levels) == {4}
    report = _run(out, tiny_runs)
    assert report.passed, _fails(report)
    (res,) = report.bundles
    assert res.threshold_sources["min_agreement"] == "default (onnx, int8 activations)"
    assert all(t.values["reference"] == TRAINED_REFERENCE for t in res.tasks)


def test_cli_in_process_exit_codes(tiny_bundle, tiny_runs, tmp_path, capsys):
    from calora.validate.cli import main

    bundle = tiny_bundle("onnx", "swappable")
    assert main([str(bundle), "--runs", str(tiny_runs), "--task", "toy_a", "--max-examples", "8",
                 "--threshold", "onnx.min_agreement=0.9", "--report", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["bundles"][0]["threshold_sources"]["min_agreement"] == "override (onnx)"
    assert [t["examples"] for t in report["bundles"][0]["tasks"]] == [8]
    assert main([str(tmp_path / "nowhere"), "--runs", str(tiny_runs)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main([str(bundle), "--runs", str(tiny_runs), "--task", "sentiment"]) == 2
    assert "--task sentiment" in capsys.readouterr().err
    assert main([str(bundle), "--runs", str(tiny_runs), "--threshold", "min_agreemnt=1"]) == 2
    assert "unknown threshold 'min_agreemnt'" in capsys.readouterr().err
    assert main([str(bundle), "--runs", str(tiny_runs), "--noise-floor-examples", "-1"]) == 2
    assert "--noise-floor-examples -1" in capsys.readouterr().err
    # A threshold no artifact can meet makes the run fail with exit code 1 and the failure listed.
    assert main([str(bundle), "--runs", str(tiny_runs), "--max-examples", "8", "--threshold", "logit_steps=0",
                 "--threshold", "logit_atol=0"]) == 1
    assert "max |logit error|" in capsys.readouterr().err


def test_a_value_miss_is_put_beside_the_references_own_float64_noise(tiny_bundle, tiny_runs):
    """Where a value gate fails, the report measures the PyTorch reference in float64 on the first N
    texts and prints the artifact's error beside it (a diagnosis: the failure stays a failure); a
    passing run and --noise-floor-examples 0 do not spend the time."""
    import math

    from calora.validate.report import markdown

    bundle = tiny_bundle("onnx", "swappable")
    strict = ("logit_steps=0", "logit_atol=0", "min_sqnr_db=200")
    report = _run(bundle, tiny_runs, tasks=("toy_a",), max_examples=12, threshold_flags=strict,
                  noise_floor_examples=8)
    assert not report.passed
    (t,) = report.bundles[0].tasks
    nf = t.noise_floor
    assert nf["examples"] == 8 and nf["computation"].endswith("in float64")
    assert nf["artifact"]["examples"] == nf["reference_float64"]["examples"] == 8
    # float64 against float32 is a real, small, non-zero difference, measured on the same rows as the artifact
    assert 0 < nf["reference_float64"]["max_abs_logit_error"] < 1e-3
    assert all(r is None or (r > 0 and math.isfinite(r)) for r in nf["ratios"].values())
    failed = {c.name: c.detail for c in report.failures}
    assert set(failed) == {"max |logit error|", "SQNR"}  # the gates did not move
    assert "reference noise floor on the first 8 texts" in failed["max |logit error|"]
    assert "reference noise floor" in failed["SQNR"]
    (agreement,) = [c for c in report.checks if c.name == "argmax agreement"]
    assert agreement.status == Status.PASS and "noise floor" not in agreement.detail
    md = markdown(report)
    assert "## Reference noise floor" in md and "| onnx | swappable | toy_a | 8 | max abs logit error |" in md
    assert _run(bundle, tiny_runs, tasks=("toy_a",), max_examples=12, threshold_flags=strict,
                noise_floor_examples=0).bundles[0].tasks[0].noise_floor is None
    assert _run(bundle, tiny_runs, tasks=("toy_a",), max_examples=12).bundles[0].tasks[0].noise_floor is None


def test_console_script_on_a_bundle_ci_builds(tiny_bundle, tiny_runs, tmp_path):
    """The project's own CI runs the installed `calora-validate` on a small bundle it just built."""
    script = Path(sys.executable).with_name("calora-validate")
    assert script.is_file(), "calora-validate is not installed next to the test interpreter"
    bundle = tiny_bundle("executorch", "swappable")
    proc = subprocess.run([str(script), str(bundle), "--runs", str(tiny_runs), "--report", str(tmp_path / "ci")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "ci" / "report.json").read_text())["status"] == "pass"


@pytest.mark.parametrize("target", ["executorch", "onnx", "coreml"])
def test_int8_adapter_bundle_passes(tiny_bundle, tiny_runs, target):
    """`--adapter-dtype int8` bundles: each runtime computes with the int8 codes times their scales
    and still passes parity against the float32 trained model; the manifest says int8."""
    bundle = tiny_bundle(target, "swappable", adapter_dtype="int8")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["adapter_dtype"] == "int8"
    readme = (bundle / "README.md").read_text()  # tells the app developer what the files hold
    assert "Adapter tensors are stored as int8" in readme and ("<name>.scale" in readme or target == "coreml")
    report = _run(bundle, tiny_runs)
    assert report.passed, _fails(report)
    for t in report.bundles[0].tasks:
        assert t.values["agreement"] >= 0.99
    if target == "executorch":
        dtype = [c for c in report.checks if c.name == "adapter tensor dtype"]
        assert len(dtype) == 2 and all(c.status == Status.PASS for c in dtype)
        from calora.targets.executorch import read_adapter_file

        _, _, stored = read_adapter_file(bundle / "executorch/adapters/toy_a.safetensors")
        assert {str(t.dtype) for n, t in stored.items() if ".recovery." in n and not n.endswith(".scale")} == \
            {"torch.int8"}


def test_int8_adapter_file_without_a_scale_fails(tiny_bundle, tiny_runs, tmp_path):
    """An int8 ExecuTorch adapter file missing one `<name>.scale` would run with raw codes: the dtype
    check names the missing tensor (besides the changed file hash and fingerprint)."""
    from safetensors.torch import save_file

    from calora.targets.executorch import read_adapter_file

    bundle = _copy(tiny_bundle("executorch", "swappable", adapter_dtype="int8"), tmp_path)
    path = bundle / "executorch/adapters/toy_b.safetensors"
    _, meta, stored = read_adapter_file(path)
    dropped = next(n for n in stored if n.endswith(".recovery.up.weight.scale"))
    save_file({n: t for n, t in stored.items() if n != dropped}, str(path), metadata=meta)
    report = _run(bundle, tiny_runs)
    fails = _fails(report)
    assert any(f.startswith("shapes|toy_b|adapter tensor dtype") and dropped in f for f in fails), fails
    assert not any("|toy_a|" in f for f in fails), "the intact task must still pass"


@pytest.mark.parametrize("target,adapter", [("executorch", "executorch/adapters/toy_b.safetensors"),
                                            ("onnx", "onnx/adapters/toy_b.onnx_adapter")])
def test_corrupted_adapter_file_fails(tiny_bundle, tiny_runs, tmp_path, target, adapter):
    bundle = _copy(tiny_bundle(target, "swappable"), tmp_path)
    path = bundle / adapter
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))  # a truncated download
    report = _run(bundle, tiny_runs)
    assert not report.passed
    fails = _fails(report)
    assert any(f.startswith("files|toy_b|") and adapter in f and "differs from the manifest" in f for f in fails), fails
    assert any(f.startswith(("names|toy_b|adapter file readable", "values|toy_b|artifact ran")) for f in fails), fails
    assert not any("|toy_a|" in f for f in fails), "the intact task must still pass"
    with pytest.raises(ParityError) as err:
        report.raise_for_failures()
    assert adapter in str(err.value) and len(err.value.failures) == len(report.failures)


def test_swapped_label_map_fails(tiny_bundle, tiny_runs, tmp_path):
    bundle = _copy(tiny_bundle("onnx", "swappable"), tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = next(t for t in manifest["tasks"] if t["name"] == "toy_a")
    entry["label_names"] = entry["label_names"][::-1]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    report = _run(bundle, tiny_runs)
    fails = _fails(report)
    assert any(f.startswith("names|toy_a|label names as trained") and "mislabel" in f for f in fails), fails
    assert any(f.startswith("metric|toy_a|") for f in fails), fails  # every prediction is now named wrong
    (toy_a,) = [t for t in report.bundles[0].tasks if t.task == "toy_a"]
    assert toy_a.metrics["artifact"]["accuracy"] < 0.5 < toy_a.metrics["pytorch_compressed"]["accuracy"]
    assert toy_a.values["agreement"] >= 0.99  # the logits themselves are fine: only the label map is wrong


def test_adapter_from_another_backbone_fails(tiny_bundle, tiny_runs, tiny_bert, tmp_path):
    """toy_b's adapter file replaced by one trained on another compressed backbone (same layout)."""
    from calora.export.graph import adapter_tensors, check_same_layout
    from calora.targets.executorch import write_adapter
    from calora.train.artifacts import load_student
    from calora.train.cli import main as train

    runs = tmp_path / "other"
    data = next((tiny_runs / "toy_b" / "calora").glob("calora_config.json"))
    src = json.loads(data.read_text())["task"]["record"]["source"]
    assert train(["--backbone", tiny_bert, "--task", "toy_b", "--data", src, "--out", str(runs), "--epochs", "6",
                  "--lr", "1e-2",
                  "--batch-size", "16", "--max-length", "16", "--lora-rank", "4", "--recovery-rank", "4",
                  "--compression", "int8+sparse:0.5+emb:int8", "--checkpoint-every", "0"]) == 0
    other, cfg = load_student(runs / "toy_b")
    bundle = _copy(tiny_bundle("executorch", "swappable"), tmp_path)
    names = check_same_layout({"other": other})
    write_adapter(bundle / "executorch/adapters/toy_b.safetensors", adapter_tensors(other, "float16"), names, "toy_b",
                  cfg["task"]["label_names"], cfg["compression"]["fingerprint"])
    report = _run(bundle, tiny_runs)
    fails = _fails(report)
    assert any(f.startswith("names|toy_b|adapter belongs to this backbone") and
               "was exported for backbone " + cfg["compression"]["fingerprint"][:23] in f for f in fails), fails
    assert not any("|toy_a|" in f for f in fails)


def test_torchao_weight_only_executorch_export_fails_and_correct_export_passes(tiny_bundle, tiny_runs, tmp_path,
                                                                             monkeypatch):
    """FACTS.md: XNNPACK runs a torchao weight-only model's raw integers as float weights, silently.
    The same task exported correctly passes; exported weight-only, validation must fail."""
    import torchao.quantization as tq

    from calora.export.bundle import export_bundle
    from calora.export.job import load_job

    good = _run(tiny_bundle("executorch", "baked", ("toy_a",)), tiny_runs)
    assert good.passed, _fails(good)

    def weight_only(weight_dtype, weight_granularity, **_):
        return tq.IntxWeightOnlyConfig(weight_dtype=weight_dtype, granularity=weight_granularity)

    monkeypatch.setattr(tq, "Int8DynamicActivationIntxWeightConfig", weight_only)
    bad_dir = tmp_path / "weight-only"
    export_bundle(load_job(tiny_runs, ["toy_a"], "baked"), "executorch", bad_dir, ["--target", "executorch"])
    monkeypatch.undo()
    bad = _run(bad_dir, tiny_runs)
    assert not bad.passed
    fails = _fails(bad)
    assert any(f.startswith("values|toy_a|max |logit error|") for f in fails), fails
    assert all(f.split("|")[0] in ("structure", "values", "metric") for f in fails), fails


def test_user_data_and_record(tiny_bundle, tiny_runs, tmp_path, capsys):
    """--data evaluates on the user's own file (labels mapped by name); labels the task was not
    trained on are bad input (exit 2); --record writes the outcome into the bundle's manifest."""
    from calora.validate.cli import main

    bundle = _copy(tiny_bundle("onnx", "swappable"), tmp_path)
    src = json.loads((tiny_runs / "toy_a" / "calora" / "calora_config.json").read_text())["task"]["record"]["source"]
    rows = Path(src).read_text().splitlines()
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join(["text,label,split"] + [f"{r},test" for r in rows[1:41]]) + "\n")
    assert main([str(bundle), "--runs", str(tiny_runs), "--task", "toy_a", "--data", f"toy_a={mine}", "--record",
                 "--report", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (task,) = report["bundles"][0]["tasks"]
    assert task["examples"] == 40 and task["data"]["source"] == str(mine)
    recorded = json.loads((bundle / "manifest.json").read_text())["validation"]["full_parity"]
    assert recorded["status"] == "pass" and recorded["tasks"]["toy_a"]["examples"] == 40
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\ngood movie,maybe\nbad film,maybe\n")
    assert main([str(bundle), "--runs", str(tiny_runs), "--task", "toy_a", "--data", f"toy_a={bad}"]) == 2
    assert "'maybe'" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_decoder_backbone_bundle_passes(tiny_llama, sentiment_csv, tmp_path_factory, target):
    """A Llama-family (decoder, last-token pooling) task validates as well as the BERT ones."""
    from calora.export.bundle import export_bundle
    from calora.export.job import load_job
    from calora.train.cli import main as train

    runs = tmp_path_factory.getbasetemp() / "llama-runs"
    if not (runs / "toy_llama" / "calora" / "calora_config.json").is_file():
        assert train(["--backbone", tiny_llama, "--task", "toy_llama", "--data", sentiment_csv, "--out", str(runs),
                      "--epochs", "3", "--batch-size", "16", "--lr", "1e-2", "--max-length", "16", "--lora-rank", "4",
                      "--recovery-rank", "4", "--compression", "int4:g32+sparse:0.5", "--checkpoint-every", "0"]) == 0
    bundle = tmp_path_factory.mktemp(f"llama-{target}") / "bundle"
    export_bundle(load_job(runs, ["toy_llama"], "baked"), target, bundle, ["--target", target])
    report = _run(bundle, runs)
    assert report.passed, _fails(report)
    assert report.bundles[0].tasks[0].values["agreement"] >= 0.98


def test_coreml_multifunction_package_carries_the_backbone_fingerprint(tiny_bundle, tiny_runs):
    report = _run(tiny_bundle("coreml", "swappable"), tiny_runs)
    (check,) = [c for c in report.checks if c.name.endswith("exported for this backbone")]
    assert check.status == Status.PASS, check.detail
