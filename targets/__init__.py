"""calora.targets: one module per export target behind `calora.targets.base.Target`.

`TARGETS` is the single registry: the CLI's `--target` choices and help come from its keys. Each
value is an import path, so listing targets (or `--help`) never imports a runtime SDK.
"""

from __future__ import annotations

import importlib

from calora.train.errors import ConfigError

TARGETS: dict[str, str] = {
    "executorch": "calora.targets.executorch:ExecuTorchTarget",
    "onnx": "calora.targets.onnx:OnnxTarget",
    "coreml": "calora.targets.coreml:CoreMLTarget",
}


def get_target(name: str):
    """Instantiate the target registered under `name`."""
    if name not in TARGETS:
        raise ConfigError(f"--target {name!r} is unknown (choices: {', '.join(TARGETS)})")
    module, _, cls = TARGETS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
