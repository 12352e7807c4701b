"""The export stage's own logic (job loading, bundle, manifest, CLI errors, atomic writes), with a
test-double target so it runs in seconds; the real targets have their own test modules."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from calora import targets
from calora.export.cli import main
from calora.export.graph import Baked, Swappable, adapter_tensors, check_same_layout, deployable, example_inputs
from calora.export.job import load_job
from calora.targets.base import ArtifactFile, Mode, TargetResult, TensorSpec
from calora.train.errors import AdapterMismatchError


class FakeTarget:
    """Writes the adapter tensors with torch.save; fails on request. Not a runtime: a test double."""

    name = "fake"
    modes = frozenset({Mode.BAKED})
    fail = False

    def export(self, job, out_dir: Path) -> TargetResult:
        files = []
        for t in job.tasks:
            path = out_dir / "fake" / f"{t.name}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(adapter_tensors(t.model), path)
            files.append(ArtifactFile.of(out_dir, path, "model", t.name))
        if FakeTarget.fail:
            raise targets.ConfigError("fake target failed halfway")
        spec = [TensorSpec("input_ids", "int64", (1, job.max_length))]
        return TargetResult(files, spec, [TensorSpec("logits", "float32", (1, 2))], {"name": "fake", "version": "0"},
                            {"backbone_linear_max_abs": 0.0}, {t.name: {"skipped": "test double"} for t in job.tasks},
                            "load the other file")


@pytest.fixture
def fake_target(monkeypatch):
    monkeypatch.setitem(targets.TARGETS, "fake", "test_export_bundle:FakeTarget")
    FakeTarget.fail = False
    yield
    FakeTarget.fail = False


def test_swappable_graph_swaps_and_matches_baked(tiny_runs):
    job = load_job(tiny_runs, ["toy_a", "toy_b"], "swappable")
    a, b = job.tasks
    names = check_same_layout({t.name: t.model for t in job.tasks})
    ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts), job.max_length)
    shared = Swappable(deployable(a.model), names)
    with torch.no_grad():
        via_b = shared(ids, mask, *adapter_tensors(b.model).values())
        baked_b = Baked(deployable(b.model))(ids, mask)
        via_a = shared(ids, mask, *adapter_tensors(a.model).values())
    assert torch.allclose(via_b, baked_b, atol=1e-5)  # A's graph + B's adapter = B
    assert (via_a.argmax(-1) != via_b.argmax(-1)).float().mean() > 0.5  # and B really differs from A


def test_bundle_manifest_and_readme(tiny_runs, tmp_path, fake_target):
    out = tmp_path / "bundle"
    argv = ["--target", "fake", "--task", "toy_a,toy_b", "--runs", str(tiny_runs), "--out", str(out)]
    assert main(argv) == 0  # the CLI's --target choices are the registry's keys, read when it parses
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["schema_version"] == 1 and on_disk["mode"] == "baked" and on_disk["max_sequence_length"] == 16
    assert [t["name"] for t in on_disk["tasks"]] == ["toy_a", "toy_b"]
    assert on_disk["tasks"][0]["adapter_fingerprint"] != on_disk["tasks"][1]["adapter_fingerprint"]
    assert {t["backbone_fingerprint"] for t in on_disk["tasks"]} == {on_disk["backbone"]["fingerprint"]}
    assert "tokenizer.json" in on_disk["tokenizer"]["files"] and (out / "tokenizer/tokenizer.json").is_file()
    assert on_disk["tasks"][0]["files"][0]["sha256"] and "export_seconds" in on_disk["nondeterministic_fields"]
    readme = (out / "README.md").read_text()
    assert "`toy_b`" in readme and "calora has no fake snippet" in readme and on_disk["command"] in readme


def test_failed_export_leaves_no_half_bundle(tiny_runs, tmp_path, fake_target):
    from calora.export.bundle import export_bundle

    FakeTarget.fail = True
    with pytest.raises(targets.ConfigError, match="halfway"):
        export_bundle(load_job(tiny_runs, ["toy_a"], "baked"), "fake", tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_mode_the_target_cannot_do(tiny_runs, tmp_path, fake_target):
    from calora.export.bundle import export_bundle

    with pytest.raises(targets.ConfigError, match="--mode swappable: target fake supports baked"):
        export_bundle(load_job(tiny_runs, ["toy_a"], "swappable"), "fake", tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("argv, words", [
    (["--target", "tflite", "--task", "toy_a"], None),  # argparse: exit 2 with the choices
    (["--target", "onnx", "--task", "nope"], "--task 'nope': no trained task"),
    (["--target", "onnx", "--task", "toy_a,toy_a"], "named twice"),
])
def test_cli_bad_input(tiny_runs, tmp_path, capsys, argv, words):
    out = tmp_path / "bundle"
    if words is None:
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--runs", str(tiny_runs), "--out", str(out)])
        assert exc.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    else:
        assert main([*argv, "--runs", str(tiny_runs), "--out", str(out)]) == 2
        assert words in capsys.readouterr().err
    assert not out.exists()


def test_tasks_on_different_backbones_are_refused(tiny_runs, tiny_bert, sentiment_csv, tmp_path):
    from calora.train.cli import main as train

    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs / "toy_a", runs / "toy_a")
    assert train(["--backbone", tiny_bert, "--task", "toy_c", "--data", sentiment_csv, "--out", str(runs),
                  "--epochs", "6", "--lr", "1e-2", "--max-length", "16", "--lora-rank", "4", "--recovery-rank", "4",
                  "--compression", "int8"]) == 0
    with pytest.raises(AdapterMismatchError, match="another compressed backbone"):
        load_job(runs, ["toy_a", "toy_c"], "baked")


@pytest.mark.parametrize("spec", ["nf4", "bnb-int8", "int4:g32+sparse:0.5+emb:int8"])
def test_deployable_computes_what_the_trained_backbone_computes(tiny_bert, spec):
    """bnb layers are dequantized, calora's quantized layers become float layers with the same values."""
    pytest.importorskip("bitsandbytes")
    from calora.train.backbones import load_classifier
    from calora.train.compress import compress_model
    from calora.train.quant import QuantLinear
    from calora.train.spec import CompressionSpec

    spec = CompressionSpec.parse(spec)
    model = compress_model(load_classifier(tiny_bert, 2, seed=0), spec)
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.act_quant = False  # deployable drops the simulated activations: compare weights only
    flat = deployable(model)
    assert not any(type(m).__name__ in ("Linear4bit", "Linear8bitLt", "QuantLinear", "QuantEmbedding")
                   for m in flat.modules())
    ids = torch.tensor([[2, 5, 9, 12, 7, 3]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, flat(input_ids=ids).logits, atol=1e-6)


def test_adapter_dtype_float16_swaps_the_same_and_float32_is_exact(tiny_runs, tmp_path):
    """Swappable adapters are float16 by default: the swappable graph fed the rounded tensors gives
    (almost) the trained logits, the manifest records the dtype and the rounding's cost;
    `--adapter-dtype float32` keeps the trained values exactly; baked artifacts are float32."""
    from calora.export.bundle import adapter_rounding, build_manifest
    from calora.export.graph import adapter_rounding_error
    from calora.targets.base import AdapterDType

    job = load_job(tiny_runs, ["toy_a", "toy_b"], "swappable")
    assert job.adapter_dtype == AdapterDType.FLOAT16 == job.deployed_adapter_dtype
    b = job.tasks[1]
    names = check_same_layout({t.name: t.model for t in job.tasks})
    ids, mask = example_inputs(job.tokenizer, list(job.smoke_texts), job.max_length)
    half = adapter_tensors(b.model, "float16")
    assert all(t.dtype == torch.float16 for t in half.values())
    with torch.no_grad():
        got = Swappable(deployable(job.tasks[0].model), names)(ids, mask, *[half[n] for n in names])
        ref = Baked(deployable(b.model))(ids, mask)
    err = adapter_rounding_error(b.model, "float16", [(ids, mask)])
    assert 0 < err["adapter_max_abs"] < 1e-2 and (got - ref).abs().max() <= err["adapter_logit_max_abs"] + 1e-5
    assert (got.argmax(-1) == ref.argmax(-1)).all()
    assert set(adapter_rounding(job)) == {"adapter_max_abs", "adapter_logit_max_abs"}
    exact = load_job(tiny_runs, ["toy_a", "toy_b"], "swappable", adapter_dtype="float32")
    assert adapter_rounding(exact) == {} and adapter_rounding_error(b.model, "float32", [(ids, mask)]) == \
        {"adapter_max_abs": 0.0, "adapter_logit_max_abs": 0.0}
    baked = load_job(tiny_runs, ["toy_a"], "baked")
    assert baked.deployed_adapter_dtype == AdapterDType.FLOAT32 and adapter_rounding(baked) == {}
    result = TargetResult([], [], [], {"name": "x", "version": "0"}, {}, {}, "")
    assert build_manifest(job, "onnx", result, "c", 0.0)["adapter_dtype"] == "float16"
    assert build_manifest(exact, "onnx", result, "c", 0.0)["adapter_dtype"] == "float32"
    m16, m32 = (build_manifest(j, "onnx", result, "c", 0.0) for j in (job, exact))
    assert m16["tasks"][0]["adapter_fingerprint"] != m32["tasks"][0]["adapter_fingerprint"]


def test_cli_adapter_dtype_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--target", "onnx", "--task", "x", "--adapter-dtype", "int4"])
    assert exc.value.code == 2 and "--adapter-dtype" in capsys.readouterr().err
    # a dtype for adapter files with baked artifacts (which have none) is refused, not ignored
    assert main(["--target", "onnx", "--task", "x", "--mode", "baked", "--adapter-dtype", "int8"]) == 2
    err = capsys.readouterr().err
    assert "--adapter-dtype int8" in err and "--mode swappable" in err and "Traceback" not in err


def test_shared_mode_is_refused_where_it_is_not_written(tiny_runs, tmp_path, capsys):
    """--mode shared is ExecuTorch's layout (program-data separation): other targets get one clear
    error before any lowering, and no bundle."""
    assert main(["--target", "onnx", "--task", "toy_a", "--mode", "shared", "--runs", str(tiny_runs),
                 "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert "--mode shared" in err and "baked, swappable" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
