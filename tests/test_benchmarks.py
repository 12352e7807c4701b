"""The benchmark scripts' pure parts: figures drawn from committed results files."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_figures_are_drawn_from_the_committed_results(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is the bench extra (.ci/setup installs it)")
    from benchmarks.plots import main

    rc = main(["--out", str(tmp_path),
               "--ablation", str(ROOT / "train/results/ablation_minilm_rotten_tomatoes_int4g32_sparse0.5_embint8.json"),
               "--latency", str(ROOT / "docs/results/classify_latency_minilm_rt_cpu_2.json"),
               "--decode", str(ROOT / "docs/results/2026-12-05/gen/gen_decode_smollm2.json"),
               "--tradeoff", str(ROOT / "docs/results/2026-12-06/threads/gen_decode_recovery_cost_threads2.json"),
               "--levels", "4.7x=" + ",".join(str(ROOT / p) for p in (
                   "train/results/ablation_minilm_rotten_tomatoes_int4g32_sparse0.5_embint8_cpu.json",
                   "docs/results/train_rotten_tomatoes_4.7x_metrics.json")),
               "6.1x=" + ",".join(str(ROOT / "docs/results/2026-12-05" / p) for p in (
                   "ablation_minilm_rotten_tomatoes_int4g32_sparse0.5_embint4.json",
                   "train_rotten_tomatoes_6.1x_metrics.json",
                   "seeds/ablation_minilm_rotten_tomatoes_int4g32_sparse0.5_embint4.json")),
               "--task-switch", str(ROOT / "docs/results/2026-12-05/task_switch.json"),
               "--train-step", str(ROOT / "docs/results/2026-12-05/train_step_rotten_tomatoes.json")])
    assert rc == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) == 7 and all((tmp_path / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_latency_benchmark_reads_every_artifact_file_of_a_manifest():
    from benchmarks.classify_latency import _files

    manifest = {"backbone": {"files": [{"path": "onnx/backbone.ort", "role": "backbone", "task": None}]},
                "tasks": [{"files": [{"path": "onnx/adapters/a.onnx_adapter", "role": "adapter", "task": "a"}]},
                          {"files": []}]}
    assert [f["path"] for f in _files(manifest)] == ["onnx/backbone.ort", "onnx/adapters/a.onnx_adapter"]


def test_pytorch_eager_baseline_of_the_decode_benchmark_generates_greedily():
    """gen_decode's PyTorch row decodes through the model's own KV cache: the same tokens as
    generate(do_sample=False), one timed step per token after the first."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from benchmarks.gen_decode import _pytorch_eager

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, intermediate_size=32)).eval()
    prompt = [3, 9, 12, 5]
    got = _pytorch_eager(model)(prompt, 5, -1)
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False, pad_token_id=0)[0, 4:]
    assert got.tokens == ref.tolist() and len(got.decode_s) == 4 and got.prefill_tokens_per_s > 0


def test_decode_benchmark_counts_the_files_the_runtime_loads():
    """An onnxruntime-genai folder holds the graph as .onnx and .ort; the app ships the .ort."""
    from benchmarks.gen_decode import _runtime_bytes

    manifest = {"backbone": {"files": [{"path": "onnx/genai/model.onnx", "bytes": 100},
                                       {"path": "onnx/genai/model.ort", "bytes": 101},
                                       {"path": "onnx/genai/genai_config.json", "bytes": 1}]},
                "tasks": [{"name": "a", "files": [{"path": "onnx/adapters/a.onnx_adapter", "bytes": 5}]},
                          {"name": "b", "files": [{"path": "onnx/adapters/b.onnx_adapter", "bytes": 7}]}]}
    assert _runtime_bytes(Path("bundle"), manifest, "a") == 101 + 1 + 5
    assert _runtime_bytes(Path("bundle"), manifest, "b") == 101 + 1 + 7


def test_gpu_run_sizes_its_schedule_from_the_probe_to_fit_the_budget():
    """benchmarks.gpu_generative --budget-s: the main run and the baseline take the most training
    examples (a multiple of the batch) whose predicted time fits; the whole split when it all fits;
    one clear error when nothing does."""
    import argparse

    from benchmarks.gpu_generative import _choose

    a = argparse.Namespace(probe_examples=640, batch_size=32, margin_s=60.0, budget_s=420)
    probe = {"teacher": {"train_seconds": 3.0}, "train_seconds": 8.0}  # 17.2 ms/example both, 12.5 the pair
    n, why = _choose(a, 400.0, 47_781, probe, 45.0)  # 400 s left; the probe's 45 s wall: 34 s fixed
    assert n % 32 == 0 and 8_000 < n < 10_000 and f"{n} of 47781" in why
    # 2 x 34 s fixed + n x (17.2 + 12.5) ms + 60 s margin fits in the 400 s left
    assert 2 * 34 + n * (11 + 8) / 640 + 60 <= 400
    assert _choose(a, 400.0, 5_000, probe, 45.0)[0] is None  # the whole (small) split fits
    with pytest.raises(SystemExit, match="--budget-s 420"):
        _choose(a, 100.0, 47_781, probe, 45.0)


