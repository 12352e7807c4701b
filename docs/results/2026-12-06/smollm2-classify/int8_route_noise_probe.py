"""Is the int8 route's parity miss on SmolLM2 a mismatch or the noise floor of per-tensor int8
activations over 30 layers? The ONNX Runtime artifact's logits, and two other equally valid
computations of the same trained model in PyTorch, are compared with the reference calora-validate
uses (the trained model in float32, batches of 64):

- the same model run one example per call (other GEMM blockings: float32 sums in another order);
- the same model in float64 (its int8 activation codes come from float64 products).

If the PyTorch variants stray from the reference about as far as the artifact does, rounding flips
of int8 activation codes amplified through the layers explain the artifact's error, not a
difference in what it computes. Per-example error against the count of real tokens is recorded
too (pad positions enter the per-tensor ranges).

    python docs/results/2026-12-06/smollm2-classify/int8_route_noise_probe.py \\
        bench_runs/smol-cls/bundles-int8/onnx-baked bench_runs/smol-cls/runs-int8 600 \\
        docs/results/2026-12-06/smollm2-classify/int8_route_noise_probe.json
"""

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from calora.export.manifest import read_manifest
    from calora.targets import get_target
    from calora.train.artifacts import read_json
    from calora.train.backbones import load_tokenizer
    from calora.validate.checks import compare
    from calora.validate.references import References, encode, eval_data, find_task_dir

    bundle, runs, n, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    t_start = time.time()
    manifest = read_manifest(bundle)
    entry = manifest["tasks"][0]
    task_dir = find_task_dir(entry["name"], entry, runs)
    cfg = read_json(task_dir / "calora_config.json")
    data = eval_data(entry["name"], cfg, None, n)
    length = int(manifest["max_sequence_length"])
    ids, mask = encode(load_tokenizer(cfg["backbone"]["source"]), list(data.texts), length)

    refs = References()
    student, _ = refs.student(task_dir)
    with torch.no_grad():
        ref = refs.logits(task_dir, "student", student, ids, mask)
        one = np.concatenate([student(input_ids=torch.as_tensor(ids[i:i + 1]), attention_mask=torch.as_tensor(mask[i:i + 1]))
                              .logits.float().numpy() for i in range(len(ids))])
        f64 = student.double()
        dbl = np.concatenate([f64(input_ids=torch.as_tensor(ids[i:i + 64]), attention_mask=torch.as_tensor(mask[i:i + 64]))
                              .logits.double().numpy() for i in range(0, len(ids), 64)])
    runner = get_target(manifest["target"]).open(bundle, manifest)
    got = np.concatenate([runner.logits(entry["name"], ids[i:i + 32], mask[i:i + 32]) for i in range(0, len(ids), 32)])

    lengths = mask.sum(1)
    rows = {}
    for name, x in (("artifact (ONNX Runtime)", got), ("PyTorch, one example per call", one),
                    ("PyTorch, float64", dbl)):
        c = compare(ref, x)
        per_ex = np.abs(ref - x).max(1)
        c["corr_error_real_tokens"] = float(np.corrcoef(per_ex, lengths)[0, 1]) if per_ex.std() > 0 else None
        rows[name] = c
        print(name, {k: round(v, 5) if isinstance(v, float) else v for k, v in c.items()})
    rows["artifact against PyTorch float64"] = compare(dbl, got)
    record = {"command": "python " + " ".join(sys.argv), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()} x{os.cpu_count()} cores (CPU-X)", "seconds": round(time.time() - t_start),
              "bundle": str(bundle), "examples": len(ids), "tokens": length,
              "reference": "the trained model in float32, batches of 64 (calora-validate's)", "rows": rows}
    Path(out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
