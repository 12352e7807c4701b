"""Generative export with a KV cache, on a tiny random Llama chat model with two trained tasks:
for each target and mode, prefill + decode equals the full forward and PyTorch; swapping task A's
adapter for task B's gives B's generations; the artifacts load in each runtime's own LLM tooling;
calora-validate passes them and fails a broken KV cache."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from calora.train.kind_generate import greedy

TARGETS = [("onnx", "baked"), ("onnx", "swappable"), ("executorch", "baked"), ("executorch", "swappable"),
           ("executorch", "shared"), ("coreml", "baked"), ("coreml", "swappable")]


@pytest.fixture(scope="session")
def gen_target_runs(request):
    """`gen_target_runs(target)` -> the runs folder that target's generative bundles are exported
    from: ExecuTorch's from the 1-layer model (lowering is the slow part, see `gen_runs_1layer`),
    the others' from the 2-layer one. Validation takes a bundle's own runs folder."""
    def get(target: str) -> Path:
        return request.getfixturevalue("gen_runs_1layer" if target == "executorch" else "gen_runs")

    return get


@pytest.fixture(scope="session")
def gen_bundle(gen_target_runs, tmp_path_factory):
    """`gen_bundle(target, mode)` -> (bundle dir, job): exported once per session. ExecuTorch's
    baked bundle holds gen_a only (lowering is the slow part); the others hold both tasks."""
    from calora.export.bundle import export_bundle
    from calora.export.job import load_job

    cache: dict = {}

    def get(target: str, mode: str, adapter_dtype: str | None = None):
        key = (target, mode, adapter_dtype)
        if key not in cache:
            tasks = ["gen_a"] if (target, mode) == ("executorch", "baked") else ["gen_a", "gen_b"]
            job = load_job(gen_target_runs(target), tasks, mode, adapter_dtype=adapter_dtype)
            out = tmp_path_factory.mktemp(f"gen-{target}-{mode}") / "bundle"
            export_bundle(job, target, out, ["--target", target, "--mode", mode]
                          + (["--adapter-dtype", adapter_dtype] if adapter_dtype else []))
            cache[key] = (out, job)
        return cache[key]

    return get


def _runner(bundle):
    from calora.export.manifest import read_manifest
    from calora.targets import get_target

    manifest = read_manifest(bundle)
    return get_target(manifest["target"]).open(bundle, manifest), manifest


@pytest.mark.parametrize("target,mode", TARGETS)
def test_prefill_and_decode_equal_the_full_forward(gen_bundle, target, mode):
    bundle, job = gen_bundle(target, mode)
    runner, manifest = _runner(bundle)
    assert manifest["kind"] == "generate" and manifest["generation"]["max_context"] == job.max_length
    assert manifest["generation"]["special_tokens"]["eos"] == job.tokenizer.eos_token_id
    assert manifest["generation"]["prompt_format"]["chat_template"] == job.tokenizer.chat_template
    task = job.tasks[0]
    prompt = list(job.smoke_prompts[0])
    ids = prompt + [5, 9, 17, 33, 60]  # decode steps past the prompt, token by token
    full = runner.forward_logits(task.name, ids)
    cached = runner.cached_logits(task.name, ids, len(prompt))
    assert full.shape == (len(ids), job.tokenizer.vocab_size + len(job.tokenizer.get_added_vocab())) or \
        full.shape[0] == len(ids)
    np.testing.assert_allclose(cached, full[len(prompt) - 1:], atol=1e-4)
    with torch.no_grad():
        ref = task.model(input_ids=torch.tensor([ids])).logits[0].numpy()
    # The artifact runs float (ONNX) or real int8 (XNNPACK) activations where training simulated
    # int8 ones: a few hundredths of the logit range, and the same next tokens. A near-tie (top-2
    # margin under 2% of the range; this random model has some at 0.001) may flip under that noise;
    # every other position must keep PyTorch's argmax, and near-ties must stay a minority.
    span = np.abs(ref).max()
    assert np.abs(full - ref).max() < 0.05 * span
    top2 = np.sort(ref, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.02 * span
    assert clear.mean() >= 0.75, clear
    assert np.array_equal(full.argmax(-1)[clear], ref.argmax(-1)[clear])
    # A second conversation reuses the runtime's cache from position 0 and gets the same answer.
    assert np.array_equal(runner.cached_logits(task.name, ids, len(prompt)), cached)


# int8 adapter files on onnxruntime-genai's own og.Adapters; ExecuTorch's program is the same for
# every adapter dtype (the app widens the file, tested on the classification bundles) and Core ML's
# int8 task functions are the classification ones' code: neither is lowered a second time here.
@pytest.mark.parametrize("target,adapter_dtype", [("onnx", None), ("executorch", None), ("coreml", None),
                                                  ("onnx", "int8")])
def test_swapping_adapters_gives_each_tasks_generations(gen_bundle, target, adapter_dtype):
    """Each task's generations from the one loaded backbone (int8 adapter files: codes times a
    scale per rank component, loaded by onnxruntime-genai's og.Adapters)."""
    bundle, job = gen_bundle(target, "swappable", adapter_dtype)
    runner, manifest = _runner(bundle)
    eos = manifest["generation"]["special_tokens"]["eos"]
    prompts = [list(p) for p in job.smoke_prompts]
    got = {}
    for task in job.tasks:  # A, B, then A again on the same loaded backbone
        ref = greedy(task.model, prompts, 4, eos, eos, show=False)
        got[task.name] = [runner.generate(task.name, p, 4, eos).tokens for p in prompts]
        assert got[task.name] == ref, task.name
    assert got["gen_a"] != got["gen_b"]  # the two tasks answer differently: the adapter is what changed
    assert [runner.generate("gen_a", p, 4, eos).tokens for p in prompts] == got["gen_a"]
    streamed: list[int] = []
    out = runner.generate("gen_b", prompts[0], 4, eos, on_token=streamed.append)
    assert streamed == out.tokens and out.prefill_tokens_per_s > 0


