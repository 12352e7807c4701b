import pytest
import torch

from calora.train.backbones import load_classifier
from calora.train.compress import (check_group_sizes, compress_model, compressible_linears, fingerprint, magnitude_mask,
                                   stored_size)
from calora.train.errors import BackboneError, ConfigError
from calora.train.quant import QuantLinear
from calora.train.spec import CompressionSpec, SparsityPattern

IDS = torch.tensor([[2, 5, 9, 12, 7, 3, 0, 0]])
MASK = (IDS != 0).long()


def _compressed(path, text):
    model = load_classifier(path, 2, seed=0)
    return compress_model(model, CompressionSpec.parse(text))


def test_compression_is_deterministic_and_spec_sensitive(tiny_bert):
    a, b = _compressed(tiny_bert, "int4:g32+sparse:0.5"), _compressed(tiny_bert, "int4:g32+sparse:0.5")
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(_compressed(tiny_bert, "int4:g32+sparse:0.4"))
    assert fingerprint(a) != fingerprint(_compressed(tiny_bert, "int8+sparse:0.5"))


def test_fingerprint_ignores_the_task_head(tiny_bert):
    a = load_classifier(tiny_bert, 2, seed=0)
    b = load_classifier(tiny_bert, 2, seed=0)
    with torch.no_grad():
        b.classifier.weight.add_(1.0)
    assert fingerprint(a) == fingerprint(b)
    with torch.no_grad():
        b.bert.encoder.layer[0].output.dense.weight[0, 0] += 1e-3
    assert fingerprint(a) != fingerprint(b)


def test_every_backbone_linear_is_quantized_and_pruned(tiny_bert):
    model = _compressed(tiny_bert, "int4:g32+sparse:0.5")
    names = compressible_linears(model)
    assert names and all(isinstance(model.get_submodule(n), QuantLinear) for n in names)
    for n in names:
        frac_zero = float((model.get_submodule(n).codes == 0).float().mean())
        assert frac_zero >= 0.5
    assert not isinstance(model.classifier, QuantLinear)


def test_two_four_pattern():
    w = torch.randn(8, 16)
    keep = magnitude_mask(w, 0.5, SparsityPattern.SEMI_2_4)
    assert torch.all(keep.reshape(8, 4, 4).sum(-1) == 2)
    kept = (w.abs() * keep).reshape(8, 4, 4)
    dropped = (w.abs() * ~keep).reshape(8, 4, 4)
    assert torch.all(kept.max(-1).values >= dropped.max(-1).values)


def test_structured_pruning_shrinks_and_runs(tiny_bert, tiny_llama):
    bert = _compressed(tiny_bert, "ffn:0.25+heads:0.25")
    assert bert.bert.encoder.layer[0].intermediate.dense.out_features == 96
    assert bert.bert.encoder.layer[0].attention.self.query.out_features == 48
    assert bert(input_ids=IDS, attention_mask=MASK).logits.shape == (1, 2)
    llama = _compressed(tiny_llama, "ffn:0.5+int8")
    assert llama.model.layers[0].mlp.down_proj.in_features == 64
    assert llama(input_ids=IDS, attention_mask=MASK).logits.shape == (1, 2)
    with pytest.raises(BackboneError, match="BERT-family"):
        _compressed(tiny_llama, "heads:0.25")


def test_stored_size_counts_packed_bytes(tiny_bert):
    plain = stored_size(load_classifier(tiny_bert, 2, seed=0), CompressionSpec())
    q4 = stored_size(_compressed(tiny_bert, "int4:g32+sparse:0.5+emb:int8"), CompressionSpec.parse("int4:g32"))
    assert plain["dense_bytes"] == plain["fp32_bytes"]
    assert q4["dense_bytes"] < plain["dense_bytes"] / 3
    assert q4["sparse_bytes"] <= q4["dense_bytes"]


def test_bnb_nf4_on_cpu(tiny_bert):
    pytest.importorskip("bitsandbytes")
    model = _compressed(tiny_bert, "nf4")
    assert type(model.bert.encoder.layer[0].attention.self.query).__name__ == "Linear4bit"
    ref = load_classifier(tiny_bert, 2, seed=0)
    out, want = model(input_ids=IDS, attention_mask=MASK).logits, ref(input_ids=IDS, attention_mask=MASK).logits
    assert out.shape == want.shape and not torch.equal(out, want)
    assert fingerprint(model) == fingerprint(_compressed(tiny_bert, "nf4"))


@pytest.mark.parametrize("text", ["int4:g32", "int4:g64", "int4:g128", "int4:g64+ffn:0.25", "int4:g32+ffn:0.25",
                                  "int4:g64+heads:0.25", "int4:g16+heads:0.25", "int8+ffn:0.25", "int4:g32+emb:int4"])
def test_group_check_agrees_with_compression(tiny_bert, text):
    """The early check (run before the teacher trains) refuses exactly the specs compression would
    refuse later. tiny_bert: 64 hidden, 128 FFN, 4 heads of 16; ffn:0.25 leaves 96, heads:0.25 48."""
    spec = CompressionSpec.parse(text)
    try:
        check_group_sizes(load_classifier(tiny_bert, 2, seed=0), spec)
        refused = None
    except ConfigError as exc:
        refused = str(exc)
    try:
        compress_model(load_classifier(tiny_bert, 2, seed=0), spec)
        compressed = True
    except BackboneError:
        compressed = False
    assert (refused is None) == compressed, refused
    if refused:
        assert refused.startswith(f"--compression {spec}: int4 group size {spec.group_size} does not divide")


def test_group_check_names_the_layer_the_pruning_and_what_fits(tiny_bert):
    with pytest.raises(ConfigError) as exc:
        check_group_sizes(load_classifier(tiny_bert, 2, seed=0), CompressionSpec.parse("int4:g64+ffn:0.25"))
    assert "the 96 input features of bert.encoder.layer.0.output.dense after ffn:0.25" in str(exc.value)
    assert str(exc.value).endswith("group sizes that divide every linear of this backbone: int4:g16, int4:g32")
    with pytest.raises(ConfigError, match="the 64 input features of bert.encoder.layer.0.attention.self.query;.*"
                                          "int4:g16, int4:g32, int4:g64$"):
        check_group_sizes(load_classifier(tiny_bert, 2, seed=0), CompressionSpec.parse("int4:g128"))


@pytest.mark.parametrize("text", ["int8+emb:int4", "int4:g16+emb:int4"])
def test_group_check_refuses_an_embedding_width_the_int4_table_cannot_group(text):
    """A 48-wide embedding cannot be cut into int4 groups of 32: the early check names the flag and
    the width, and compression refuses the same spec (so the two cannot drift). The linears fit
    (int8, or groups of 16 over 48 and 96 features), so only the embedding branch can refuse."""
    from transformers import BertConfig, BertForSequenceClassification

    def model():
        torch.manual_seed(0)
        return BertForSequenceClassification(BertConfig(
            vocab_size=40, hidden_size=48, num_hidden_layers=1, num_attention_heads=4, intermediate_size=96,
            max_position_embeddings=16))

    spec = CompressionSpec.parse(text)
    with pytest.raises(ConfigError) as exc:
        check_group_sizes(model(), spec)
    assert str(exc.value) == ("--compression emb:int4: its group of 32 does not divide the token embeddings' "
                              "width 48")
    with pytest.raises(BackboneError, match="emb:int4: cannot quantize the token embeddings"):
        compress_model(model(), spec)
    check_group_sizes(model(), CompressionSpec.parse(text.replace("+emb:int4", "+emb:int8")))
