"""The one reader of a bundle's manifest.json: schema version and structure checked in one place.

Everything downstream (validation, the target runtimes, the README writer) indexes the manifest by
key; this loader guarantees those keys exist with the right types, so a damaged or foreign file is
one `ArtifactError` naming the file and the field, never a KeyError or TypeError deep inside.
A manifest from a newer calora (a higher schema version) is refused with the version it needs.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from calora.train.errors import ArtifactError

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1

_OPT = object()  # marks an optional key in the shapes below
_FILE = {"path": str, "role": str, "task": (str, type(None)), "bytes": int, "sha256": str}
_TENSOR = {"name": str, "dtype": str, "shape": list}
_TASK = {"name": str, "label_names": [str], "num_labels": int, "backbone_fingerprint": str,
         "adapter_fingerprint": str, "files": [_FILE], ("task_dir", _OPT): (str, type(None))}
_GENERATION = {"prompt_format": {"kind": str, "chat_template": (str, type(None))},
               "special_tokens": {"eos": int, "bos": (int, type(None)), "pad": (int, type(None))},
               "max_context": int, "max_prompt_tokens": int, "max_new_tokens": int, "sampling": dict}
_SHAPE = {
    "schema_version": int, "target": str, "mode": str, "runtime": dict, "versions": dict,
    ("kind", _OPT): str, ("generation", _OPT): _GENERATION, ("adapter_dtype", _OPT): str,
    "backbone": {"source": str, "family": str, "fingerprint": str,
                 "compression": {"spec": dict, "text": str}, "files": [_FILE]},
    "tasks": [_TASK], "inputs": [_TENSOR], "outputs": [_TENSOR], "max_sequence_length": int,
    "tokenizer": {"dir": str, "files": [str]}, "validation": dict, ("command", _OPT): str,
}


def _check(value: Any, shape: Any, where: str, problems: list[str]) -> None:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            problems.append(f"{where or 'the file'} must be an object, found {type(value).__name__}")
            return
        for key, sub in shape.items():
            name, optional = (key[0], True) if isinstance(key, tuple) else (key, False)
            if name not in value:
                if not optional:
                    problems.append(f"{where + '.' if where else ''}{name} is missing")
                continue
            _check(value[name], sub, f"{where + '.' if where else ''}{name}", problems)
    elif isinstance(shape, list):
        if not isinstance(value, list):
            problems.append(f"{where} must be a list, found {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, shape[0], f"{where}[{i}]", problems)
    else:
        types = shape if isinstance(shape, tuple) else (shape,)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"{where} must be {names}, found {type(value).__name__}")


def check_manifest(data: Any, path: Path | str = MANIFEST_FILE) -> dict:
    """Return `data` if it is a structurally valid manifest of a schema this calora reads."""
    from calora.targets import TARGETS
    from calora.targets.base import Mode

    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: not a calora manifest (a JSON {type(data).__name__}, expected an object)")
    version = data.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_SCHEMA_VERSION:
        raise ArtifactError(f"{path}: manifest schema {version} is newer than this calora reads "
                            f"({MANIFEST_SCHEMA_VERSION}); upgrade calora to read this bundle")
    problems: list[str] = []
    _check(data, _SHAPE, "", problems)
    if not problems:
        if version != MANIFEST_SCHEMA_VERSION:
            problems.append(f"schema_version {version!r} is not one this calora reads ({MANIFEST_SCHEMA_VERSION})")
        if data["target"] not in TARGETS:
            problems.append(f"target {data['target']!r} is unknown (choices: {', '.join(TARGETS)})")
        if data["mode"] not in {m.value for m in Mode}:
            problems.append(f"mode {data['mode']!r} is unknown")
        if not data["tasks"]:
            problems.append("tasks is empty")
        names = [t["name"] for t in data["tasks"]]
        if len(set(names)) != len(names):
            problems.append(f"a task is listed twice in {names}")
        for f in data["backbone"]["files"] + [f for t in data["tasks"] for f in t["files"]]:
            p = PurePosixPath(f["path"])
            if p.is_absolute() or ".." in p.parts or not f["path"]:
                problems.append(f"file path {f['path']!r} is not inside the bundle")
        for t in data["tasks"]:
            if t["num_labels"] != len(t["label_names"]):
                problems.append(f"task {t['name']!r}: num_labels {t['num_labels']} != {len(t['label_names'])} names")
        kind = data.get("kind", "classify")  # bundles from before generative export have no kind
        if kind not in ("classify", "generate"):
            problems.append(f"kind {kind!r} is unknown (classify, generate)")
        elif kind == "generate" and "generation" not in data:
            problems.append("generation is missing (a generative bundle records its prompt format and context)")
        from calora.targets.base import AdapterDType

        if data.get("adapter_dtype", "float32") not in {d.value for d in AdapterDType}:
            problems.append(f"adapter_dtype {data['adapter_dtype']!r} is unknown "
                            f"({', '.join(d.value for d in AdapterDType)})")
        if data["max_sequence_length"] < 1:
            problems.append(f"max_sequence_length {data['max_sequence_length']} must be >= 1")
    if problems:
        raise ArtifactError(f"{path}: not a valid calora manifest: {'; '.join(problems[:5])}"
                            + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    return data


def read_manifest(bundle: str | Path) -> dict:
    """The checked manifest of the bundle folder `bundle`."""
    from calora.train.artifacts import read_json

    bundle = Path(bundle)
    path = bundle / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{bundle}: no {MANIFEST_FILE} there (is it a calora-export bundle?)")
    return check_manifest(read_json(path), path)