def test_executorch_shared_bundle_runs_each_task_on_one_backbone_data_file(gen_bundle, gen_target_runs, tmp_path,
                                                                           capsys):
    """Shared mode: one backbone.ptd, one small program per task holding its adapter; each program
    generates its task's tokens with that data file, in calora's session and in ExecuTorch's own
    TextLLMRunner, and cannot load without it (the backbone's weights are really outside)."""
    from calora.export.cli import main as export_main
    from calora.targets.executorch import _load

    bundle, job = gen_bundle("executorch", "shared")
    runner, manifest = _runner(bundle)
    backbone = [f["path"] for f in manifest["backbone"]["files"]]
    assert backbone == ["executorch/backbone.ptd"] and [i["name"] for i in manifest["inputs"]] == ["tokens", "input_pos"]
    ptd = (bundle / backbone[0]).stat().st_size
    eos = manifest["generation"]["special_tokens"]["eos"]
    prompts = [list(p) for p in job.smoke_prompts]
    got = {}
    for task in job.tasks:
        pte = bundle / "executorch" / f"{task.name}.pte"
        assert [f["path"] for f in next(t for t in manifest["tasks"] if t["name"] == task.name)["files"]] == \
            [f"executorch/{task.name}.pte"]
        got[task.name] = [runner.generate(task.name, p, 4, eos).tokens for p in prompts]
        assert got[task.name] == greedy(task.model, prompts, 4, eos, eos, show=False), task.name
        with pytest.raises(Exception):  # without backbone.ptd the program has no backbone weights
            _load(pte)
        assert pte.stat().st_size > 0 and ptd > 0
    assert got["gen_a"] != got["gen_b"]
    found = {(f.name, f.task): f for f in runner.findings()}
    for task in ("gen_a", "gen_b"):
        f = found[(f"{task}.pte: backbone weights only in backbone.ptd", task)]
        assert f.ok, f.detail
    text, ran = runner.stock_generate("gen_b", job.tokenizer.decode(prompts[0]), 4)
    assert text is not None and "data_path backbone.ptd" in ran, ran
    assert manifest["adapter_dtype"] == "float32"  # shared programs keep the trained values unless told int8
    # XNNPACK runs float32 or int8 linears: a float16 adapter is refused, not silently widened back.
    assert export_main(["--target", "executorch", "--mode", "shared", "--task", "gen_a",
                        "--runs", str(gen_target_runs("executorch")), "--out", str(tmp_path / "x"),
                        "--adapter-dtype", "float16"]) == 2
    err = capsys.readouterr().err
    assert "--adapter-dtype float16" in err and "float32 or int8" in err and not (tmp_path / "x").exists()


