"""Bad input: one clear error naming the file or flag, a non-zero exit, and nothing half-written."""

import json
import shutil

import pytest

from calora.train.artifacts import load_student
from calora.train.cli import main
from calora.train.errors import AdapterMismatchError, ArtifactError

SMALL = ["--epochs", "30", "--lr", "2e-2", "--batch-size", "16", "--max-length", "16", "--lora-rank", "4", "--recovery-rank", "4",
         "--max-train-examples", "32", "--max-eval-examples", "16", "--compression", "int4:g32"]


def _run(capsys, *argv):
    rc = main(list(argv))
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--task", "no_such_task"], "--task 'no_such_task' is unknown"),
    (["--task", "x", "--data", "/nonexistent/file.csv"], "--data /nonexistent/file.csv: file not found"),
    (["--compression", "int4:g7"], "--compression 'int4:g7': compression.group_size must be a positive even"),
    (["--compression", "gzip"], "unknown token 'gzip'"),
    (["--backbone", "not a model"], "--backbone 'not a model'"),
    (["--task", "sst2"], "--task sst2 needs --data"),
    (["--teacher", "/nonexistent/lora"], "adapter_config.json not found"),
    (["--epochs", "0"], "epochs must be > 0"),
])
def test_bad_flags_exit_non_zero_with_one_line(capsys, tmp_path, argv, words):
    rc, err = _run(capsys, *argv, "--out", str(tmp_path / "runs"))
    assert rc == 2
    errors = [line for line in err.splitlines() if line.startswith("calora-train: error:")]
    assert len(errors) == 1 and words in errors[0], err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))


def test_group_size_that_does_not_fit_is_refused_before_the_teacher_trains(capsys, tmp_path, tiny_bert, sentiment_csv):
    argv = ["--backbone", tiny_bert, "--task", "toy", "--data", sentiment_csv, "--out", str(tmp_path), *SMALL]
    rc, err = _run(capsys, *argv[:-1], "int4:g128")  # tiny_bert's 64 hidden features: 128 does not divide them
    errors = [line for line in err.splitlines() if line.startswith("calora-train: error:")]
    assert rc == 2 and len(errors) == 1, err
    assert "--compression int4:g128: int4 group size 128 does not divide the 64 input features" in errors[0]
    assert errors[0].endswith("int4:g16, int4:g32, int4:g64") and "Traceback" not in err
    assert "teacher:" not in err and not (tmp_path / "toy" / "teacher").exists()  # refused before training
    assert not (tmp_path / "toy").exists()  # and the task folder the run had made is gone again
    new = tmp_path / "new" / "runs"  # so are the --out folders it made on the way
    rc, _ = _run(capsys, *[str(new) if a == str(tmp_path) else a for a in argv[:-1]], "int4:g128")
    assert rc == 2 and not (tmp_path / "new").exists()
    from calora.train.outputs import OutputKind, write_marker

    (tmp_path / "toy").mkdir()  # a task folder of an earlier run (its marker only) existed before: it stays
    write_marker(tmp_path / "toy", OutputKind.TASK, "calora-train")
    before = sorted(p.name for p in (tmp_path / "toy").iterdir())
    assert _run(capsys, *argv[:-1], "int4:g128")[0] == 2
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == before


def test_missing_column_and_empty_split(capsys, tmp_path, tiny_bert):
    data = tmp_path / "d.csv"
    data.write_text("sentence,label\nhello,1\n")
    rc, err = _run(capsys, "--backbone", tiny_bert, "--task", "t", "--data", str(data), "--out", str(tmp_path))
    assert rc == 2 and "--text-column 'text' not found" in err and "sentence" in err
    data.write_text("text,label,split\n" + "".join(f"good movie {i},1,train\nbad,0,test\n" for i in range(5)))
    rc, err = _run(capsys, "--backbone", tiny_bert, "--task", "t", "--data", str(data), "--out", str(tmp_path))
    assert rc == 2 and "validation split is empty" in err


def test_teacher_for_another_backbone_is_refused(capsys, tmp_path, tiny_bert, tiny_llama, sentiment_csv):
    assert main(["--backbone", tiny_bert, "--task", "toy", "--data", sentiment_csv, "--out", str(tmp_path), *SMALL]) == 0
    rc, err = _run(capsys, "--backbone", tiny_llama, "--task", "toy2", "--data", sentiment_csv, "--out", str(tmp_path),
                   "--teacher", str(tmp_path / "toy/teacher"), *SMALL)
    assert rc == 2 and "match no linear layer" in err
    assert not (tmp_path / "toy2" / "calora").exists()


def test_corrupt_or_mismatched_task_dir_is_refused(tmp_path, tiny_bert, tiny_llama, sentiment_csv):
    assert main(["--backbone", tiny_bert, "--task", "toy", "--data", sentiment_csv, "--out", str(tmp_path), *SMALL]) == 0
    good = tmp_path / "toy" / "calora"
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "recovery.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="recovery.safetensors is corrupt"):
        load_student(bad)
    shutil.rmtree(bad)
    shutil.copytree(good, bad)
    (bad / "recovery.safetensors").unlink()
    with pytest.raises(ArtifactError, match="recovery.safetensors not found"):
        load_student(bad)
    with pytest.raises(AdapterMismatchError, match="adapter was trained on backbone"):
        load_student(good, backbone=tiny_llama)
    cfg = json.loads((good / "calora_config.json").read_text())
    cfg["compression"]["spec"]["sparsity"] = 0.25  # a different compressed backbone
    (bad / "calora_config.json").write_text(json.dumps(cfg))
    shutil.copy(good / "recovery.safetensors", bad / "recovery.safetensors")
    with pytest.raises(AdapterMismatchError, match="adapter was trained on backbone"):
        load_student(bad)
