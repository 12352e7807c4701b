"""Unit tests of the validator's parts: thresholds, comparisons, metrics, tokenizer parity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calora.train.errors import ConfigError
from calora.validate.checks import compare, error_histogram, primary_metric, task_metrics
from calora.validate.thresholds import DEFAULTS, Thresholds, parse_overrides, resolve

TARGETS = ["executorch", "onnx", "coreml"]


def test_threshold_errors_name_field_and_value():
    with pytest.raises(ConfigError, match="min_agreement=1.5"):
        Thresholds(min_agreement=1.5)
    with pytest.raises(ConfigError, match="logit_steps=-1"):
        Thresholds(logit_steps=-1)
    with pytest.raises(ConfigError, match="unknown target 'tflite'"):
        parse_overrides(["tflite.min_agreement=1"], None, TARGETS)
    with pytest.raises(ConfigError, match="expected \\[TARGET.\\]KEY=VALUE"):
        parse_overrides(["min_agreement"], None, TARGETS)
    with pytest.raises(ConfigError, match="must be a number"):
        parse_overrides(["min_agreement=high"], None, TARGETS)


def test_overrides_file_then_flags(tmp_path):
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"*": {"min_sqnr_db": 20}, "onnx": {"min_agreement": 0.95}}))
    over = parse_overrides(["onnx.min_agreement=0.97"], str(f), TARGETS)
    th, src = resolve("onnx", over)
    assert th.min_agreement == 0.97 and th.min_sqnr_db == 20 and src["min_agreement"] == "override (onnx)"
    th, src = resolve("coreml", over)
    assert th.min_agreement == DEFAULTS["coreml"].min_agreement and src["min_agreement"] == "default (coreml)"
    with pytest.raises(ConfigError, match="--thresholds"):
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        parse_overrides([], str(bad), TARGETS)


def test_int8_activation_gates_follow_the_runtime_not_the_target():
    """A generative runtime computing int8 activations gets the looser cache and generation gates
    whatever the target (ExecuTorch always; ONNX Runtime with --activations int8); a float one keeps
    the exact KV-cache check; an override still wins; classification gets int8 gates too (sized on a
    30-layer classifier, where XNNPACK and training's simulation round apart)."""
    from calora.validate.thresholds import INT8_ACTIVATIONS, runtime_activations

    exact, _ = resolve("onnx", {})
    loose, src = resolve("onnx", {}, "int8-dynamic")
    assert exact.cache_steps == 0.5 and exact.cache_min_agreement == 1.0
    assert loose.cache_steps == INT8_ACTIVATIONS["cache_steps"] > exact.cache_steps
    assert src["cache_steps"] == "default (onnx, int8 activations)"
    assert (exact.min_agreement, exact.logit_steps, exact.min_cosine, exact.min_sqnr_db) == (0.98, 12.0, 0.999, 30.0)
    assert (loose.min_agreement, loose.logit_steps, loose.min_cosine, loose.min_sqnr_db) == (0.96, 32.0, 0.997, 20.0)
    assert loose.max_metric_drop == exact.max_metric_drop  # the accuracy gate never loosens
    assert resolve("executorch", {}, "int8-dynamic")[0] == loose
    pinned, src = resolve("onnx", {"onnx": {"cache_steps": 2.0}}, "int8-dynamic")
    assert pinned.cache_steps == 2.0 and src["cache_steps"] == "override (onnx)"
    spec = {"quant": "int4", "group_size": 32}
    old = {"target": "executorch", "runtime": {}, "backbone": {"compression": {"spec": spec}}}
    assert runtime_activations(old) == "int8-dynamic"  # recorded before the manifest said
    assert runtime_activations({**old, "target": "onnx"}) == "float32"
    assert runtime_activations({**old, "target": "onnx", "runtime": {"activations": "int8-dynamic"}}) == "int8-dynamic"


def test_logit_tolerance_in_quantization_steps():
    th = Thresholds(logit_steps=4, logit_atol=1e-3)
    tol, how = th.logit_tolerance(True, 12.7)
    assert tol == pytest.approx(0.4) and "4 steps" in how
    assert th.logit_tolerance(False, 12.7)[0] == 1e-3
    assert th.logit_tolerance(True, 0.0)[0] == 1e-3  # floor


def test_compare_catches_errors():
    ref = np.array([[1.0, -1.0], [0.5, 2.0], [-3.0, 3.0]])
    same = compare(ref, ref.copy())
    assert same["agreement"] == 1.0 and same["max_abs_logit_error"] == 0 and same["sqnr_db"] == float("inf")
    assert same["cosine"] == pytest.approx(1.0)
    flipped = compare(ref, ref[:, ::-1])
    assert flipped["agreement"] == 0.0 and flipped["cosine"] < 0 and flipped["sqnr_db"] < 10
    noisy = compare(ref, ref + 1e-3)
    assert noisy["agreement"] == 1.0 and 55 < noisy["sqnr_db"] < 70
    hist = error_histogram(ref, ref + 1e-3)
    assert sum(hist["counts"]) == 6 and hist["zeros"] == 0


def test_task_metrics_use_label_names():
    labels = ["neg", "pos"]
    m = task_metrics(["neg", "pos", "pos", "neg"], ["neg", "pos", "neg", "neg"], labels)
    assert m["accuracy"] == 0.75 and m["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert primary_metric(["ham"] * 9 + ["spam"], ["ham", "spam"]) == "f1_macro"
    assert primary_metric(["neg", "pos"] * 5, labels) == "accuracy"


def _bpe_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["a good movie", "a bad film", "really great fun"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")
    fast.save_pretrained(str(tmp_path / "tokenizer"))
    return fast


def test_cpp_tokenizer_parity_on_a_byte_level_bpe(tmp_path):
    pytest.importorskip("pytorch_tokenizers")
    from calora.validate.references import _cpp_check

    tok = _bpe_tokenizer(tmp_path)
    name, ok, detail = _cpp_check(tok, tmp_path, ["a good movie", "really bad fun!", "unseen words here"])
    assert ok is True, detail
    # A tokenizer.json that no longer matches the Python tokenizer is caught.
    data = json.loads((tmp_path / "tokenizer" / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (tmp_path / "tokenizer" / "tokenizer.json").write_text(json.dumps(data))
    _, ok, detail = _cpp_check(tok, tmp_path, ["a good movie", "really great fun", "a bad film"])
    assert ok is False and "differ" in detail


def test_lm_head_int8_block_reference_rounds_like_mlas():
    """The reference for an ONNX LM head run with accuracy_level 4: each block of the head's input
    rounded to int8 with its own scale max|x| / 127; an all-zero block stays zero; a bad spec is
    refused naming the manifest field."""
    import torch

    from calora.export.decoder import block_int8
    from calora.train.errors import ArtifactError
    from calora.validate.references import _int8_block

    x = torch.tensor([[0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0]])
    y = block_int8(x, 4)
    step = 1.0 / 127
    assert torch.allclose(y[0, :4], torch.round(x[0, :4] / step) * step) and torch.equal(y[0, 4:], x[0, 4:])
    assert not torch.equal(y, x) and torch.allclose(block_int8(y, 4), y)  # rounded once, then on the grid
    small = torch.tensor([[0.5, -1.0, 0.25, 0.0, 0.01, 0.0, 0.0, 0.0]])
    assert abs(float(block_int8(small, 4)[0, 4]) - 0.01) < 1e-7  # its own block: its own fine scale
    assert abs(float(block_int8(small, 8)[0, 4]) - 1 / 127) < 1e-7  # one block: 1.0's coarse scale
    assert _int8_block("int8-block64") == 64
    with pytest.raises(ArtifactError, match="runtime.lm_head_activations"):
        _int8_block("int4-block64")


def test_noise_floor_ratios_and_float64_copy():
    """The noise floor runs a float64 *copy* (the caller's model stays float32), compares both the
    copy and the artifact with the float32 reference on the first N rows, and states each metric's
    artifact error as a multiple of the copy's; a model with no float64 path is reported, not raised."""
    import torch

    from calora.validate.noise_floor import describe, measure, ratios

    class Toy(torch.nn.Module):
        def __init__(self, fail_double: bool = False) -> None:
            super().__init__()
            self.emb, self.head, self.fail = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3), fail_double

        def forward(self, input_ids, attention_mask):
            h = self.emb(input_ids).mean(1)
            if self.fail and h.dtype == torch.float64:
                raise RuntimeError("no float64 kernel")
            return type("Out", (), {"logits": self.head(torch.tanh(h * 7))})()

    torch.manual_seed(0)
    model = Toy().eval()
    ids = torch.randint(0, 50, (20, 6)).numpy()
    mask = np.ones_like(ids)
    with torch.no_grad():
        ref = model(torch.as_tensor(ids), torch.as_tensor(mask)).logits.numpy()
    got = ref + np.random.default_rng(0).normal(0, 1e-3, ref.shape).astype(np.float32)
    nf = measure(model, ids, mask, ref, got, examples=10, batch_size=4)
    assert next(model.parameters()).dtype == torch.float32
    assert nf["examples"] == 10 and nf["artifact"]["examples"] == 10
    assert 0 < nf["reference_float64"]["max_abs_logit_error"] < 1e-5 < nf["artifact"]["max_abs_logit_error"]
    assert nf["ratios"]["max_abs_logit_error"] > 10 and nf["ratios"]["cosine"] > 10
    assert "the artifact" in describe(nf, "cosine") and "x the floor's error" in describe(nf, "cosine")
    # Ratios: errors that grow (1 - agreement, 1 - cosine, noise power), None over a zero floor.
    r = ratios({"agreement": 1.0, "max_abs_logit_error": 0.5, "cosine": 0.999, "sqnr_db": 23.0},
               {"agreement": 0.9, "max_abs_logit_error": 1.0, "cosine": 0.998, "sqnr_db": 20.0})
    assert r["agreement"] is None and r["max_abs_logit_error"] == 2.0
    assert abs(r["cosine"] - 2.0) < 1e-9 and abs(r["sqnr_db"] - 10 ** 0.3) < 1e-9
    # A cache shared across bundles of the task: the second bundle reuses the float64 logits.
    cache: dict = {}
    first = measure(model, ids, mask, ref, got, examples=10, cache=cache)
    (key,) = cache  # one entry, for this model and these inputs
    cache[key] = cache[key] + 0.5  # the next bundle must read the cache, not recompute
    again = measure(model, ids, mask, ref, got, examples=10, cache=cache)
    assert abs(again["reference_float64"]["max_abs_logit_error"] - 0.5) < 1e-4
    assert again["artifact"] == first["artifact"]
    bad = measure(Toy(fail_double=True), ids, mask, ref, got, examples=10)
    assert "skipped" in bad and "no float64 kernel" in bad["skipped"]
    assert "not measured" in describe(bad, "cosine")


def test_noise_floor_float64_copy_reaches_modules_held_outside_the_tree():
    """A tied LM head reads an embedding it does not own (calora's TiedLMHead): the float64 copy
    converts that table too, and the original model, table included, stays float32."""
    import torch

    from calora.validate.noise_floor import _float64_copy, measure_sequences

    class Head(torch.nn.Module):
        def __init__(self, table: torch.nn.Embedding) -> None:
            super().__init__()
            object.__setattr__(self, "table", table)  # held, not a submodule

        def forward(self, h):
            return torch.nn.functional.linear(h, self.table.weight)

    class LM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(20, 8)
            self.head = Head(torch.nn.Embedding(20, 8))  # another table: as after an export rewrite

        def forward(self, input_ids):
            return type("Out", (), {"logits": self.head(torch.tanh(self.emb(input_ids) * 3))})()

    torch.manual_seed(0)
    model = LM().eval()
    f64 = _float64_copy(model)
    assert f64.head.table.weight.dtype == torch.float64 and model.head.table.weight.dtype == torch.float32
    seqs, starts = [[1, 2, 3, 4], [5, 6, 7]], [2, 1]
    with torch.no_grad():
        rows = [model(input_ids=torch.tensor([s])).logits[0].numpy()[st - 1:len(s) - 1] for s, st in zip(seqs, starts)]
    nf = measure_sequences(model, seqs, starts, rows, rows, examples=1)
    assert nf["examples"] == 1 and nf["reference_float64"]["examples"] == 2  # the first sequence's 2 response rows
    assert 0 < nf["reference_float64"]["max_abs_logit_error"] < 1e-5 and nf["artifact"]["max_abs_logit_error"] == 0
