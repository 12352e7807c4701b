"""Read and write LoRA adapters as plain PEFT directories.

calora's LoRA layers use peft's parameter names, so a PEFT directory maps onto them by a key
prefix: ``base_model.model.<layer path>.lora_A.weight``; modules_to_save (the task head) are
stored as ``base_model.model.<module>.<param>``. Which layers a directory targets is decided by
peft's own matcher, so regex targets, ``layers_to_transform``, ``rank_pattern`` and
``alpha_pattern`` behave exactly as in peft.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from .adapters import AdaptedLinear, adapted_layers, wrap
from .errors import AdapterMismatchError, ArtifactError

PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


@dataclasses.dataclass
class LoraAdapter:
    """A PEFT LoRA in memory: its peft config and its tensors (keys without the peft prefix)."""

    config: "peft.LoraConfig"  # noqa: F821
    tensors: dict[str, torch.Tensor]


def new_lora_config(targets: list[str], rank: int, alpha: float, dropout: float,
                    modules_to_save: list[str], base_model: str | None, task_type: str = "SEQ_CLS"):
    from peft import LoraConfig

    return LoraConfig(task_type=task_type, r=rank, lora_alpha=alpha, lora_dropout=dropout,
                      target_modules=list(targets), modules_to_save=list(modules_to_save) or None,
                      base_model_name_or_path=base_model)


def read_lora_dir(path: str | Path) -> LoraAdapter:
    """Load a PEFT LoRA directory, refusing the variants calora cannot reproduce exactly."""
    from peft import LoraConfig
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise ArtifactError(f"{cfg_file} not found: --teacher must be a PEFT LoRA directory")
    from .artifacts import read_json  # artifacts imports this module: read at call time

    raw = read_json(cfg_file)  # refuses bad JSON, non-UTF-8 and non-objects, naming the file
    if raw.get("peft_type") != "LORA":
        raise ArtifactError(f"{cfg_file}: peft_type is {raw.get('peft_type')!r}; calora imports LORA adapters")
    for flag in ("use_dora", "use_qalora", "lora_bias", "fan_in_fan_out"):
        if raw.get(flag):
            raise ArtifactError(f"{cfg_file}: {flag}=true is not supported by calora's LoRA layers")
    if raw.get("target_parameters"):
        raise ArtifactError(f"{cfg_file}: target_parameters is not supported (only module LoRA)")
    try:
        config = LoraConfig.from_pretrained(str(path))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # peft's own refusal of a bad field
        raise ArtifactError(f"{cfg_file}: not a valid LoRA config ({type(exc).__name__}: {exc})") from None
    if not isinstance(config.r, int) or isinstance(config.r, bool) or config.r < 1 or \
            not isinstance(config.lora_alpha, (int, float)) or isinstance(config.lora_alpha, bool):
        raise ArtifactError(f"{cfg_file}: r must be a positive integer and lora_alpha a number "
                            f"(got r={config.r!r}, lora_alpha={config.lora_alpha!r})")
    weights = path / WEIGHTS_FILE
    if weights.is_file():
        try:
            raw_tensors = load_file(str(weights))
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(f"{weights} is corrupt: {exc}") from None
    elif (path / "adapter_model.bin").is_file():
        try:
            raw_tensors = torch.load(path / "adapter_model.bin", map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged pickle
            raise ArtifactError(f"{path / 'adapter_model.bin'} is corrupt ({type(exc).__name__})") from None
        if not isinstance(raw_tensors, dict):
            raise ArtifactError(f"{path / 'adapter_model.bin'}: not a state dict")
    else:
        raise ArtifactError(f"{path}: no {WEIGHTS_FILE} (or adapter_model.bin)")
    tensors = {}
    for key, value in raw_tensors.items():
        if not key.startswith(PREFIX):
            raise ArtifactError(f"{weights}: unexpected key {key!r} (expected the {PREFIX!r} prefix)")
        tensors[key[len(PREFIX):]] = value
    return LoraAdapter(config, tensors)


def write_lora_dir(model: nn.Module, config, path: str | Path) -> None:
    """Write the model's LoRA weights and its modules_to_save as a PEFT directory."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, layer in adapted_layers(model).items():
        if layer.lora_A is not None:
            tensors[f"{PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight.detach().cpu().contiguous()
            tensors[f"{PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight.detach().cpu().contiguous()
    for module in config.modules_to_save or []:
        if not hasattr(model, module):
            continue
        for pname, p in getattr(model, module).named_parameters():
            tensors[f"{PREFIX}{module}.{pname}"] = p.detach().cpu().contiguous()
    config.save_pretrained(str(path))
    save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": "pt"})


def _targets(model: nn.Module, config) -> list[str]:
    from peft.tuners.tuners_utils import check_target_module_exists

    names = []
    for name, module in model.named_modules():
        if isinstance(module, AdaptedLinear) or ".base_layer" in name:
            continue
        if not (isinstance(module, nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")):
            continue
        if check_target_module_exists(config, name):
            names.append(name)
    return names


def _pattern(pattern: dict, name: str, default):
    from peft.utils.other import get_pattern_key

    if not pattern:
        return default
    key = get_pattern_key(list(pattern.keys()), name)
    return pattern.get(key, default)


def attach_lora(model: nn.Module, config, tensors: dict[str, torch.Tensor] | None) -> list[str]:
    """Add LoRA layers to `model` as `config` says; copy `tensors` into them (and into the
    modules_to_save) when given. Every given tensor must be used and fit exactly."""
    names = _targets(model, config)
    if not names:
        raise AdapterMismatchError(f"LoRA target_modules {config.target_modules!r} match no linear layer of "
                                   f"{type(model).__name__}: the adapter was made for another backbone")
    used: set[str] = set()
    for name in names:
        rank = _pattern(config.rank_pattern, name, config.r)
        alpha = _pattern(config.alpha_pattern, name, config.lora_alpha)
        layer = wrap(model, name)
        layer.add_lora(rank, alpha, config.lora_dropout, bool(config.use_rslora))
        if tensors is None:
            continue
        for part in ("lora_A", "lora_B"):
            key = f"{name}.{part}.weight"
            if key not in tensors:
                raise AdapterMismatchError(f"adapter has no weight for layer {name} ({key})")
            _copy(getattr(layer, part).weight, tensors[key], key)
            used.add(key)
    if tensors is not None:
        for module in config.modules_to_save or []:
            if not hasattr(model, module):
                continue
            for pname, p in getattr(model, module).named_parameters():
                key = f"{module}.{pname}"
                if key in tensors:
                    _copy(p, tensors[key], key)
                    used.add(key)
        unused = sorted(set(tensors) - used)
        if unused:
            raise AdapterMismatchError(f"adapter tensors match no layer of this backbone: {unused[:5]}"
                                       f"{' ...' if len(unused) > 5 else ''}")
    return names


def _copy(param: torch.Tensor, value: torch.Tensor, key: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise AdapterMismatchError(f"layer {key}: adapter shape {tuple(value.shape)} does not fit the "
                                   f"backbone's {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


def copy_lora_dir(source: str | Path, dest: Path) -> list[str]:
    """Copy a PEFT LoRA directory's adapter files (config + weights) into `dest` (an existing folder)
    and record where they came from in `imported.json` (source path and each file's sha256)."""
    import hashlib
    import shutil

    source = Path(source)
    copied = {}
    for name in (CONFIG_FILE, WEIGHTS_FILE, "adapter_model.bin"):
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)
            copied[name] = hashlib.sha256((dest / name).read_bytes()).hexdigest()
    (dest / "imported.json").write_text(json.dumps({"imported_from": str(source.resolve()), "sha256": copied},
                                                   indent=2, sort_keys=True) + "\n")
    return sorted(copied)
