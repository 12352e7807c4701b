"""Property-based tests (hypothesis) over the loaders of what crosses stage boundaries: the
compression spec, a bundle's manifest, and adapter directories. Random mutations never crash with
an unexpected exception, and a mutation that breaks the structure or the bytes never loads."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calora.export.manifest import check_manifest, read_manifest
from calora.train.errors import ArtifactError, ConfigError
from calora.train.spec import CompressionSpec

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)
TOKENS = st.sampled_from(["int4", "int4:g32", "int4:g7", "int8", "nf4", "bnb-int8", "deploy:int4:g32", "deploy:int8",
                          "noact", "sparse:0.5", "sparse:2:4", "sparse:1", "heads:0.25", "ffn:0.5", "emb:int8",
                          "emb:int4", "none", "", "sparse:", "int4:g", "deploy", "x"])


@FAST
@given(st.one_of(st.text(max_size=40), st.lists(TOKENS, min_size=1, max_size=5).map("+".join)))
def test_spec_text_parses_or_is_refused_and_round_trips(text):
    try:
        spec = CompressionSpec.parse(text)
    except ConfigError:
        return
    assert CompressionSpec.parse(str(spec)) == spec
    assert CompressionSpec.from_dict(json.loads(spec.to_json())) == spec


@FAST
@given(st.dictionaries(st.sampled_from(["quant", "group_size", "act_quant", "deploy_quant", "deploy_group_size",
                                        "sparsity", "sparsity_pattern", "prune_heads", "prune_ffn", "embeddings",
                                        "other"]), JSON, max_size=6) | JSON)
def test_spec_dict_loads_or_is_refused(data):
    try:
        spec = CompressionSpec.from_dict(data)
    except ConfigError:
        return
    assert CompressionSpec.from_dict(spec.to_dict()) == spec


def _manifest() -> dict:
    file = {"path": "onnx/backbone.ort", "role": "backbone", "task": None, "bytes": 3, "sha256": "ab"}
    task = {"name": "t", "label_names": ["a", "b"], "num_labels": 2, "backbone_fingerprint": "sha256:1",
            "adapter_fingerprint": "sha256:2", "files": [dict(file, role="adapter", task="t", path="a/t.bin")],
            "task_dir": "/x"}
    return {"schema_version": 1, "target": "onnx", "mode": "swappable", "runtime": {}, "versions": {},
            "backbone": {"source": "minilm", "family": "bert", "fingerprint": "sha256:1",
                         "compression": {"spec": {}, "text": "none"}, "files": [file]},
            "tasks": [task], "inputs": [{"name": "input_ids", "dtype": "int64", "shape": [1, 16]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 2]}], "max_sequence_length": 16,
            "tokenizer": {"dir": "tokenizer", "files": []}, "validation": {}, "command": "calora-export"}


def _paths(node, prefix=()):
    """Every key path of the required structure (lists: their first element)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list) and node:
        yield from _paths(node[0], prefix + (0,))


_OPTIONAL = {("tasks", 0, "task_dir"), ("command",)}
REQUIRED = [p for p in _paths(_manifest()) if p not in _OPTIONAL
            and not any(p[:len(q)] == q for q in (("runtime",), ("versions",), ("validation",)))
            and not (len(p) > 3 and p[:4] == ("backbone", "compression", "spec"))]


def _wrong_type(value, nullable_str: bool = False):
    """Values of another JSON type than `value` (so the mutation is structurally invalid)."""
    kinds = [(dict, st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
             (list, st.lists(st.integers(), max_size=2)), (str, st.text(max_size=4)),
             (float, st.floats(allow_nan=True)), (type(None), st.none()), (bool, st.booleans())]
    same = {type(value)} | ({str, type(None)} if nullable_str else set())  # a file's task: a name or null
    return st.one_of(*[s for t, s in kinds if t not in same])


@FAST
@given(st.data())
def test_manifest_mutations_never_load(data):
    m = _manifest()
    check_manifest(m)  # the unmutated one loads
    path = data.draw(st.sampled_from(REQUIRED))
    node = m
    for k in path[:-1]:
        node = node[k]
    if data.draw(st.booleans()):
        del node[path[-1]]
    else:
        node[path[-1]] = data.draw(_wrong_type(node[path[-1]], nullable_str=path[-1] == "task"))
    with pytest.raises(ArtifactError, match="manifest"):
        check_manifest(m, "manifest.json")


@FAST
@given(JSON)
def test_any_json_is_a_manifest_or_refused(value):
    try:
        check_manifest(value)
    except ArtifactError:
        pass


@SLOW
@given(st.binary(max_size=200))
def test_manifest_bytes_never_crash(tmp_path_factory, raw):
    bundle = tmp_path_factory.mktemp("b")
    (bundle / "manifest.json").write_bytes(raw)
    with pytest.raises(ArtifactError):
        read_manifest(bundle)


@pytest.fixture(scope="module")
def task_copy(tiny_runs, tmp_path_factory):
    dest = tmp_path_factory.mktemp("task") / "toy_a"
    shutil.copytree(tiny_runs / "toy_a", dest)
    return dest / "calora"


def _mutate(raw: bytes, how: str, at: int, value: int) -> bytes:
    at = at % max(len(raw), 1)
    if how == "truncate":
        return raw[:at]
    if how == "flip":
        return raw[:at] + bytes([raw[at] ^ (value or 1)]) + raw[at + 1:]
    return raw[:at] + bytes([value]) + raw[at:]


@SLOW
@given(st.sampled_from(["lora/adapter_model.safetensors", "lora/adapter_config.json", "recovery.safetensors"]),
       st.sampled_from(["truncate", "flip", "insert"]), st.integers(0, 10**6), st.integers(0, 255))
def test_task_dir_mutations_never_load(task_copy, name, how, at, value):
    from calora.train.artifacts import check_task_files
    from calora.train.peft_io import read_lora_dir

    path = task_copy / name
    good = path.read_bytes()
    cfg = json.loads((task_copy / "calora_config.json").read_text())
    try:
        path.write_bytes(_mutate(good, how, at, value))
        with pytest.raises(ArtifactError):
            check_task_files(task_copy, cfg)  # what load_student runs before reading any weight
        try:
            read_lora_dir(task_copy / "lora")  # without the checksum: refused or read, never a crash
        except ArtifactError:
            pass
    finally:
        path.write_bytes(good)


@SLOW
@given(st.dictionaries(st.sampled_from(["peft_type", "r", "lora_alpha", "target_modules", "use_dora",
                                        "modules_to_save", "rank_pattern", "task_type", "bogus"]), JSON, max_size=6))
def test_adapter_config_fields_never_crash(tmp_path_factory, task_copy, fields):
    from calora.train.peft_io import read_lora_dir

    folder = tmp_path_factory.mktemp("lora")
    shutil.copy(task_copy / "lora" / "adapter_model.safetensors", folder)
    base = json.loads((task_copy / "lora" / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(base | fields))
    try:
        read_lora_dir(folder)
    except ArtifactError:
        pass
