import contextlib

import pytest
import torch

from calora.train.adapters import Activation, adapted_layers, wrap
from calora.train.artifacts import attach_recovery
from calora.train.backbones import load_classifier
from calora.train.compress import compress_model, compressible_linears, inherit_through_pruning
from calora.train.errors import AdapterMismatchError
from calora.train.peft_io import attach_lora, new_lora_config, read_lora_dir, write_lora_dir
from calora.train.spec import CompressionSpec
from calora.train.trainer import masked_mse

IDS = torch.tensor([[2, 5, 9, 12, 7, 3, 0, 0], [2, 8, 6, 3, 0, 0, 0, 0]])
MASK = (IDS != 0).long()


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


def _teacher(path, tmp_path, targets=("query", "value")):
    model = load_classifier(path, 2, seed=0)
    cfg = new_lora_config(list(targets), 4, 8.0, 0.0, ["classifier"], path)
    attach_lora(model, cfg, None)
    torch.manual_seed(1)
    for layer in adapted_layers(model).values():  # non-zero B, so the LoRA really changes outputs
        torch.nn.init.normal_(layer.lora_B.weight, std=0.5)
    write_lora_dir(model, cfg, tmp_path / "teacher")
    return model


@pytest.mark.parametrize("spec", ["none", "int4:g32+sparse:0.5"])
def test_zero_initialised_recovery_changes_nothing(tiny_bert, spec):
    model = compress_model(load_classifier(tiny_bert, 2, seed=0), CompressionSpec.parse(spec))
    before = _logits(model)
    attach_recovery(model, compressible_linears(model), 4, Activation.GELU)
    assert len([l for l in adapted_layers(model).values() if l.recovery is not None]) == 7
    assert torch.equal(_logits(model), before)
    layer = next(iter(adapted_layers(model).values()))
    with torch.no_grad():
        layer.recovery.up.weight.fill_(0.1)
    assert not torch.equal(_logits(model), before)  # and the branch is really in the forward


def test_inheritance_copies_teacher_weights_exactly(tiny_bert, tmp_path):
    teacher = _teacher(tiny_bert, tmp_path)
    adapter = read_lora_dir(tmp_path / "teacher")
    student = compress_model(load_classifier(tiny_bert, 2, seed=5), CompressionSpec.parse("int4:g32"))
    attach_lora(student, adapter.config, adapter.tensors)
    t_layers, s_layers = adapted_layers(teacher), adapted_layers(student)
    assert set(t_layers) == set(s_layers) and len(s_layers) == 2
    for name in t_layers:
        assert torch.equal(t_layers[name].lora_A.weight, s_layers[name].lora_A.weight)
        assert torch.equal(t_layers[name].lora_B.weight, s_layers[name].lora_B.weight)
    assert torch.equal(teacher.classifier.weight, student.classifier.weight)


def test_inheritance_from_another_backbone_names_the_layer(tiny_bert, tiny_llama, tmp_path):
    _teacher(tiny_bert, tmp_path, targets=("query", "value"))
    adapter = read_lora_dir(tmp_path / "teacher")
    with pytest.raises(AdapterMismatchError, match="match no linear layer"):
        attach_lora(load_classifier(tiny_llama, 2, seed=0), adapter.config, adapter.tensors)
    shrunk = compress_model(load_classifier(tiny_bert, 2, seed=0), CompressionSpec.parse("heads:0.5"))
    with pytest.raises(AdapterMismatchError, match=r"layer bert\.encoder\.layer\.0\.attention\.self\.query"):
        attach_lora(shrunk, adapter.config, adapter.tensors)


def test_inheritance_survives_heads_and_ffn_pruning(tiny_bert, tmp_path):
    """Structured pruning removes rows and columns; the inherited LoRA is cut to what was kept, so
    every kept weight gets exactly the teacher's update."""
    teacher = _teacher(tiny_bert, tmp_path, targets=("query", "value", "dense"))
    adapter = read_lora_dir(tmp_path / "teacher")
    kept = {}
    student = compress_model(load_classifier(tiny_bert, 2, seed=5), CompressionSpec.parse("heads:0.5+ffn:0.5"), kept)
    tensors, cut = inherit_through_pruning(adapter.tensors, kept)
    attach_lora(student, adapter.config, tensors)
    t_layers, s_layers = adapted_layers(teacher), adapted_layers(student)
    assert set(t_layers) == set(s_layers)
    # per layer: query, value (rows by heads), attention output (columns by heads), FFN in (rows), FFN out (columns)
    assert cut == 5 * len([n for n in s_layers if n.endswith("attention.self.query")]) and cut > 0
    for name, s in s_layers.items():
        t = t_layers[name]
        full = t.lora_B.weight @ t.lora_A.weight
        rows, cols = kept.get(name, (None, None))
        if rows is not None:
            full = full[rows]
        if cols is not None:
            full = full[:, cols]
        assert torch.equal(s.lora_B.weight @ s.lora_A.weight, full), name
        assert full.shape == s.base_layer.weight.shape, name
    _logits(student)  # and the pruned student runs


def test_distillation_term_zero_iff_student_equals_teacher():
    h = torch.randn(2, 8, 16)
    assert masked_mse(h, h.clone(), MASK).item() == 0.0
    other = h.clone()
    other[MASK == 0] += 5.0  # differences on padding do not count
    assert masked_mse(h, other, MASK).item() == 0.0
    other[0, 0, 0] += 1.0
    assert masked_mse(h, other, MASK).item() == pytest.approx(1.0 / (MASK.sum().item() * 16))


