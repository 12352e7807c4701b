"""`emb:int4`: the token embedding table as int4 codes with a scale per 32 values, trained and then
stored bit-exactly by every target (the lever past 6x for a small encoder)."""

from __future__ import annotations

import pytest
import torch

from calora.train.backbones import load_classifier
from calora.train.compress import compress_model, stored_size
from calora.train.spec import CompressionSpec, EMBEDDING_INT4_GROUP

SPEC = "int4:g32+sparse:0.5+emb:int4"


def test_int4_table_is_half_the_int8_bytes_and_group_scaled(tiny_bert):
    sizes = {}
    for emb in ("int8", "int4"):
        model = compress_model(load_classifier(tiny_bert, 2, seed=0), CompressionSpec.parse(f"int4:g32+emb:{emb}"))
        table = model.get_input_embeddings()
        sizes[emb] = stored_size(model, CompressionSpec.parse(f"int4:g32+emb:{emb}"))["dense_bytes"]
        if emb == "int4":
            vocab, dim = table.codes.shape
            assert table.bits == 4 and int(table.codes.min()) >= -8 and int(table.codes.max()) <= 7
            assert tuple(table.scale.shape) == (vocab, dim // EMBEDDING_INT4_GROUP)
            with torch.no_grad():  # every group is reproduced within half a step of its scale
                orig = load_classifier(tiny_bert, 2, seed=0).get_input_embeddings().weight
                err = (table.weight - orig).abs().reshape(vocab, -1, EMBEDDING_INT4_GROUP)
                assert bool((err <= table.scale[..., None] / 2 + 1e-6).all())
    vocab, dim = table.codes.shape
    saved = sizes["int8"] - sizes["int4"]  # codes: half the bytes; scales: one per group, not per row
    assert saved == vocab * dim // 2 - (vocab * (dim // EMBEDDING_INT4_GROUP) - vocab) * 4


@pytest.fixture(scope="module")
def int4_runs(tmp_path_factory, tiny_bert, sentiment_csv):
    from calora.train.cli import main

    runs = tmp_path_factory.mktemp("runs-int4")
    rc = main(["--backbone", tiny_bert, "--task", "toy_int4", "--data", sentiment_csv, "--out", str(runs),
               "--epochs", "6", "--batch-size", "16", "--lr", "1e-2", "--max-length", "16", "--lora-rank", "4",
               "--recovery-rank", "4", "--compression", SPEC, "--checkpoint-every", "0"])
    assert rc == 0
    return runs


@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml"])
def test_every_target_stores_the_int4_table_exactly(int4_runs, target, tmp_path):
    from calora.export.job import load_job
    from calora.targets import get_target

    job = load_job(int4_runs, ["toy_int4"], "baked")
    result = get_target(target).export(job, tmp_path)
    assert result.weight_error["embedding_max_abs"] == 0.0  # the trained codes and scales, not re-quantized
    smoke = result.smoke["toy_int4"]
    assert smoke["argmax_agreement"] >= 0.9 and smoke["max_abs_logit_error"] < 0.2, smoke
    if target == "onnx":
        import onnx

        ops = [n.op_type for n in onnx.load(str(tmp_path / "onnx" / "toy_int4.onnx")).graph.node]
        assert ops.count("GatherBlockQuantized") == 1
    elif target == "executorch":
        from executorch.exir._serialize._program import deserialize_pte_binary

        pte = tmp_path / "executorch" / "toy_int4.pte"
        plan = deserialize_pte_binary(pte.read_bytes()).program.execution_plan[0]
        assert any("embedding_4bit" in op.name for op in plan.operators), [op.name for op in plan.operators]
    else:
        assert any("int4" in n and "embedding" in n for n in result.notes)


def test_generative_export_refuses_int4_embeddings_before_writing(tmp_path):
    from types import SimpleNamespace

    from calora.export.bundle import export_bundle
    from calora.targets.base import Mode
    from calora.train.errors import ConfigError

    job = SimpleNamespace(mode=Mode.BAKED, kind="generate", spec=CompressionSpec.parse("int4:g32+emb:int4"))
    with pytest.raises(ConfigError, match="emb:int8"):
        export_bundle(job, "onnx", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
