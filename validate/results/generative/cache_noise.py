"""Cached decoding against the full prefill, in PyTorch, on a trained generative task: through
calora's GrowingCache graph as exported, once correct and once with the past handed back one
position short (the off-by-one the tests export). Sizes the KV-cache gate of int8-activation
runtimes (`calora.validate.thresholds.DEFAULTS`).

    .venv/bin/python validate/results/generative/cache_noise.py RUNS/movie_dialog [N_PROMPTS]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from calora.export.decoder import GrowingCache, decoder_shape, empty_past
from calora.train.artifacts import load_student
from calora.train.backbones import load_tokenizer
from calora.validate.generative import gen_examples


def main(task_dir: str, prompts: int = 8) -> None:
    model, cfg = load_student(task_dir)
    tok = load_tokenizer(cfg["backbone"]["source"])
    ex = gen_examples(cfg["task"]["name"], cfg, tok, 128, prompts)
    shape = decoder_shape(model, 128)
    graph = GrowingCache(model, shape).eval()

    def step(ids: list[int], past: list[torch.Tensor], broken: bool):
        total = past[0].shape[2] + len(ids)
        out = graph(torch.tensor([ids]), torch.ones(1, total, dtype=torch.long),
                    torch.arange(total - len(ids), total).unsqueeze(0), *past)
        presents = list(out[1:])
        if broken:
            presents = [torch.cat([p[:, :, :1], p[:, :, :-1]], dim=2) for p in presents]
        return out[0][0].numpy(), presents

    with torch.no_grad():
        for broken in (False, True):
            err, flips, n, span = 0.0, 0, 0, 0.0
            for p, t in zip(ex.prompts, ex.targets):
                ids = p + t
                full = step(ids, empty_past(shape), False)[0][len(p) - 1:]
                logits, past = step(p, empty_past(shape), broken)
                rows = [logits[-1]]
                for i in range(len(p), len(ids)):
                    logits, past = step([ids[i]], past, broken)
                    rows.append(logits[-1])
                cached = np.stack(rows)
                err = max(err, float(np.abs(cached - full).max()))
                span = max(span, float(np.abs(full).max()))
                flips += int((cached.argmax(-1) != full.argmax(-1)).sum())
                n += len(full)
            print(f"{'off-by-one cache' if broken else 'correct cache'}: max |cached - full| {err:.3f} "
                  f"(logit range {span:.2f}), argmax agreement {1 - flips / n:.4f} over {n} positions "
                  f"of {len(ex.prompts)} prompts")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
