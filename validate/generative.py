"""Parity of a generative task's artifact, run by its runtime's own LLM tooling, against PyTorch.

On held-out prompts of the task's test split (prompt + reference response, as training encoded them):
- teacher-forced: one prefill over prompt + response; next-token argmax agreement and logit error at
  every response position against the compressed PyTorch model;
- KV cache: the same positions computed by a prefill of the prompt and one decode step per token
  must equal the full recomputation (an off-by-one cache position or a stale cache fails here);
- adapter effect: the artifact must sit nearer the PyTorch task model than the bare compressed
  backbone (an adapter that silently has no effect fails); swappable bundles also run with no
  adapter and must then equal the bare backbone in PyTorch;
- free-running: greedy generations token by token against PyTorch's (share identical, token
  agreement, first divergence), exact match and perplexity of artifact vs PyTorch vs the
  uncompressed teacher; prefill and decode tokens per second of the runtime.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from calora.targets.base import Stage

from . import noise_floor
from .checks import compare
from .thresholds import runtime_activations

DEFAULT_EXAMPLES = 64  # free-running generation is the slow part; --max-examples changes it


@dataclasses.dataclass(frozen=True)
class GenExamples:
    prompts: list[list[int]]  # formatted prompt ids
    targets: list[list[int]]  # reference response ids + EOS (teacher forcing)
    responses: list[str]  # reference response texts (exact match)
    source: str
    split: str


def gen_examples(name: str, cfg: dict, tokenizer, max_context: int, max_examples: int | None) -> GenExamples:
    from calora.export.gen_job import generation_block, prompt_budget
    from calora.train.gen_data import GenEncoded, PromptFormat
    from calora.train.gen_tasks import load_recorded_gen

    data = load_recorded_gen(name, cfg["task"]["record"])
    gen = generation_block(cfg, max_context)
    fmt = PromptFormat(gen["prompt_format"].get("chat_template"))
    limit = max_examples or DEFAULT_EXAMPLES
    max_response = int(cfg["task"]["generation"]["max_response_tokens"])
    enc = GenEncoded(data.splits["test"], tokenizer, fmt, min(int(cfg["task"]["max_length"]), max_context),
                     max_response, limit)
    budget = prompt_budget(gen)
    prompts = [p[-budget:] for p in enc.prompt_ids]
    targets = [ids[len(p):] for ids, p in zip(enc.input_ids, enc.prompt_ids)]
    return GenExamples(prompts, targets, list(enc.responses), str(data.record.get("source")), "test")


def _bare(student: torch.nn.Module) -> torch.nn.Module:
    """The compressed backbone alone: the student with every LoRA and recovery up-projection zeroed."""
    import copy

    from calora.train.adapters import adapted_layers

    bare = copy.deepcopy(student)
    with torch.no_grad():
        for layer in adapted_layers(bare).values():
            if layer.lora_B is not None:
                layer.lora_B.weight.zero_()
            if layer.recovery is not None:
                layer.recovery.up.weight.zero_()
    return bare.eval()


@torch.no_grad()
def _torch_logits(model: torch.nn.Module, ids: list[int]) -> np.ndarray:
    return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def _nll(logits: np.ndarray, ids: list[int], start: int) -> tuple[float, int]:
    """Summed next-token NLL of ids[start:] from logits rows start-1 .. len-2."""
    rows = torch.from_numpy(logits[start - 1:len(ids) - 1])
    target = torch.tensor(ids[start:])
    return float(torch.nn.functional.cross_entropy(rows, target, reduction="sum")), len(target)


def gen_task(entry: dict, cfg: dict, task_dir: Path, manifest: dict, runner, tok, thresholds, refs,
             max_examples: int | None, add, noise_floor_examples: int = 0) -> dict:
    """All checks of one generative task; returns the task's block of the report."""
    from calora.train.kind_generate import agreement, greedy, normalise

    name = entry["name"]
    gen = manifest["generation"]
    eos = int(gen["special_tokens"]["eos"])
    pad = gen["special_tokens"].get("pad")
    max_new = int(gen["max_new_tokens"])
    ex = gen_examples(name, cfg, tok, int(gen["max_context"]), max_examples)
    student, _ = refs.student(task_dir)
    reference, ref_label = refs.parity(task_dir, cfg, runtime_activations(manifest),
                                       manifest["runtime"].get("lm_head_activations"))
    bare = _bare(reference)
    teacher = refs.teacher(task_dir, cfg)
    n = len(ex.prompts)
    ref_rows, got_rows, cache_err, cache_flip, cache_n = [], [], 0.0, 0, 0
    nll = {"pytorch_compressed": [0.0, 0], "artifact": [0.0, 0], "teacher": [0.0, 0]}
    nearer, bare_errs, bare_scale = 0, [], 0.0
    desc = f"{manifest['target']}-{manifest['mode']}/{name}"
    for p, t in tqdm(list(zip(ex.prompts, ex.targets)), desc=f"{desc} teacher-forced", unit="ex", leave=False):
        ids = p + t
        start = len(p)
        trained = _torch_logits(student, ids)
        ref = trained if reference is student else _torch_logits(reference, ids)
        got = runner.forward_logits(name, ids)
        cached = runner.cached_logits(name, ids, start)
        full = got[start - 1:]
        cache_err = max(cache_err, float(np.abs(cached - full).max()))
        cache_flip += int((cached.argmax(-1) != full.argmax(-1)).sum())
        cache_n += len(full)
        ref_rows.append(ref[start - 1:len(ids) - 1])
        got_rows.append(got[start - 1:len(ids) - 1])
        for key, logits in (("pytorch_compressed", trained), ("artifact", got)):
            s, c = _nll(logits, ids, start)
            nll[key][0] += s
            nll[key][1] += c
        if not isinstance(teacher, str):
            s, c = _nll(_torch_logits(teacher, ids), ids, start)
            nll["teacher"][0] += s
            nll["teacher"][1] += c
        b = _torch_logits(bare, ids)[start - 1:]
        nearer += int(np.abs(full - ref[start - 1:]).mean() < np.abs(full - b).mean())
        plain = runner.bare_logits(ids)
        if plain is not None:
            bare_errs.append(float(np.abs(plain[start - 1:] - b).max()))
            bare_scale = max(bare_scale, float(np.abs(b).max()))
    ref_all, got_all = np.concatenate(ref_rows), np.concatenate(got_rows)
    values = compare(ref_all, got_all)
    tol, how = thresholds.logit_tolerance(True, values["max_abs_reference_logit"], thresholds.gen_logit_steps)
    step = values["max_abs_reference_logit"] / 127.0
    positions = values["examples"]
    gates = {"agreement": values["agreement"] >= thresholds.min_token_agreement,
             "max_abs_logit_error": values["max_abs_logit_error"] <= tol,
             "sqnr_db": values["sqnr_db"] >= thresholds.gen_min_sqnr_db}
    # A miss is put beside the reference's own float64 noise (a diagnosis; no gate moves).
    nf = noise_floor.measure_sequences(reference, [p + t for p, t in zip(ex.prompts, ex.targets)],
                                       [len(p) for p in ex.prompts], ref_rows, got_rows, noise_floor_examples,
                                       cache=refs.float64) \
        if noise_floor_examples and not all(gates.values()) else None

    def why(key: str) -> str:
        return "" if nf is None or gates[key] else noise_floor.describe(nf, key)

    add(Stage.VALUES, "teacher-forced next-token agreement", gates["agreement"],
        f"{values['agreement']:.4f} of {positions} response positions in {n} examples against {ref_label} "
        f"(min {thresholds.min_token_agreement:g})" + why("agreement"), name, values["agreement"],
        thresholds.min_token_agreement)
    add(Stage.VALUES, "max |logit error| (teacher-forced)", gates["max_abs_logit_error"],
        f"{values['max_abs_logit_error']:.4g} (tolerance {tol:.4g} = {how})" + why("max_abs_logit_error"), name,
        values["max_abs_logit_error"], tol)
    add(Stage.VALUES, "SQNR (teacher-forced)", gates["sqnr_db"],
        f"{values['sqnr_db']:.1f} dB (min {thresholds.gen_min_sqnr_db:g} dB)" + why("sqnr_db"), name,
        values["sqnr_db"], thresholds.gen_min_sqnr_db)
    cache_tol = thresholds.cache_steps * step
    cache_agree = 1.0 - cache_flip / max(cache_n, 1)
    add(Stage.VALUES, "KV-cache decoding equals full recomputation",
        cache_err <= cache_tol and cache_agree >= thresholds.cache_min_agreement,
        f"max |cached - full| {cache_err:.3g} (tolerance {cache_tol:.3g} = {thresholds.cache_steps:g} steps), "
        f"{cache_flip} argmax flips in {cache_n} positions (agreement {cache_agree:.4f}, min "
        f"{thresholds.cache_min_agreement:g}); prefill of the prompt then one decode step per token",
        name, cache_err, cache_tol)
    add(Stage.STRUCTURE, "the task adapter has its effect", nearer == n,
        f"nearer the PyTorch task model than the bare compressed backbone in {nearer} of {n} examples", name)
    if runner.bare_logits(ex.prompts[0] + ex.targets[0]) is not None:
        # The median over examples of each example's max |error|: the compressed backbone without
        # the adapter trained to recover it amplifies int8 activation rounding, so its worst example
        # is noise (SmolLM2 through XNNPACK: 5.5 in the first 8 of 32 examples, 13.6 in all 32, for
        # one program) while the median is stable (4.7) and far below what an adapter left active
        # moves (24.2; docs/results/2026-12-06/et-llm-ops/bare_backbone_error.json).
        bare_tol = thresholds.gen_logit_steps * bare_scale / 127.0
        bare_err = float(np.median(bare_errs))
        add(Stage.STRUCTURE, "no adapter leaves the backbone unchanged", bare_err <= bare_tol,
            f"backbone without an active adapter vs PyTorch compressed backbone: median over {len(bare_errs)} "
            f"examples of the max |error| {bare_err:.4g} (tolerance {bare_tol:.4g}; largest {max(bare_errs):.4g})",
            name, bare_err, bare_tol)

    pad_id = eos if pad is None else pad
    ref_gen = greedy(reference, ex.prompts, max_new, eos, pad_id, desc=f"{name} reference generate")
    trained_gen = ref_gen if reference is student else greedy(student, ex.prompts, max_new, eos, pad_id,
                                                                desc=f"{name} pytorch generate")
    runs = [runner.generate(name, p, max_new, eos)
            for p in tqdm(ex.prompts, desc=f"{desc} generate", unit="ex", leave=False)]
    got_gen = [r.tokens for r in runs]
    agree = agreement(got_gen, ref_gen)
    add(Stage.METRIC, "greedy generations token by token", agree["token_agreement"] >= thresholds.min_generation_agreement,
        f"against {ref_label}: token agreement {agree['token_agreement']:.4f} (min {thresholds.min_generation_agreement:g}), "
        f"{agree['identical']:.3f} identical, mean first divergence {agree['mean_first_divergence']:.1f}",
        name, agree["token_agreement"], thresholds.min_generation_agreement)

    _stock_runner(runner, name, ex, got_gen, tok, gen, max_new, add)

    def em(gens: list[list[int]]) -> float:
        texts = [tok.decode(g, skip_special_tokens=True) for g in gens]
        return sum(normalise(a) == normalise(b) for a, b in zip(texts, ex.responses)) / max(n, 1)

    metrics: dict[str, dict] = {}
    for key, gens in (("pytorch_compressed", trained_gen), ("artifact", got_gen)):
        s, c = nll[key]
        metrics[key] = {"exact_match": em(gens), "perplexity": math.exp(min(s / max(c, 1), 50.0))}
    if isinstance(teacher, str):
        metrics["teacher"] = {"skipped": teacher}
        add(Stage.METRIC, "uncompressed teacher evaluated", None, teacher, name)
    else:
        s, c = nll["teacher"]
        metrics["teacher"] = {"exact_match": em(greedy(teacher, ex.prompts, max_new, eos, eos if pad is None else pad,
                                                       desc=f"{name} teacher generate")),
                              "perplexity": math.exp(min(s / max(c, 1), 50.0))}
    a, p = metrics["artifact"]["exact_match"], metrics["pytorch_compressed"]["exact_match"]
    teacher_em = "" if isinstance(teacher, str) else f"; uncompressed teacher {metrics['teacher']['exact_match']:.4f}"
    add(Stage.METRIC, "exact_match vs PyTorch", p - a <= thresholds.max_metric_drop,
        f"artifact {a:.4f}, PyTorch compressed {p:.4f} (drop {p - a:+.4f}, max {thresholds.max_metric_drop:g})"
        + teacher_em, name, p - a, thresholds.max_metric_drop)
    ratio = metrics["artifact"]["perplexity"] / metrics["pytorch_compressed"]["perplexity"]
    add(Stage.METRIC, "perplexity vs PyTorch", ratio <= thresholds.max_perplexity_ratio,
        f"artifact {metrics['artifact']['perplexity']:.3f}, PyTorch compressed "
        f"{metrics['pytorch_compressed']['perplexity']:.3f} (ratio {ratio:.4f}, max {thresholds.max_perplexity_ratio:g})",
        name, ratio, thresholds.max_perplexity_ratio)
    speed = {"prefill_tokens_per_s": statistics.median(r.prefill_tokens_per_s for r in runs),
             "decode_tokens_per_s": statistics.median([r.decode_tokens_per_s for r in runs
                                                       if r.decode_s] or [float("nan")]),
             "median_prompt_tokens": statistics.median(len(p) for p in ex.prompts), "runtime": runner.runtime}
    values |= {"kv_cache_max_abs_error": cache_err, "kv_cache_argmax_flips": cache_flip, "kv_cache_positions": cache_n,
               "reference": ref_label}
    return {"examples": n, "data": {"source": ex.source, "split": ex.split, "examples": n},
            "metrics": metrics, "values": values, "logit_tolerance": {"value": tol, "rule": how},
            "generation": agree, "speed": speed, "noise_floor": nf,
            "sample": [{"response": r, "pytorch": tok.decode(g1, skip_special_tokens=True),
                        "artifact": tok.decode(g2, skip_special_tokens=True)}
                       for r, g1, g2 in list(zip(ex.responses, trained_gen, got_gen))[:3]]}