def test_executorch_shared_int8_adapter_runs_as_int8_linears(tiny_chat_1layer, gen_csv, tmp_path):
    """`--mode shared --adapter-dtype int8`: the task program holds the adapter's int8 codes (the
    swappable int8 files' grid), at most half its float32 bytes, still none of backbone.ptd's
    weights, and generates the task's tokens. A task with LoRA on q_proj and recovery on two
    layers keeps this lowering short (each int8 linear adds about a second)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    from calora.export.cli import main as export_main
    from calora.train.cli import main as train_main

    from conftest import GEN_TRAIN

    runs, out = tmp_path / "runs", tmp_path / "bundle"
    args = GEN_TRAIN[:GEN_TRAIN.index("--lora-targets")] + ["--lora-targets", "q_proj"] + \
        GEN_TRAIN[GEN_TRAIN.index("--lr"):]
    assert train_main(["--backbone", tiny_chat_1layer, "--task", "gen_c", "--data", gen_csv, "--prompt-column",
                       "review", "--response-column", "answer", "--out", str(runs), "--compression",
                       "int4:g32+emb:int8", "--recovery-targets", "o_proj", "down_proj", *args]) == 0
    assert export_main(["--target", "executorch", "--mode", "shared", "--adapter-dtype", "int8", "--task", "gen_c",
                        "--runs", str(runs), "--out", str(out)]) == 0
    runner, manifest = _runner(out)
    assert manifest["adapter_dtype"] == "int8" and manifest["weight_error"]["adapter_max_abs"] > 0
    task = manifest["tasks"][0]
    assert task["smoke"]["identical_generations"] == 1.0, task["smoke"]
    pte = deserialize_pte_binary((out / "executorch" / "gen_c.pte").read_bytes())
    own = sum(len(pte.named_data.buffers[e.buffer_index]) for e in dict(pte.named_data.pte_data).values())
    assert 0 < own <= 2 * task["adapter_parameters"], (own, task["adapter_parameters"])
    found = {f.name: f for f in runner.findings()}
    assert found["gen_c.pte: backbone weights only in backbone.ptd"].ok
    assert "int8 linears" in " ".join(manifest["notes"])
    # ExecuTorch's own LLM runner loads the int8 program with backbone.ptd and generates calora's greedy text
    from calora.export.job import load_job

    job = load_job(runs, ["gen_c"], "shared", adapter_dtype="int8")
    prompt = list(job.smoke_prompts[0])
    text, ran = runner.stock_generate("gen_c", job.tokenizer.decode(prompt), 4)
    eos = manifest["generation"]["special_tokens"]["eos"]
    want = job.tokenizer.decode(greedy(job.tasks[0].model, [prompt], 4, eos, eos, show=False)[0],
                                skip_special_tokens=True)
    assert "data_path backbone.ptd" in ran and text is not None  # the runner stops after printing EOS, as validation reads it
    assert text.split(job.tokenizer.decode([eos]))[0].strip() == want.strip() != "", (text, want)


def test_load_benchmark_opens_each_executorch_layout(gen_bundle, tmp_path):
    """benchmarks.gen_load opens the baked, swappable and shared programs as an app does and runs
    them; the shared task program is the smallest task-specific file that still runs on its own data."""
    from benchmarks.gen_load import main

    bundles = [gen_bundle("executorch", m)[0] for m in ("baked", "swappable", "shared")]
    out = tmp_path / "load.json"
    assert main(["--bundles", *map(str, bundles), "--task", "gen_a", "--rounds", "1", "--prompt-tokens", "4",
                 "--out", str(out)]) == 0
    rows = {r["mode"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"baked", "swappable", "shared"}
    assert all(r["open_ms"] > 0 and r["first_call_ms"] > 0 for r in rows.values())
    # baked ships everything in its one program; shared splits it into backbone.ptd + the task program
    assert rows["shared"]["bytes_task_only"] < rows["baked"]["bytes_task_only"] == rows["baked"]["bytes_for_task"]


def test_onnx_bundle_is_an_onnxruntime_genai_model_folder(gen_bundle):
    """The folder loads with onnxruntime-genai alone (og.Model, og.Tokenizer, og.Adapters), as an app would."""
    og = pytest.importorskip("onnxruntime_genai")
    bundle, job = gen_bundle("onnx", "swappable")
    folder = bundle / "onnx" / "genai"
    cfg = json.loads((folder / "genai_config.json").read_text())
    assert cfg["model"]["decoder"]["filename"] == "model.ort" and (folder / "model.onnx").is_file()
    # One cache buffer per layer that GroupQueryAttention writes in place, as the builder sets it (the
    # generation below runs on it and must give the PyTorch model's tokens).
    assert cfg["search"]["past_present_share_buffer"] is True
    # The tied int8 head runs int8 activations per block (accuracy_level 4): recorded for validation.
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"]["lm_head_activations"] == "int8-block64"
    # The export's smoke compares with that float-activation reference, as validation does, and says so.
    for t in manifest["tasks"]:
        assert t["smoke"]["reference"] == "trained weights, float activations, int8-block64 LM head input"
        assert t["smoke"]["identical_generations"] == 1.0, t["smoke"]
    # The graph is written with ONNX Runtime's fused ops, as onnxruntime-genai's builder writes it.
    graph = onnx.load(str(folder / "model.onnx")).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    layers = cfg["model"]["decoder"]["num_hidden_layers"]
    assert ops["GroupQueryAttention"] == layers and ops["SkipSimplifiedLayerNormalization"] == 2 * layers
    assert not ops["Softmax"] and not ops["ReduceMean"], ops
    # The body's MatMulNBits keep float activations (a prefill and token-by-token decoding agree:
    # onnx_graph_gen.quantize); only the tied 8-bit head runs int8 ones. q/k/v and gate/up are
    # packed (onnx_pack): 4 products per layer for its 7 linears.
    levels = collections.Counter(next((a.i for a in n.attribute if a.name == "accuracy_level"), 0)
                                 for n in graph.node if n.op_type == "MatMulNBits")
    assert levels == {0: 4 * layers, 4: 1}, levels
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    prompt = list(job.smoke_prompts[0])
    assert list(tokenizer.encode(job.tokenizer.decode(prompt))) == prompt  # og's tokenizer reads ours
    adapters = og.Adapters(model)
    adapters.load(str(bundle / "onnx" / "adapters" / "gen_b.onnx_adapter"), "gen_b")
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + 4)
    gen = og.Generator(model, params)
    gen.set_active_adapter(adapters, "gen_b")
    gen.append_tokens(prompt)
    tokens = []
    while not gen.is_done():
        gen.generate_next_token()
        tokens.append(int(gen.get_next_tokens()[0]))
    eos = job.tokenizer.eos_token_id
    ref = greedy(job.tasks[1].model, [prompt], 4, eos, eos, show=False)[0]
    assert tokens[:len(ref)] == ref


def test_validate_passes_generative_bundles_and_reports_generation(gen_bundle, gen_target_runs, tmp_path, capsys):
    from calora.validate.cli import main

    reports = []
    for group in (["onnx", "coreml"], ["executorch"]):  # one calora-validate per runs folder
        bundles = [gen_bundle(t, m)[0] for t, m in TARGETS if t in group]
        out = tmp_path / group[0]
        rc = main([*map(str, bundles), "--runs", str(gen_target_runs(group[0])), "--report", str(out),
                   "--max-examples", "6"])
        err = capsys.readouterr().err
        assert rc == 0, err[-3000:]
        reports.append(json.loads((out / "report.json").read_text()))
        md = (out / "report.md").read_text()
        assert "## Generation" in md and "decode tok/s" in md
    report = {k: [x for r in reports for x in r[k]] for k in ("checks", "bundles")}
    assert len(report["bundles"]) == len(TARGETS)
    names = {c["name"] for c in report["checks"]}
    for wanted in ("teacher-forced next-token agreement", "KV-cache decoding equals full recomputation",
                   "the task adapter has its effect", "no adapter leaves the backbone unchanged",
                   "greedy generations token by token", "exact_match vs PyTorch", "perplexity vs PyTorch",
                   "runs in the runtime's own LLM runner", "LLM runner metadata methods",
                   "genai_config.json names the graph's inputs"):
        assert wanted in names, wanted
    stock = [c for c in reports[1]["checks"] if c["name"] == "runs in the runtime's own LLM runner"]
    assert any(c["status"] == "pass" for c in stock)  # the baked .pte in ExecuTorch's TextLLMRunner
    for b in report["bundles"]:
        for t in b["tasks"]:
            assert t["speed"]["decode_tokens_per_s"] > 0 and t["generation"]["token_agreement"] >= 0.9


def test_a_broken_kv_cache_fails_validation(gen_runs, gen_bundle, tmp_path, monkeypatch, capsys):
    """The growing cache hands back its past one position short (an off-by-one in the cache): the
    full prefill is still right, so only cached decoding is wrong, and calora-validate must say so."""
    from calora.export.bundle import export_bundle
    from calora.export.job import load_job
    from calora.targets.onnx_fused import FusedGrowingCache
    from calora.validate.cli import main

    class OffByOne(FusedGrowingCache):
        def forward(self, input_ids, attention_mask, position_ids, *past):
            out = super().forward(input_ids, attention_mask, position_ids, *past)
            return (out[0], *[torch.cat([p[:, :, :1], p[:, :, :-1]], dim=2) for p in out[1:]])

    monkeypatch.setattr("calora.targets.onnx_graph_gen.FusedGrowingCache", OffByOne)
    broken = tmp_path / "broken"
    export_bundle(load_job(gen_runs, ["gen_a"], "baked"), "onnx", broken, ["--target", "onnx"])
    monkeypatch.undo()
    rc = main([str(broken), "--runs", str(gen_runs), "--report", str(tmp_path / "r"), "--max-examples", "4"])
    err = capsys.readouterr().err
    assert rc == 1, err[-2000:]
    failed = {c["name"] for c in json.loads((tmp_path / "r" / "report.json").read_text())["checks"]
              if c["status"] == "fail"}
    assert "KV-cache decoding equals full recomputation" in failed
    good, _ = gen_bundle("onnx", "baked")
    assert main([str(good), "--task", "gen_a", "--runs", str(gen_runs), "--max-examples", "4"]) == 0
    # A value gate no artifact meets: it still fails, now beside the reference's own float64 noise on
    # the first 2 sequences (teacher-forced rows), and no other check moves.
    assert main([str(good), "--task", "gen_a", "--runs", str(gen_runs), "--max-examples", "4", "--threshold",
                 "gen_min_sqnr_db=200", "--noise-floor-examples", "2", "--report", str(tmp_path / "nf")]) == 1
    report = json.loads((tmp_path / "nf" / "report.json").read_text())
    nf = report["bundles"][0]["tasks"][0]["noise_floor"]
    assert nf["examples"] == 2 and nf["artifact"]["examples"] == nf["reference_float64"]["examples"] > 2
    assert 0 < nf["reference_float64"]["max_abs_logit_error"] < 1e-3 and nf["ratios"]["sqnr_db"] > 0
    (failed,) = [c for c in report["checks"] if c["status"] == "fail"]
    assert failed["name"] == "SQNR (teacher-forced)" and "reference noise floor on the first 2" in failed["detail"]


def test_an_adapter_left_active_without_a_task_fails_validation(gen_target_runs, gen_bundle, tmp_path, monkeypatch,
                                                                capsys):
    """The bare-backbone check (median over examples of each one's worst logit error) still catches
    a swappable runtime whose "no adapter" run keeps a task's adapter active."""
    from calora.targets.onnx_genai_runtime import OnnxGenaiRunner
    from calora.validate.cli import main

    bundle, _ = gen_bundle("onnx", "swappable")
    monkeypatch.setattr(OnnxGenaiRunner, "bare_logits", lambda self, ids: self.forward_logits("gen_b", ids))
    rc = main([str(bundle), "--task", "gen_a", "--runs", str(gen_target_runs("onnx")), "--report", str(tmp_path / "r"),
               "--max-examples", "4"])
    assert rc == 1, capsys.readouterr().err[-2000:]
    checks = json.loads((tmp_path / "r" / "report.json").read_text())["checks"]
    bare = next(c for c in checks if c["name"] == "no adapter leaves the backbone unchanged")
    assert bare["status"] == "fail" and "median over 4 examples" in bare["detail"], bare
    assert bare["measured"] > bare["threshold"]


def test_coreml_program_keeps_the_cache_as_state_and_shares_the_backbone(gen_bundle):
    """The Core ML package is a stateful program (k_cache/v_cache states of the recorded shape) and,
    swappable, one function per task over backbone weights stored once."""
    runner, manifest = _runner(gen_bundle("coreml", "swappable")[0])
    found = {f.name: f for f in runner.findings()}
    shared = found["tasks.mlpackage: backbone stored once, shared by all functions"]
    assert shared.ok, shared.detail
    states = [f for n, f in found.items() if n.endswith("KV-cache states")]
    assert len(states) == 2 and all(f.ok for f in states), [f.detail for f in states]
    assert "not Apple's runtime" in runner.runtime or "macOS" in runner.runtime


def test_export_cli_on_a_generative_task(gen_runs, gen_bundle, tmp_path, capsys):
    """calora-export reads the task kind from the task directory; --max-length sets the context."""
    from calora.export.cli import main

    out = tmp_path / "b"
    assert main(["--target", "onnx", "--task", "gen_a", "--runs", str(gen_runs), "--out", str(out),
                 "--max-length", "48"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generation"]["max_context"] == 48 and manifest["kind"] == "generate"
    cfg = json.loads((out / "onnx" / "gen_a" / "genai_config.json").read_text())
    assert cfg["model"]["context_length"] == 48
    readme = (out / "README.md").read_text()
    assert "Generator(model" in readme and "setActiveAdapter" not in readme  # baked: no adapters to set
    assert "intra_op_num_threads" in readme  # og's default ran one thread: the app sets its count
    assert main(["--target", "onnx", "--task", "gen_a", "--runs", str(gen_runs), "--out", str(tmp_path / "c"),
                 "--max-length", "4"]) == 2
    assert "--max-length 4" in capsys.readouterr().err
    shutil.rmtree(out)


def test_onnx_int8_activations_run_accuracy_level_4_and_validate_with_the_int8_gates(gen_runs, tmp_path, capsys):
    """--activations int8: every int4 MatMulNBits of the decoder body runs accuracy_level 4 (int8
    activations, as onnxruntime-genai's builder emits), the manifest says so, and calora-validate
    checks it against the trained model with the int8-activation gates, naming where they came from.
    The flag is refused, by name and before any model is loaded, where the target cannot choose."""
    import onnx

    from calora.export.cli import main as export_main
    from calora.validate.cli import main as validate_main

    out = tmp_path / "b"
    assert export_main(["--target", "onnx", "--task", "gen_a", "--runs", str(gen_runs), "--out", str(out),
                        "--activations", "int8"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"]["activations"] == "int8-dynamic" and manifest["runtime"]["backbone_activations"] == \
        "int8-block32"
    proto = onnx.load(str(out / "onnx" / "gen_a" / "model.onnx"), load_external_data=False)
    attrs = [{a.name: a.i for a in n.attribute} for n in proto.graph.node if n.op_type == "MatMulNBits"]
    body = [a for a in attrs if a["bits"] == 4]
    assert body and all(a.get("accuracy_level") == 4 for a in body), attrs
    rc = validate_main([str(out), "--runs", str(gen_runs), "--report", str(tmp_path / "r"), "--max-examples", "6"])
    assert rc == 0, capsys.readouterr().err[-3000:]
    bundle = json.loads((tmp_path / "r" / "report.json").read_text())["bundles"][0]
    assert bundle["threshold_sources"]["cache_steps"] == "default (onnx, int8 activations)"
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| 12 (int8) |" in md and "INT8_ACTIVATIONS" in md  # the human-readable report says why
    capsys.readouterr()
    assert export_main(["--target", "executorch", "--task", "gen_a", "--runs", str(gen_runs),
                        "--out", str(tmp_path / "c"), "--activations", "float32"]) == 2
    err = capsys.readouterr().err
    assert "--activations float32" in err and "--target executorch" in err and not (tmp_path / "c").exists()
    assert export_main(["--target", "onnx", "--task", "gen_a", "--runs", str(gen_runs),
                        "--out", str(tmp_path / "d"), "--attention", "ops"]) == 2
    err = capsys.readouterr().err
    assert "--attention ops" in err and "GroupQueryAttention" in err and not (tmp_path / "d").exists()
    assert export_main(["--target", "executorch", "--task", "gen_a", "--runs", str(gen_runs),
                        "--out", str(tmp_path / "e"), "--attention", "ops"]) == 2
    err = capsys.readouterr().err
    assert "--attention ops" in err and "custom_sdpa" in err and not (tmp_path / "e").exists()


def test_static_cache_reads_no_position_past_the_tokens_it_was_given():
    """ExecuTorch's attention kernel (llama::custom_sdpa) reads the cache up to input_pos + S only,
    as the runner relies on when a new conversation starts at 0 over an old one: NaN in every
    other slot of every buffer leaves the logits finite and equal to a clean cache's. An attention
    that read all max_context positions under a mask would turn them into NaN (0 * NaN)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from calora.export.decoder import StaticCache, decoder_shape

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=96, num_hidden_layers=2, num_attention_heads=6,
                                         num_key_value_heads=2, intermediate_size=32)).eval()
    shape = decoder_shape(model, 16)
    clean, dirty = StaticCache(model, shape).eval(), StaticCache(model, shape).eval()
    for name, buf in dirty.named_buffers():
        if "_cache_" in name:  # k_cache_0 ... v_cache_1 (not the rotary frequencies)
            buf.fill_(float("nan"))
    with torch.no_grad():
        for cache in (clean, dirty):
            cache.logits = [cache(torch.tensor([[3, 7, 11, 2]]), torch.tensor([0]))[0],
                            cache(torch.tensor([[5]]), torch.tensor([4]))[0]]
        full = model(input_ids=torch.tensor([[3, 7, 11, 2, 5]])).logits[0]
    got = torch.cat(dirty.logits)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch.cat(clean.logits), atol=0, rtol=0)
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    assert torch.isnan(dirty.k_cache_1[:, 5:]).all()  # the rest stays as it was: nothing written past the tokens


def test_static_cache_without_executorchs_llm_kernels_is_one_clear_error(monkeypatch):
    """Where ExecuTorch's LLM kernels cannot load, building the ExecuTorch decoder fails with one
    ConfigError naming the package, not an AttributeError on torch.ops.llama deep in an export."""
    import sys

    from calora.export.decoder import load_llm_kernels
    from calora.train.errors import ConfigError

    monkeypatch.setitem(sys.modules, "executorch.extension.llm.custom_ops.custom_ops", None)  # import fails
    with pytest.raises(ConfigError, match="executorch.extension.llm.custom_ops"):
        load_llm_kernels()


def test_static_cache_decodes_like_the_full_forward_on_every_layer(gen_runs):
    """ExecuTorch's cache module (one k/v buffer per layer, written in place at input_pos) on the
    2-layer task model in PyTorch: a prefill then token-by-token decode gives the full forward's
    logits, every layer's buffers hold their own keys, and a new conversation from position 0
    overwrites the old one. The ExecuTorch lowering itself is tested on the 1-layer model."""
    from calora.export.decoder import StaticCache, decoder_shape
    from calora.export.job import load_job

    job = load_job(gen_runs, ["gen_a"], "baked")
    model = job.tasks[0].model.eval()
    shape = decoder_shape(model, job.max_length)
    assert shape.layers == 2
    cache = StaticCache(model, shape).eval()
    prompt = list(job.smoke_prompts[0])
    ids = prompt + [5, 9, 17, 33, 60]
    with torch.no_grad():
        full = model(input_ids=torch.tensor([ids])).logits[0]

        def conversation() -> torch.Tensor:
            steps = [cache(torch.tensor([prompt]), torch.tensor([0]))[0, -1:]]
            steps += [cache(torch.tensor([[t]]), torch.tensor([len(prompt) + i]))[0]
                      for i, t in enumerate(ids[len(prompt):])]
            return torch.cat(steps)

        first = conversation()
        torch.testing.assert_close(first, full[len(prompt) - 1:], atol=1e-4, rtol=1e-4)
        n = len(ids)
        keys = [getattr(cache, f"k_cache_{i}")[:, :n] for i in range(shape.layers)]  # [1, positions, kv, D]
        assert all(k.abs().sum() > 0 for k in keys) and not torch.equal(keys[0], keys[1])
        assert getattr(cache, "v_cache_1")[:, n:].abs().sum() == 0  # nothing written past the tokens
        torch.testing.assert_close(conversation(), first, atol=0, rtol=0)


def test_genai_session_sets_the_thread_count_the_benchmarks_compare_at(gen_bundle, monkeypatch):
    """`GenaiSession.intra_op_threads` overrides the decoder's intra_op_num_threads through og's own
    config overlay (a key og does not know is an error at og.Model), and the numbers do not change."""
    pytest.importorskip("onnxruntime_genai")
    from calora.targets.onnx_genai_runtime import GenaiSession

    bundle, job = gen_bundle("onnx", "baked")
    folder = bundle / "onnx" / "gen_a"
    prompt = list(job.smoke_prompts[0])
    default = GenaiSession(folder)
    monkeypatch.setattr(GenaiSession, "intra_op_threads", 2)
    two = GenaiSession(folder)
    assert two.generate(prompt, 4, eos=-1).tokens == default.generate(prompt, 4, eos=-1).tokens
    np.testing.assert_allclose(two.forward_logits(prompt), default.forward_logits(prompt), atol=1e-4)


def test_packing_matmulnbits_that_share_an_input_is_exact():
    """Three int4 MatMulNBits over one input (q/k/v) and one over another become one packed product
    and a Split; ONNX Runtime gives bit-identical outputs, and the lone product is left as it was."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from calora.targets.onnx_pack import pack_shared_input_matmulnbits

    rng = np.random.default_rng(0)
    k, block = 64, 32
    nodes, inits, outs = [], [], []
    for i, (x, n) in enumerate([("x", 48), ("x", 16), ("x", 16), ("h", 24)]):
        inits += [numpy_helper.from_array(rng.integers(0, 256, (n, k // block, block // 2), dtype=np.uint8), f"b{i}"),
                  numpy_helper.from_array(rng.random(n * (k // block), dtype=np.float32), f"s{i}")]
        nodes.append(helper.make_node("MatMulNBits", [x, f"b{i}", f"s{i}"], [f"y{i}"], name=f"mm{i}",
                                      domain="com.microsoft", K=k, N=n, bits=4, block_size=block))
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 3, k])
                                           for v in ("x", "h")], outs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    feeds = {"x": rng.standard_normal((1, 3, k), dtype=np.float32), "h": rng.standard_normal((1, 3, k), dtype=np.float32)}
    before = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert pack_shared_input_matmulnbits(proto) == 2
    assert [n.op_type for n in proto.graph.node] == ["MatMulNBits", "Split", "MatMulNBits"]
    after = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_decode_benchmark_runs_each_configuration_in_its_own_process(gen_bundle, gen_runs, tmp_path):
    """benchmarks.gen_decode times every configuration in a worker process of its own (thread pools
    of different runtimes never share one process) and reports each with its perplexity."""
    from benchmarks.gen_decode import main

    bundle, _ = gen_bundle("onnx", "swappable")
    out = tmp_path / "decode.json"
    assert main(["--bundles", str(bundle), "--runs", str(gen_runs), "--task", "gen_a", "--prompts", "2",
                 "--new-tokens", "3", "--rounds", "2", "--quality-examples", "2", "--no-pytorch", "--threads", "1",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["processes"] == "one per configuration" and result["threads"] == 1
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"swappable with adapter", "swappable, no adapter"}
    assert all(r["generations"] == 4 and r["decode_tokens_per_s"] > 0 for r in rows.values())
    assert all(len(r["decode_tokens_per_s_by_round"]) == 2 and min(r["decode_tokens_per_s_by_round"]) > 0
               for r in rows.values())  # one median per round, for round-by-round ratios
    assert np.isfinite(rows["swappable with adapter"]["perplexity"]) and "perplexity" not in rows["swappable, no adapter"]


def test_fused_onnx_decoder_computes_what_the_op_by_op_decoder_computes(gen_runs):
    """The graph written with GroupQueryAttention and SkipSimplifiedLayerNormalization (what the
    bundles ship) gives, in ONNX Runtime, the logits and caches of the op-by-op GrowingCache run in
    PyTorch: a prefill, a continued prefill of 3 tokens over that cache, and a 1-token decode, on the
    trained task with its LoRA and recovery branches (float weights: no quantizer in between)."""
    import onnxruntime as ort

    from calora.export.decoder import GrowingCache, decoder_shape, empty_past
    from calora.export.graph import deployable
    from calora.targets.onnx_graph_gen import export_graph, io_names
    from calora.train.artifacts import load_student

    model = deployable(load_student(gen_runs / "gen_a" / "calora")[0])
    shape = decoder_shape(model, 64)
    proto = export_graph(model, shape)
    assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization"} <= {n.op_type for n in proto.graph.node}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = GrowingCache(model, shape).eval()
    names = io_names(shape)[0]
    past, total = empty_past(shape), 0
    for ids in ([3, 17, 5, 9, 40, 11, 8], [21, 6, 30], [12]):
        new = torch.tensor([ids])
        total += len(ids)
        args = (new, torch.ones(1, total, dtype=torch.long), torch.arange(total - len(ids), total).unsqueeze(0), *past)
        with torch.no_grad():
            want = [t.numpy() for t in reference(*args)]
        got = session.run(None, {n: a.numpy() for n, a in zip(names, args)})
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, atol=1e-4)
        past = [torch.from_numpy(g) for g in got[1:]]


def test_decode_profile_counts_the_fused_graphs_kernels(gen_bundle, tmp_path):
    """`benchmarks.ort_profile --decode` runs one decode step of a bundle's graph under ONNX
    Runtime's profiler and writes the kernel time per op type: one GroupQueryAttention per layer."""
    from benchmarks.ort_profile import main

    bundle, _ = gen_bundle("onnx", "baked")
    out = tmp_path / "profile.json"
    assert main([str(bundle / "onnx" / "gen_a" / "model.onnx"), "--decode", "6", "--runs", "3", "--warmup", "1",
                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    ops = {r["op"]: r for r in record["ops"]}
    assert ops["GroupQueryAttention"]["nodes"] == 2 and ops["SkipSimplifiedLayerNormalization"]["nodes"] == 4
    assert record["kernel_ms_per_run"] > 0 and record["decode_past"] == 6 and "command" in record
    assert abs(sum(r["share"] for r in record["ops"]) - 1) < 1e-6


@pytest.mark.parametrize("mode", ["baked", "swappable", "shared"])
def test_executorch_manifest_lists_what_the_runtime_must_link(gen_bundle, mode):
    """The manifest names the operators each program calls outside its delegates (read from the
    written programs: the list ExecuTorch's selective build takes), its backends, and the kernel
    library of each operator namespace, so an app build knows it needs ExecuTorch's LLM kernels."""
    bundle, _ = gen_bundle("executorch", mode)
    runtime = json.loads((bundle / "manifest.json").read_text())["runtime"]
    ops = set(runtime["operators"])
    assert {"llama::update_cache.out", "llama::custom_sdpa.out"} <= ops, sorted(ops)
    assert not any("slice_scatter" in op or "expand_copy" in op for op in ops), sorted(ops)
    assert runtime["backends"] == ["XnnpackBackend"]
    assert "kernels_llm" in runtime["kernel_libraries"]["llama"]
    assert set(runtime["kernel_libraries"]) == {op.split("::")[0] for op in ops}


def test_executorch_shared_backbone_stores_the_tied_embedding_table_once(gen_bundle):
    """The LM head reads the tied int8 embedding table as an XNNPACK weight and the lookup reads it as
    a program constant: a baked .pte must store it twice (the stock runtime resolves named constants
    from an external data file only), backbone.ptd once (its named data dedup by content). The
    manifests' notes say which, and the file sizes show it."""
    baked, job = gen_bundle("executorch", "baked")
    shared, _ = gen_bundle("executorch", "shared")
    cfg = job.tasks[0].model.config
    table = cfg.vocab_size * cfg.hidden_size  # int8 codes, one byte each
    shared_bytes = sum((shared / "executorch" / n).stat().st_size for n in ("backbone.ptd", "gen_a.pte"))
    assert (baked / "executorch" / "gen_a.pte").stat().st_size - shared_bytes > 0.9 * table

    def head_note(bundle):
        notes = json.loads((bundle / "manifest.json").read_text())["notes"]
        return next(n for n in notes if n.startswith("LM head"))

    assert "stored twice" in head_note(baked) and "--mode shared" in head_note(baked)
    assert "stored once in backbone.ptd" in head_note(shared)


def test_generative_executorch_checks_load_the_programs_in_a_fresh_process(gen_bundle):
    """A validating process registers ExecuTorch's LLM kernels before its first check loads a
    program (in this test session an earlier test has registered them already, which would hide a
    check that loads too early): the bundle's findings all pass in a new interpreter."""
    import subprocess
    import sys

    bundle, _ = gen_bundle("executorch", "shared")
    code = ("import sys; from pathlib import Path; from calora.export.manifest import read_manifest; "
            "from calora.targets import get_target; b = Path(sys.argv[1]); m = read_manifest(b); "
            "f = get_target(m['target']).open(b, m).findings(); bad = [x for x in f if x.ok is not True]; "
            "print(len(f), 'findings', bad); sys.exit(1 if bad or not f else 0)")
    done = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "findings []" in done.stdout


def test_executorch_shared_program_profiles_without_cache_copies(gen_bundle, tmp_path):
    """`benchmarks.et_profile` runs a shared-mode program with its backbone.ptd under ExecuTorch's
    event tracer; the cache is written and read by ExecuTorch's LLM kernels, so no portable kernel
    copies a whole cache buffer in a step: no expand_copy (k and v repeated per head group), no
    slice_scatter or copy_ (a write of S positions as a copy of the whole buffer)."""
    from benchmarks.et_profile import main

    bundle, _ = gen_bundle("executorch", "shared")
    out = tmp_path / "et.json"
    assert main([str(bundle), "--task", "gen_a", "--prompt-tokens", "5", "--decode-steps", "2", "--top", "200",
                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    events = {e["event"] for e in record["events"]}
    assert record["data"].endswith("backbone.ptd") and "DELEGATE_CALL" in events, sorted(events)[:20]
    copies = {e for e in events if "expand_copy" in e or "slice_scatter" in e or e == "native_call_copy_"}
    assert not copies, sorted(events)
    assert any("update_cache" in e for e in events) and any("custom_sdpa" in e for e in events), sorted(events)
    # Decode steps are reported apart from the prefill: per step, less than the whole run.
    execute = next(e for e in record["events"] if e["event"] == "Method::execute")
    assert 0 < execute["ms_per_decode_step"] * 2 < execute["ms_total"] and record["threads"] == "default", execute
    # The same steps untraced: the speed to quote (the tracer adds its own cost to every call).
    assert 0 < record["untraced_decode_ms_median"] and 0 < record["tracer_overhead"] < 20, record
