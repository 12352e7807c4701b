"""How far a swappable ExecuTorch program run with all-zero adapter inputs is from the PyTorch
compressed backbone (validation's "no adapter leaves the backbone unchanged" check), on more
examples than validation's 8, for two exports of the same task; and how far the task adapter moves
the logits (what the check must still tell apart). One-off measurement script of 2026-12-06.

    python docs/results/2026-12-06/et-llm-ops/bare_backbone_error.py OUT.json BUNDLE...
"""
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from calora.export.manifest import read_manifest
from calora.targets import get_target
from calora.validate.generative import _bare, _torch_logits, gen_examples
from calora.validate.references import References, find_task_dir
from calora.train.artifacts import read_json

out_path, bundles = Path(sys.argv[1]), [Path(b) for b in sys.argv[2:]]
runs, task, n = "bench_runs/runs-gen", "movie_dialog", 32
m0 = read_manifest(bundles[0])
entry = next(t for t in m0["tasks"] if t["name"] == task)
task_dir = find_task_dir(task, entry, runs)
cfg = read_json(task_dir / "calora_config.json")
tok = AutoTokenizer.from_pretrained(str(bundles[0] / "tokenizer"))
ex = gen_examples(task, cfg, tok, int(m0["generation"]["max_context"]), n)
student, _ = References().student(task_dir)
bare = _bare(student)
torch_bare = [_torch_logits(bare, p + t)[len(p) - 1:] for p, t in zip(ex.prompts, ex.targets)]
torch_task = [_torch_logits(student, p + t)[len(p) - 1:] for p, t in zip(ex.prompts, ex.targets)]
scale = max(float(np.abs(b).max()) for b in torch_bare)
effect_mean = [float(np.abs(a - b).mean()) for a, b in zip(torch_task, torch_bare)]
rows = {"adapter_effect": {"max_abs": max(float(np.abs(a - b).max()) for a, b in zip(torch_task, torch_bare)),
                           "per_example_max": [round(float(np.abs(a - b).max()), 3) for a, b in zip(torch_task, torch_bare)],
                           "per_example_mean": [round(x, 4) for x in effect_mean]}}
for b in bundles:
    m = read_manifest(b)
    runner = get_target(m["target"]).open(b, m)
    per, flips, count, num, den, ratio = [], 0, 0, 0.0, 0.0, []
    for (p, t), ref in zip(zip(ex.prompts, ex.targets), torch_bare):
        got = runner.bare_logits(p + t)[len(p) - 1:]
        per.append(round(float(np.abs(got - ref).max()), 3))
        ratio.append(round(float(np.abs(got - ref).mean()) / effect_mean[len(ratio)], 4))
        flips += int((got.argmax(-1) != ref.argmax(-1)).sum())
        count += len(ref)
        num += float((ref ** 2).sum())
        den += float(((ref - got) ** 2).sum())
    rows[str(b)] = {"max_abs": max(per), "median_of_example_max": float(np.median(per)),
                    "first_8_max": max(per[:8]), "per_example_max": per,
                    "argmax_agreement": 1 - flips / count, "max_mean_error_over_mean_adapter_effect": max(ratio),
                    "per_example_mean_error_over_mean_adapter_effect": ratio, "sqnr_db": 10 * np.log10(num / den)}
record = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
          "machine": f"{platform.machine()} {platform.processor()} x{__import__('os').cpu_count()} cores",
          "examples": len(ex.prompts), "tolerance_20_steps": 20 * scale / 127, "max_abs_bare_reference_logit": scale,
          "rows": rows}
out_path.write_text(json.dumps(record, indent=2))
for k, v in rows.items():
    print(k, {x: y for x, y in v.items() if not x.startswith("per_example")})
print("tolerance", record["tolerance_20_steps"])
