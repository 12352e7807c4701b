"""The `generate` task kind on a tiny random Llama with tied embeddings: response-only loss,
KL distillation, tied head kept in the backbone, bit-exact reload, PEFT CAUSAL_LM in and out, and
the calora-generate CLI."""

from __future__ import annotations

import json

import pytest
import torch

from calora.train.cli import main as train_main

GEN = ["--epochs", "3", "--batch-size", "8", "--max-length", "24", "--lora-rank", "4", "--recovery-rank", "4",
       "--lr", "5e-3", "--max-response-tokens", "4", "--max-new-tokens", "4", "--eval-generate-examples", "16",
       "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def gen_run(tiny_causal, gen_csv, tmp_path_factory):
    runs = tmp_path_factory.mktemp("genruns")
    rc = train_main(["--backbone", tiny_causal, "--task", "reviews", "--data", gen_csv, "--prompt-column", "review",
                     "--response-column", "answer", "--out", str(runs), "--compression", "int4:g32+emb:int8", *GEN,
                     "--lora-targets", "q_proj", "v_proj", "up_proj", "down_proj", "--lr", "2e-2"])
    assert rc == 0
    return runs


def _tok(path):
    from calora.train.backbones import load_tokenizer

    return load_tokenizer(path)


def test_response_only_loss_mask(tiny_causal):
    from calora.train.gen_data import IGNORE, GenCollator, GenEncoded, PromptFormat
    from calora.train.gen_tasks import GenSplit

    tok = _tok(tiny_causal)
    data = GenEncoded(GenSplit(("the movie good", "bad plot and the story"), ("good fun", "bad")), tok,
                      PromptFormat.of(tok), max_length=24, max_response=8)
    batch = GenCollator(data.pad_id)([data[0], data[1]])
    for row in range(2):
        p = len(data.prompt_ids[row])
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        assert (labels[:p] == IGNORE).all()  # no loss on the prompt
        n = int(batch["attention_mask"][row].sum())
        assert torch.equal(labels[p:n], ids[p:n]) and int(labels[n - 1]) == tok.eos_token_id  # response + EOS
        assert (labels[n:] == IGNORE).all()  # nor on padding
    assert tok.decode(data.input_ids[0][len(data.prompt_ids[0]):-1]) == "good fun"


def test_task_loss_sees_only_response_tokens():
    from calora.train.kind_generate import GenerateObjective

    class Out:
        def __init__(self, logits):
            self.logits = logits

    torch.manual_seed(0)
    logits = torch.randn(1, 6, 10)
    labels = torch.tensor([[-100, -100, -100, 4, 7, 2]])
    base = GenerateObjective().task_loss(Out(logits), {"labels": labels})
    changed = logits.clone()
    changed[0, :2] = torch.randn(2, 10) * 5  # positions 0-1 predict prompt tokens: must not count
    assert torch.allclose(GenerateObjective().task_loss(Out(changed), {"labels": labels}), base)
    changed[0, 3, 7] += 3.0  # position 3 predicts response token 7: must count
    assert not torch.allclose(GenerateObjective().task_loss(Out(changed), {"labels": labels}), base)


def test_kl_distillation_is_zero_iff_student_equals_teacher():
    from calora.train.config import CALoRASettings
    from calora.train.kind_generate import GenerateObjective

    class Out:
        def __init__(self, logits):
            self.logits = logits

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 2], [-100, 6, 7, 2, -100]])
    batch = {"labels": labels, "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    for temperature in (1.0, 2.0):
        s = CALoRASettings(kl_temperature=temperature)
        same = GenerateObjective().distill_loss(Out(logits), None, logits.clone(), batch, s)
        assert abs(float(same)) < 1e-6
        other = GenerateObjective().distill_loss(Out(logits), None, logits + torch.randn_like(logits), batch, s)
        assert float(other) > 1e-3
    # Only response positions count: a different teacher on prompt positions changes nothing.
    t = logits.clone()
    t[0, 0] += 5.0  # position 0 of row 0 predicts a prompt token
    assert abs(float(GenerateObjective().distill_loss(Out(logits), None, t, batch, CALoRASettings()))) < 1e-6


def test_tied_embeddings_stay_tied_and_outside_the_adapter(tiny_causal):
    from calora.train.backbones import head_modules, load_causal_lm
    from calora.train.compress import compress_model, fingerprint
    from calora.train.quant import QuantEmbedding, TiedLMHead
    from calora.train.spec import CompressionSpec

    model = compress_model(load_causal_lm(tiny_causal), CompressionSpec.parse("int4:g32+emb:int8"))
    emb = model.get_input_embeddings()
    assert isinstance(emb, QuantEmbedding) and isinstance(model.lm_head, TiedLMHead)
    assert model.lm_head.embedding is emb and head_modules(model) == []
    hidden = torch.randn(2, 3, 64)
    assert torch.equal(model.lm_head(hidden), hidden @ emb.weight.T)  # the head reads the int8 table
    assert not any(p.requires_grad for p in model.parameters())
    assert fingerprint(model).startswith("sha256:")


def test_gen_task_dir_reloads_bit_exactly_and_peft_loads_it(gen_run, tiny_causal):
    from calora.train.artifacts import load_student
    from calora.train.kind_generate import greedy

    task = gen_run / "reviews" / "calora"
    cfg = json.loads((task / "calora_config.json").read_text())
    assert cfg["task"]["kind"] == "generate" and cfg["task"]["prompt_format"]["kind"] == "plain"
    assert cfg["lora"]["modules_to_save"] == [] and cfg["task"]["special_tokens"]["eos"] is not None
    lora_cfg = json.loads((task / "lora" / "adapter_config.json").read_text())
    assert lora_cfg["task_type"] == "CAUSAL_LM"
    from safetensors.torch import load_file

    tensors = load_file(str(task / "lora" / "adapter_model.safetensors"))
    assert not any("lm_head" in k or "embed" in k for k in tensors)  # the adapter stays small
    metrics = json.loads((task / "metrics.json").read_text())
    assert metrics["teacher"]["test"]["exact_match"] > 0.8, metrics["teacher"]["test"]
    assert 0 <= metrics["student"]["test"]["agreement_with_teacher"]["token_agreement"] <= 1
    a, _ = load_student(task)
    b, _ = load_student(task)
    ids = torch.tensor([[5, 9, 12, 7, 3]])
    with torch.no_grad():
        assert torch.equal(a(input_ids=ids).logits, b(input_ids=ids).logits)
    out = greedy(a, [[5, 9, 12]], 4, eos=a.config.eos_token_id, pad=0, show=False)
    assert len(out) == 1 and len(out[0]) <= 4
    # peft alone loads the LoRA directory as a CAUSAL_LM adapter on the uncompressed backbone.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_causal), str(task / "lora"))
    assert peft_model.peft_config["default"].task_type == "CAUSAL_LM"


def test_peft_causal_lm_lora_imports_as_teacher(tiny_causal, gen_csv, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_causal),
                           LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(tmp_path / "their-lora")
    runs = tmp_path / "runs"
    rc = train_main(["--backbone", tiny_causal, "--task", "reviews", "--data", gen_csv, "--prompt-column", "review",
                     "--response-column", "answer", "--teacher", str(tmp_path / "their-lora"), "--out", str(runs),
                     "--compression", "int4:g32", *GEN, "--epochs", "1"])
    assert rc == 0, capsys.readouterr().err
    assert (runs / "reviews" / "teacher" / "imported.json").is_file()
    # A SEQ_CLS LoRA for a generate task is refused, naming both.
    cls = json.loads((tmp_path / "their-lora" / "adapter_config.json").read_text()) | {"task_type": "SEQ_CLS"}
    (tmp_path / "their-lora" / "adapter_config.json").write_text(json.dumps(cls))
    rc = train_main(["--backbone", tiny_causal, "--task", "other", "--data", gen_csv, "--prompt-column", "review",
                     "--response-column", "answer", "--teacher", str(tmp_path / "their-lora"), "--out", str(runs),
                     *GEN])
    assert rc == 2 and "a SEQ_CLS LoRA, but task 'other' is a generate task" in capsys.readouterr().err


def test_generate_cli_streams(gen_run, capsys):
    from calora.train.generate_cli import main

    assert main(["--task", "reviews", "--runs", str(gen_run), "--prompt", "the movie good great",
                 "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert out.strip(), out
    assert main(["--task", "nope", "--runs", str(gen_run), "--prompt", "x"]) == 2


def test_offline_generative_tasks_are_real_and_split_like_their_sources():
    from calora.train.gen_tasks import GenMetric, load_gen_task
    from calora.train.tasks import load_task

    rt, rt_gen = load_task("rotten_tomatoes"), load_gen_task("rotten_tomatoes_gen")
    for split in ("train", "validation", "test"):  # the same reviews in the same splits: comparable results
        assert len(rt.splits[split]) == len(rt_gen.splits[split])
        assert all(text in prompt for text, prompt in zip(rt.splits[split].texts[:50], rt_gen.splits[split].prompts))
    assert set(rt_gen.splits["test"].responses) == {"positive", "negative"} and rt_gen.metric == GenMetric.EXACT_MATCH
    dialog = load_gen_task("movie_dialog")
    assert dialog.metric == GenMetric.PERPLEXITY and sum(dialog.record["counts"].values()) > 60_000
    # Blocks of 100 consecutive rows keep a conversation in one split; only stock lines ("what?",
    # "yes.") recur across conversations (measured: 647 of 9,699 test prompts, 6.7%).
    shared = set(dialog.splits["train"].prompts) & set(dialog.splits["test"].prompts)
    assert len(shared) < 0.1 * len(dialog.splits["test"]) and sum(len(p) for p in shared) / len(shared) < 40


def test_generate_specific_flags_are_checked(capsys, tiny_causal, gen_csv, tmp_path):
    base = ["--backbone", tiny_causal, "--task", "r", "--data", gen_csv, "--prompt-column", "review",
            "--response-column", "answer", "--out", str(tmp_path / "runs")]
    for extra, words in ((["--teacher-outputs", "cache"], "--teacher-outputs cache"),
                         (["--kl-temperature", "0"], "--kl-temperature must be"),
                         (["--max-response-tokens", "0"], "--max-response-tokens must be"),
                         (["--response-column", "nope"], "--response-column 'nope' not found")):
        assert train_main([*base, *extra]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "runs" / "r" / "calora").exists()


def test_trained_generative_student_reloads_bit_exactly(tiny_causal, gen_csv, tmp_path):
    """The model calora-train trained and the one load_student rebuilds from the task directory
    give identical logits (the reference the next stages compare artifacts with)."""
    from calora.train.artifacts import load_student
    from calora.train.cli import build_parser, config_from_args
    from calora.train.pipeline import fit_student, prepare, run_record
    from calora.train.artifacts import save_student

    args = build_parser().parse_args(["--backbone", tiny_causal, "--task", "r", "--data", gen_csv, "--prompt-column",
                                      "review", "--response-column", "answer", "--out", str(tmp_path),
                                      "--compression", "int4:g32+sparse:0.5+emb:int8", *GEN, "--epochs", "1"])
    ctx = prepare(config_from_args(args))
    model, out, info, lora_config = fit_student(ctx, ctx.cfg.calora)
    save_student(model.cpu(), lora_config, tmp_path / "r" / "calora",
                 run_record(ctx, ctx.cfg.calora, info, lora_config, info["seed"]), out)
    reloaded, _ = load_student(tmp_path / "r" / "calora")
    ids = torch.tensor([ctx.sets["test"].input_ids[0]])
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids).logits, reloaded(input_ids=ids).logits)


def test_max_examples_all_means_the_whole_split_also_for_generation(capsys):
    """`--max-train-examples all` lifts the generative kind's CPU-sized cap (a GPU host's full
    schedule); a number keeps its meaning, and anything else is one clear flag error."""
    from calora.train.cli import build_parser, config_from_args
    from calora.train.config import KIND_TRAIN_DEFAULTS

    base = ["--backbone", "smollm2-135m", "--task", "movie_dialog"]
    default = config_from_args(build_parser().parse_args(base)).train
    assert default.max_train_examples == KIND_TRAIN_DEFAULTS["generate"]["max_train_examples"]
    full = config_from_args(build_parser().parse_args([*base, "--max-train-examples", "all",
                                                       "--max-eval-examples", "ALL"])).train
    assert full.max_train_examples is None and full.max_eval_examples is None
    assert config_from_args(build_parser().parse_args([*base, "--max-train-examples", "640"])).train.max_train_examples == 640
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--max-train-examples", "most"])
    assert "--max-train-examples" in capsys.readouterr().err