def test_tradeoff_figure_labels_calora_bundles_by_what_differs():
    """The speed-against-quality figure groups calora's bundles by runtime and labels each by the
    part of its name the group does not share; other rows keep their own names."""
    from benchmarks.plots import _group, _labels

    rows = [{"runtime": "executorch", "bundle": "executorch-baked-dense"},
            {"runtime": "executorch", "bundle": "executorch-baked-dense-recmlp"},
            {"runtime": "onnx", "bundle": "onnx-baked-dense"},
            {"runtime": "onnx", "bundle": "alternative"},
            {"runtime": "pytorch", "bundle": "eager fp32"}]
    assert [_group(r) for r in rows] == ["executorch", "executorch", "onnx", "alternative", "eager fp32"]
    assert _labels(rows) == ["base", "recmlp", "onnx-baked-dense", "alternative", "eager fp32"]


def test_tradeoff_line_joins_only_the_configurations_nothing_beats():
    """The figure's line per runtime runs through its best trade-offs: a configuration that another
    one beats on both decode speed and perplexity is drawn as a point but left off the line."""
    from benchmarks.plots import _frontier

    rows = [{"name": n, "decode_tokens_per_s": v, "perplexity": q} for n, v, q in
            [("slow-best", 100, 34.9), ("beaten", 120, 36.5), ("mid", 130, 35.5), ("fast", 160, 36.4)]]
    assert [r["name"] for r in _frontier(rows)] == ["slow-best", "mid", "fast"]
    assert _frontier(rows[:1]) == rows[:1]


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_benchmark_profiles_export_each_generative_bundle_with_flags_the_cli_takes(profile):
    """`benchmarks.run`'s generative steps, recorded instead of run: one export and one validation
    per configured bundle, the ONNX int8-activation bundle among them with --activations int8 (and
    no other with it), and every export command parses with calora-export's own parser."""
    from benchmarks import run
    from calora.export.cli import build_parser

    calls: list[tuple[str, list[str]]] = []

    class Recorder:
        def run(self, name, done, cmd, ok=(0, 1)):
            calls.append((name, cmd))
            return 0

    bundles, _ = run._generative(Recorder(), run.PROFILES[profile], Path("w"), Path("r"))
    exports = {name: cmd for name, cmd in calls if name.startswith("export-gen-")}
    assert len(exports) == len(run.PROFILES[profile].gen_bundles) == \
        len([n for n, _ in calls if n.startswith("validate-gen-")])
    assert Path("w/bundles-gen/onnx-baked-int8act") in bundles
    for name, cmd in exports.items():
        args = build_parser().parse_args(cmd[1:])
        assert (args.activations == "int8") == name.endswith("-int8act"), name


def test_cached_alternative_is_keyed_by_backbone_and_teacher(tmp_path):
    """The do-it-yourself models are cached per task in one work folder; the key must change with
    the backbone and with the teacher's weights, or a MiniLM alternative would be timed for SmolLM2."""
    from benchmarks.common import teacher_key

    task_dir = tmp_path / "rotten_tomatoes" / "calora"
    teacher = tmp_path / "rotten_tomatoes" / "teacher"
    task_dir.mkdir(parents=True)
    teacher.mkdir()
    (teacher / "adapter_config.json").write_text("{}")
    (teacher / "adapter_model.safetensors").write_bytes(b"weights-1")
    minilm, smol = {"backbone": {"source": "minilm-l6"}}, {"backbone": {"source": "smollm2-135m"}}
    first = teacher_key(task_dir, minilm)
    assert teacher_key(task_dir, minilm) == first and teacher_key(task_dir, smol) != first
    (teacher / "adapter_model.safetensors").write_bytes(b"weights-2")
    assert teacher_key(task_dir, minilm) != first


