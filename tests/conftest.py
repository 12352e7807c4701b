"""Shared fixtures: tiny random BERT and Llama classifiers saved as local HF folders, and task files.

Tiny random models are for fast unit tests only: every claim about accuracy comes from real
weights and real data (see train/results/)."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

# The suite runs in two pytest-xdist workers (pyproject addopts) on 2 cores. With torch's default
# of one OpenMP thread per core in each, four threads fought over two cores: 8 min 54 s, against
# 6 min 15 s with one thread per worker (12 min 7 s in one process; 2026-12-07). Set before torch
# is imported, so the subprocesses tests start inherit it too; an explicit OMP_NUM_THREADS wins.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

WORDS = ("good great fine superb awful bad dull boring movie film plot actor scene story the a and "
         "but not very really quite loved hated fun mess").split()


def _tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS)]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


def _save(model, tok, folder: Path) -> str:
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = _tokenizer(folder)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return _save(BertForSequenceClassification(cfg), tok, folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = _tokenizer(folder)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return _save(LlamaForSequenceClassification(cfg), tok, folder)


def _write_sentiment(path: Path, flipped: bool) -> str:
    rng = random.Random(0)
    pos, neg, filler = ["good", "great", "superb", "loved", "fun"], ["awful", "bad", "dull", "hated", "mess"], \
        ["the", "movie", "film", "plot", "and", "really", "story"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(240):
            label = i % 2
            words = rng.sample(filler, 3) + rng.sample(pos if label else neg, 2)
            rng.shuffle(words)
            w.writerow([" ".join(words), "positive" if label != flipped else "negative"])
    return str(path)


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> str:
    """A small learnable two-class task: positive words vs negative words."""
    return _write_sentiment(tmp_path_factory.mktemp("data") / "sentiment.csv", flipped=False)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_bert) -> Path:
    """Two tiny trained tasks on one compressed tiny BERT: `toy_a` (sentiment) and `toy_b` (the
    same texts with labels flipped, so its adapter gives the opposite answers). Trained once."""
    from calora.train.cli import main

    runs = tmp_path_factory.mktemp("runs")
    data = tmp_path_factory.mktemp("data2")
    for task, flipped in (("toy_a", False), ("toy_b", True)):
        csv_path = _write_sentiment(data / f"{task}.csv", flipped)
        rc = main(["--backbone", tiny_bert, "--task", task, "--data", csv_path, "--out", str(runs),
                   "--epochs", "6", "--batch-size", "16", "--lr", "1e-2", "--max-length", "16", "--lora-rank", "4",
                   "--recovery-rank", "4", "--compression", "int4:g32+sparse:0.5+emb:int8", "--checkpoint-every", "0"])
        assert rc == 0
    return runs


@pytest.fixture(scope="session")
def tiny_export(tiny_runs, tmp_path_factory):
    """`tiny_export(target, mode, tasks=("toy_a", "toy_b"))` -> (job, out_dir, TargetResult): the
    tiny tasks lowered by one target, once per session per (target, mode, tasks); lowering is the
    slow part, so target tests and bundle tests share it. Read-only: tests that damage files copy."""
    from calora.export.job import load_job
    from calora.targets import get_target

    cache: dict = {}

    def get(target: str, mode: str, tasks: tuple[str, ...] = ("toy_a", "toy_b"), adapter_dtype: str | None = None):
        key = (target, mode, tasks, adapter_dtype)
        if key not in cache:
            job = load_job(tiny_runs, list(tasks), mode, adapter_dtype=adapter_dtype)
            out = tmp_path_factory.mktemp(f"{target}-{mode}{'-' + adapter_dtype if adapter_dtype else ''}")
            cache[key] = (job, out, get_target(target).export(job, out))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_bundle(tiny_export, tmp_path_factory):
    """`tiny_bundle(target, mode, tasks=("toy_a", "toy_b"))` -> a calora-export bundle of the tiny
    tasks (the shared `tiny_export` artifacts plus tokenizer, manifest and README, assembled as
    `export_bundle` does). Tests that damage a bundle copy it."""
    import shutil

    from calora.export.bundle import write_bundle_files

    cache: dict = {}

    def get(target: str, mode: str, tasks: tuple[str, ...] = ("toy_a", "toy_b"),
            adapter_dtype: str | None = None) -> Path:
        key = (target, mode, tasks, adapter_dtype)
        if key not in cache:
            job, out, result = tiny_export(target, mode, tasks, adapter_dtype)
            bundle = tmp_path_factory.mktemp(f"bundle-{target}-{mode}") / "bundle"
            shutil.copytree(out, bundle)
            write_bundle_files(bundle, job, target, result, f"calora-export --target {target} --mode {mode}", 0.0)
            cache[key] = bundle
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory) -> str:
    """A tiny random Llama causal LM with tied input/output embeddings (as SmolLM2 has)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-causal")
    tok = _tokenizer(folder)
    tok.eos_token, tok.bos_token = "[SEP]", "[CLS]"
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    return _save(LlamaForCausalLM(cfg), tok, folder)


