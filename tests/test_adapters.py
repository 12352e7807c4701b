import pytest
import torch

from calora.train.adapters import Activation, adapted_layers, wrap
from calora.train.artifacts import attach_recovery
from calora.train.backbones import load_classifier
from calora.train.compress import compress_model, compressible_linears
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


def test_distillation_term_zero_iff_student_equals_teacher():
    h = torch.randn(2, 8, 16)
    assert masked_mse(h, h.clone(), MASK).item() == 0.0
    other = h.clone()
    other[MASK == 0] += 5.0  # differences on padding do not count
    assert masked_mse(h, other, MASK).item() == 0.0
    other[0, 0, 0] += 1.0
    assert masked_mse(h, other, MASK).item() == pytest.approx(1.0 / (MASK.sum().item() * 16))


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