def _stock_runner(runner, name: str, ex: GenExamples, got_gen: list[list[int]], tok, gen: dict, max_new: int,
                  add, n: int = 3) -> None:
    """Where calora drives the artifact itself (ExecuTorch's Module API), also run the runtime's own
    LLM runner on a few prompts: it must load the program and produce the same text."""
    stock = getattr(runner, "stock_generate", None)
    if stock is None:
        return
    texts = [tok.decode(p, skip_special_tokens=False) for p in ex.prompts[:n]]
    outs, why = [], ""
    for text in texts:
        out, why = stock(name, text, max_new)
        if out is None:
            add(Stage.STRUCTURE, "runs in the runtime's own LLM runner", None, why, name)
            return
        outs.append(out)
    eos_text = tok.decode([int(gen["special_tokens"]["eos"])])
    want = [tok.decode(g, skip_special_tokens=True) for g in got_gen[:n]]
    got = [o.split(eos_text)[0] if eos_text else o for o in outs]
    same = sum(a.strip() == b.strip() for a, b in zip(got, want))
    add(Stage.STRUCTURE, "runs in the runtime's own LLM runner", same == len(want),
        f"{why}: {same} of {len(want)} prompts give calora's greedy text" +
        ("" if same == len(want) else f" (e.g. runner {got[0]!r} vs {want[0]!r})"), name)
