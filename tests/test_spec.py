import json

import pytest

from calora.train.errors import ConfigError
from calora.train.spec import DEFAULT_COMPRESSION, CompressionSpec, QuantScheme, SparsityPattern


@pytest.mark.parametrize("text", [DEFAULT_COMPRESSION, "none", "int8", "int4:g64+noact", "nf4+deploy:int4:g32",
                                  "bnb-int8+deploy:int8+sparse:0.3", "int8+sparse:2:4+ffn:0.25+heads:0.25",
                                  "int8+act:tensor+sparse:0.5+emb:int4"])
def test_text_and_json_round_trip(text):
    spec = CompressionSpec.parse(text)
    assert CompressionSpec.parse(str(spec)) == spec
    assert CompressionSpec.from_dict(json.loads(spec.to_json())) == spec


def test_defaults_filled_in():
    assert CompressionSpec.parse("int4").group_size == 32
    nf4 = CompressionSpec.parse("nf4")
    assert nf4.deploy_quant == QuantScheme.INT4 and nf4.deploy_group_size == 32
    assert CompressionSpec.parse("sparse:2:4").sparsity_pattern == SparsityPattern.SEMI_2_4


@pytest.mark.parametrize("text, words", [
    ("int8:g32", "group_size"), ("sparse:1.5", "sparsity"), ("int4+deploy:int8", "deploy_quant"),
    ("int4:g33", "group_size"), ("zstd", "unknown token"), ("ffn:-0.1", "prune_ffn"), ("sparse:abc", "sparse:abc"),
    ("int4+act:tensor", "act_granularity"), ("int8+noact+act:tensor", "noact"), ("int8+act:row", "act:token, act:tensor"),
])
def test_bad_specs_name_the_field(text, words):
    with pytest.raises(ConfigError, match=words):
        CompressionSpec.parse(text)


def test_unknown_field_in_json():
    with pytest.raises(ConfigError, match="bogus"):
        CompressionSpec.from_dict({"bogus": 1})


def test_act_granularity_defaults_to_token_and_old_json_still_reads():
    from calora.train.spec import ActGranularity

    assert CompressionSpec.parse("int8").act_granularity == ActGranularity.TOKEN
    assert str(CompressionSpec.parse("int8+act:token")) == "int8"  # the default is not written
    old = CompressionSpec.parse("int8").to_dict()
    del old["act_granularity"]  # specs stored before the field existed
    assert CompressionSpec.from_dict(old) == CompressionSpec.parse("int8")
