"""What a user would ship instead of calora for generation: the uncompressed backbone with the
task's LoRA merged, quantized to int4 by onnxruntime-genai's own model builder (RTN, one scale per
block of 32), as its documentation shows. No compression-aware training, no recovery.

    python -m benchmarks.gen_alternative --runs RUNS --task movie_dialog --out WORK/og-int4-movie_dialog

`benchmarks.gen_decode --work DIR` builds it the same way (once per work folder) and times it
beside calora's bundles. The folder is built beside `--out` and renamed into place; an existing
`--out` that is not such a folder is refused, never overwritten.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path


def build(task_dir: Path, config: dict, out: Path, precision: str = "int4") -> Path:
    """Merge the task's teacher LoRA into its uncompressed backbone and run onnxruntime-genai's
    builder (`python -m onnxruntime_genai.models.builder -p int4 -e cpu`) into `out`."""
    from calora.train.backbones import load_causal_lm, load_tokenizer
    from calora.validate.references import teacher_dir
    from peft import PeftModel

    if (out / "genai_config.json").is_file():
        return out  # built before
    if out.exists():
        raise SystemExit(f"--out {out}: exists and is not an onnxruntime-genai folder built here; "
                         "choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp:
        merged, built = Path(tmp) / "merged", Path(tmp) / "built"
        model = load_causal_lm(config["backbone"]["source"])
        model = PeftModel.from_pretrained(model, str(teacher_dir(task_dir, config))).merge_and_unload()
        model.save_pretrained(str(merged))
        load_tokenizer(config["backbone"]["source"]).save_pretrained(str(merged))
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(merged), "-o", str(built),
                        "-p", precision, "-e", "cpu", "-c", str(Path(tmp) / "cache")],
                       check=True, stdout=subprocess.DEVNULL)
        built.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="calora_runs")
    ap.add_argument("--task", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from calora.train.artifacts import read_json

    task_dir = Path(args.runs) / args.task / "calora"
    print(build(task_dir, read_json(task_dir / "calora_config.json"), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