def test_onnx_c_api_binding_runs_what_the_python_api_runs(tiny_bundle, tiny_runs):
    """benchmarks/ort_capi.py calls ONNX Runtime's C API (as an app does) by slot number in OrtApi: a
    wrong slot would call another function. The same swappable bundle run through it and through the
    Python API gives the same logits with each task's adapter active (memory-mapped by
    CreateLoraAdapter) and the same without one; the task-switch worker times it."""
    import numpy as np
    import onnxruntime as ort

    from benchmarks.ort_capi import OrtC
    from benchmarks.task_switch import _ort_c_worker
    from calora.export.manifest import read_manifest
    from calora.targets.base import manifest_file

    bundle = tiny_bundle("onnx", "swappable")
    manifest = read_manifest(bundle)
    backbone = manifest_file(bundle, manifest, "backbone", None, ".ort")
    feed = {"input_ids": np.array([[2, 7, 9, 11, 3, 0, 0, 0]], np.int64),
            "attention_mask": np.array([[1, 1, 1, 1, 1, 0, 0, 0]], np.int64)}
    py = ort.InferenceSession(str(backbone), providers=["CPUExecutionProvider"])
    api = OrtC()
    sess, x = api.session(backbone), api.inputs(feed)
    seen = []
    for task in ("toy_a", "toy_b"):
        path = manifest_file(bundle, manifest, "adapter", task, ".onnx_adapter")
        adapter = ort.LoraAdapter()
        adapter.Load(str(path))
        ro = ort.RunOptions()
        ro.add_active_adapter(adapter)
        want = py.run(["logits"], feed, run_options=ro)[0]
        handle = api.adapter(path)
        c_ro = api.run_options(handle)
        got = api.run(sess, x, "logits", want.shape, c_ro)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        seen.append(got)
        api.release_run_options(c_ro)
        api.release_adapter(handle)
    assert not np.allclose(seen[0], seen[1])  # the two adapters really differ (toy_b's labels are flipped)
    bare = py.run(["logits"], feed)[0]
    np.testing.assert_allclose(api.run(sess, x, "logits", bare.shape), bare, rtol=1e-6, atol=1e-6)
    api.release_inputs(x)
    api.release_session(sess)
    timings = _ort_c_worker(bundle, manifest, ["toy_a", "toy_b"], feed, switches=2)
    assert all(len(timings[k]) == 2 and min(timings[k]) > 0 for k in ("switch_cold", "first_run", "steady_run"))


def test_benchmark_run_trains_and_exports_each_ort_int8_route_with_flags_the_clis_take(tmp_path):
    """`benchmarks.run`'s ONNX int8 routes, recorded instead of run: each route is trained (the FFN
    route with its 2 epochs), exported baked and swappable and validated, and every train and export
    command parses with the CLI's own parser."""
    from benchmarks import run
    from calora.export.cli import build_parser as export_parser
    from calora.train.cli import build_parser as train_parser

    calls: list[tuple[str, list[str]]] = []

    class Recorder:
        def run(self, name, done, cmd, ok=(0, 1)):
            calls.append((name, cmd))
            return 0

    bundles = run._ort_int8(Recorder(), tmp_path, tmp_path / "r", "rotten_tomatoes")
    assert len(bundles) == 2 * len(run.ORT_INT8) and len(calls) == 5 * len(run.ORT_INT8)
    trains = {name: train_parser().parse_args(cmd[1:]) for name, cmd in calls if name.startswith("train-")}
    for level, (spec, flags) in run.ORT_INT8.items():
        args = trains[f"train-rotten_tomatoes-{level}"]
        assert args.compression == spec and (args.epochs == 2) == ("--epochs" in flags)
    assert any("ffn:0.5" in spec for spec, _ in run.ORT_INT8.values())
    for name, cmd in calls:
        if name.startswith("export-"):
            assert export_parser().parse_args(cmd[1:]).target == "onnx"


def test_benchmark_main_job_exports_times_and_switches_the_executorch_shared_classifier(monkeypatch, tmp_path):
    """`benchmarks.run`'s quick profile, recorded instead of run: at each level the classification
    tasks are also exported to ExecuTorch `--mode shared` (a command calora-export's parser takes),
    validated, timed for latency, and timed for the task switch beside their baked/swappable pair."""
    from benchmarks import run
    from calora.export.cli import build_parser

    calls: dict[str, list[str]] = {}

    class Recorder:
        def __init__(self, work):
            pass

        def run(self, name, done, cmd, ok=(0, 1)):
            calls[name] = [str(c) for c in cmd]
            return 0

    monkeypatch.setattr(run, "Steps", Recorder)
    assert run.main(["--profile", "quick", "--work", str(tmp_path)]) == 0
    for level in run.LEVELS:
        cmd = calls[f"export-{level}-executorch-shared"]
        args = build_parser().parse_args(cmd[1:])
        assert args.target == "executorch" and args.mode == "shared" and args.task == "rotten_tomatoes,sms_spam"
        assert f"validate-{level}-executorch-shared" in calls
        assert args.out in calls["latency"]
    assert not any(n.startswith("export-") and n.endswith("onnx-shared") for n in calls)  # ExecuTorch only
    switch = calls["task-switch"]
    shared = str(tmp_path / "bundles-4.7x" / "executorch-shared")
    assert switch[switch.index("--shared") + 1] == shared and switch.count("--shared") == 1