@pytest.fixture(scope="session")
def gen_csv(tmp_path_factory) -> str:
    """Prompt -> response pairs a tiny model can learn: a review's words -> 'good fun' / 'bad mess'."""
    rng = random.Random(0)
    pos, neg, filler = ["good", "great", "superb", "loved"], ["awful", "bad", "dull", "hated"], \
        ["the", "movie", "film", "plot", "and", "really", "story"]
    path = tmp_path_factory.mktemp("gendata") / "gen.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "answer"])
        for i in range(200):
            good = i % 2 == 0
            words = rng.sample(filler, 3) + rng.sample(pos if good else neg, 2)
            rng.shuffle(words)
            w.writerow([" ".join(words), "good fun" if good else "bad mess"])
    return str(path)


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def make_tiny_chat(folder: Path, layers: int = 2) -> str:
    """A tiny random Llama chat model with tied embeddings and a byte-level BPE tokenizer (the kind
    every LLM runtime's tokenizer reads: ONNX Runtime GenAI, ExecuTorch's C++ HF tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.sample(list(dict.fromkeys(WORDS)), 6)) for _ in range(400)]
    corpus += ["good fun", "bad mess", "really loved hated story"] * 50
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=320, special_tokens=special,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=["<|user|>", "<|assistant|>"])
    fast.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
                      pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id, bos_token_id=fast.bos_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    return _save(LlamaForCausalLM(cfg), fast, folder)


GEN_TRAIN = ["--epochs", "3", "--batch-size", "8", "--max-length", "24", "--lora-rank", "4", "--recovery-rank", "4",
             "--max-response-tokens", "4", "--max-new-tokens", "4", "--eval-generate-examples", "8",
             "--checkpoint-every", "0", "--lora-targets", "q_proj", "v_proj", "up_proj", "down_proj", "--lr", "2e-2",
             "--max-train-examples", "120", "--max-eval-examples", "24"]


def train_gen_runs(backbone: str, data: str, runs: Path) -> Path:
    """Two tiny generative tasks on one compressed tiny chat model: `gen_a` answers 'good fun' /
    'bad mess' by the review's words, `gen_b` the opposite, so their adapters generate differently."""
    from calora.train.cli import main

    rows = list(csv.reader(open(data)))
    flipped = Path(runs).parent / "gen_b.csv"
    with flipped.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(rows[0])
        for review, answer in rows[1:]:
            w.writerow([review, "bad mess" if answer == "good fun" else "good fun"])
    for task, path in (("gen_a", data), ("gen_b", str(flipped))):
        rc = main(["--backbone", backbone, "--task", task, "--data", path, "--prompt-column", "review",
                   "--response-column", "answer", "--out", str(runs), "--compression", "int4:g32+emb:int8",
                   *GEN_TRAIN])
        assert rc == 0
    return runs


@pytest.fixture(scope="session")
def tiny_chat(tmp_path_factory) -> str:
    return make_tiny_chat(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="session")
def gen_runs(tiny_chat, gen_csv, tmp_path_factory) -> Path:
    return train_gen_runs(tiny_chat, gen_csv, tmp_path_factory.mktemp("gen-runs") / "runs")


@pytest.fixture(scope="session")
def tiny_chat_1layer(tmp_path_factory) -> str:
    return make_tiny_chat(tmp_path_factory.mktemp("tiny-chat-1layer"), layers=1)


@pytest.fixture(scope="session")
def gen_runs_1layer(tiny_chat_1layer, gen_csv, tmp_path_factory) -> Path:
    """`gen_runs` on a 1-layer tiny chat model, for the ExecuTorch generative exports only: lowering
    to XNNPACK takes 25 s per program there against 42 s at 2 layers, and the default suite lowers
    four such programs. The per-layer cache buffers stay covered on 2 layers in PyTorch
    (test_static_cache_decodes_like_the_full_forward_on_every_layer) and by the ONNX and Core ML
    exports; the 30-layer SmolLM2 programs are validated in the benchmarks."""
    return train_gen_runs(tiny_chat_1layer, gen_csv, tmp_path_factory.mktemp("gen-runs-1layer") / "runs")
