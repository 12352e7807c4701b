"""The generative side of `load_job`: smoke prompts and the generation block of the manifest."""

from __future__ import annotations

from calora.targets.base import ExportJob, Mode, TaskModel
from calora.train.errors import ArtifactError, CaloraError, ConfigError

SMOKE_PROMPTS = 4


def generation_block(cfg: dict, max_context: int) -> dict:
    """What an app needs to generate with a bundle: the prompt format (chat template), special token
    ids, maximum context, and the sampling defaults the task was evaluated with (greedy)."""
    task = cfg["task"]
    gen = task.get("generation", {})
    special = task.get("special_tokens", {})
    if special.get("eos") is None:
        raise ConfigError(f"task {task['name']!r}: its tokenizer has no EOS token; a generation could never end")
    return {"prompt_format": task["prompt_format"], "special_tokens": special, "max_context": int(max_context),
            "max_prompt_tokens": int(task["max_length"]) - int(gen.get("max_response_tokens", 0)),
            "max_new_tokens": int(gen.get("max_new_tokens", 32)),
            "sampling": {"do_sample": False, "temperature": 0.0, "top_k": 1, "top_p": 1.0,
                         "rule": "greedy, as calora-train evaluated the task; apps may sample"}}


def prompt_budget(generation: dict) -> int:
    """Prompt tokens an app may feed so that max_new_tokens still fit in the context."""
    return max(1, min(generation["max_prompt_tokens"], generation["max_context"] - generation["max_new_tokens"]))


def generative_job(tasks: tuple[TaskModel, ...], mode: Mode, spec, fingerprint: str, max_length: int,
                   tokenizer) -> ExportJob:
    from calora.train.gen_data import PromptFormat, prompt_ids
    from calora.train.gen_tasks import load_recorded_gen

    blocks = [generation_block(t.config, max_length) for t in tasks]
    for t, b in zip(tasks[1:], blocks[1:]):
        if b["prompt_format"] != blocks[0]["prompt_format"] or b["special_tokens"] != blocks[0]["special_tokens"]:
            raise ConfigError(f"--task {t.name!r}: its prompt format or special tokens differ from "
                              f"{tasks[0].name!r}'s; one bundle shares one tokenizer and template")
    from calora.export.decoder import decoder_shape

    shape = decoder_shape(tasks[0].model, max_length)
    generation = dict(blocks[0], max_new_tokens=max(b["max_new_tokens"] for b in blocks),
                      kv_cache_shape=[shape.layers, 1, shape.kv_heads, shape.max_context, shape.head_dim])
    if generation["max_new_tokens"] >= max_length:
        raise ConfigError(f"--max-length {max_length}: leaves no room for a prompt before "
                          f"{generation['max_new_tokens']} new tokens")
    fmt = PromptFormat(generation["prompt_format"].get("chat_template"))
    budget = prompt_budget(generation)
    prompts: list[tuple[int, ...]] = []
    texts: list[str] = []
    unreadable: list[str] = []
    for t in tasks:
        try:
            test = load_recorded_gen(t.name, t.config["task"]["record"]).splits["test"]
        except CaloraError as exc:  # moved data: smoke on the other tasks' prompts
            unreadable.append(f"{t.name}: {exc}")
            continue
        for p in test.prompts[:SMOKE_PROMPTS]:
            prompts.append(tuple(prompt_ids(tokenizer, fmt, p, budget)))
            texts.append(p)
    if not prompts:
        raise ArtifactError("no test prompts could be read for the smoke comparison: " + "; ".join(unreadable))
    return ExportJob(tasks, mode, spec, fingerprint, max_length, tokenizer, tuple(texts), kind="generate",
                     smoke_prompts=tuple(prompts), generation=generation)