def test_bf16_teacher_precision_rounds_the_targets_and_only_the_targets(tiny_bert, tmp_path):
    from types import SimpleNamespace

    from calora.train.config import CALoRASettings
    from calora.train.errors import ConfigError
    from calora.train.teacher_targets import TeacherTargets
    from calora.train.trainer import _distill_settings

    teacher = _teacher(tiny_bert, tmp_path).eval()
    acc = SimpleNamespace(device=torch.device("cpu"), is_main_process=True, autocast=contextlib.nullcontext)
    batch = {"input_ids": IDS, "attention_mask": MASK}
    default, bf16 = CALoRASettings(), CALoRASettings(teacher_precision="bf16")
    exact_h, exact_lg = TeacherTargets.build(teacher, default, acc)(batch)
    h, lg = TeacherTargets.build(teacher, bf16, acc)(batch)
    assert torch.equal(exact_lg, _logits(teacher))  # the default is the plain float32 forward
    # The matmuls ran in bfloat16 (the final LayerNorm stays float32 under autocast): rounded by
    # about bfloat16's precision, not more.
    rel = ((h.float() - exact_h).norm() / exact_h.norm()).item()
    assert 0 < rel < 0.03, rel
    assert masked_mse(exact_h, h, MASK).item() > 0
    assert torch.equal(_logits(teacher), exact_lg)  # the teacher itself is left in float32
    assert {p.dtype for p in teacher.parameters()} == {torch.float32}

    # A checkpoint records the choice; the default leaves the record as it was before the flag.
    assert len(_distill_settings(default)) == 6 and _distill_settings(bf16)[:6] == _distill_settings(default)
    with pytest.raises(ConfigError, match="--teacher-precision: unknown value 'fp8'"):
        CALoRASettings(teacher_precision="fp8")


def test_bf16_twin_computes_what_autocast_computes_and_keeps_a_tied_embedding_float32():
    from transformers import LlamaConfig, LlamaForCausalLM

    from calora.train.teacher_targets import bf16_twin

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, max_position_embeddings=32, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    twin = bf16_twin(model)
    ids = torch.randint(0, 40, (2, 9))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = model(input_ids=ids).logits, twin(input_ids=ids).logits
    assert torch.equal(want, got)
    assert twin.lm_head.weight.dtype == torch.bfloat16 and twin.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    # shared, not copied: the embedding table (float32, so the residual stream stays float32) and the norms
    assert twin.model.embed_tokens.weight is model.model.embed_tokens.weight
    assert twin.model.norm.weight is model.model.norm.weight
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.lm_head.weight.dtype == torch.float32


def test_peft_alone_loads_the_lora_dir(tiny_bert, tmp_path):
    from peft import PeftModel

    _teacher(tiny_bert, tmp_path)
    for spec in ("none", "int4:g32+sparse:0.5"):
        base = compress_model(load_classifier(tiny_bert, 2, seed=9), CompressionSpec.parse(spec))
        mine = compress_model(load_classifier(tiny_bert, 2, seed=9), CompressionSpec.parse(spec))
        adapter = read_lora_dir(tmp_path / "teacher")
        attach_lora(mine, adapter.config, adapter.tensors)
        peft_model = PeftModel.from_pretrained(base, str(tmp_path / "teacher")).eval()
        with torch.no_grad():
            got = peft_model(input_ids=IDS, attention_mask=MASK).logits
        assert torch.allclose(got, _logits(mine), atol=1e-5), spec


def test_wrap_is_idempotent(tiny_bert):
    model = load_classifier(tiny_bert, 2, seed=0)
    a = wrap(model, "bert.encoder.layer.0.attention.self.query")
    assert wrap(model, "bert.encoder.layer.0.attention.self.query") is a


def test_loftq_init_starts_the_compressed_layer_at_the_best_rank_r_fix(tiny_bert):
    from calora.train.config import CALoRASettings
    from calora.train.errors import ConfigError
    from calora.train.loftq import loftq_init

    teacher = load_classifier(tiny_bert, 2, seed=0)
    cfg = new_lora_config(["query", "value"], 4, 8.0, 0.0, ["classifier"], tiny_bert)
    attach_lora(teacher, cfg, None)  # zero-init B: the teacher's own LoRA must not enter the residual
    torch.nn.init.normal_(next(iter(adapted_layers(teacher).values())).lora_B.weight, std=1.0)
    student = compress_model(load_classifier(tiny_bert, 2, seed=0), CompressionSpec.parse("int4:g32+sparse:0.5"))
    attach_lora(student, cfg, None)
    stats = loftq_init(student, teacher)
    assert stats["layers"] == 2 and stats["relative_residual_after"] < stats["relative_residual_before"]
    for name, layer in adapted_layers(student).items():
        full = adapted_layers(teacher)[name].base_layer.weight
        residual = full - layer.base_layer.weight
        fixed = residual - layer.scaling * layer.lora_B.weight @ layer.lora_A.weight
        u, s, vh = torch.linalg.svd(residual)
        # Eckart-Young: what is left is exactly the residual's singular values beyond rank 4
        assert torch.allclose(torch.linalg.norm(fixed), s[4:].norm(), rtol=1e-3)
    with pytest.raises(ConfigError, match="--no-inherit"):
        CALoRASettings(loftq=True)
    shrunk = compress_model(load_classifier(tiny_bert, 2, seed=0), CompressionSpec.parse("heads:0.5"))
    attach_lora(shrunk, cfg, None)
    with pytest.raises(ConfigError, match="structured pruning"):
        loftq_init(shrunk, teacher)
