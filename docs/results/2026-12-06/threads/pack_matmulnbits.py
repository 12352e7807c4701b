"""How the packed variants of decode_step_threads2.json were made from existing bundles
(2026-12-06), before calora's exporter packed them itself (`calora.targets.onnx_pack`, adopted after
this measurement: exact, the logits and presents of a decode step bit-identical; 3-7% faster per
step at 2 threads).

    python pack_matmulnbits.py BUNDLE/onnx/TASK/model.onnx OUT_FOLDER    # writes model.onnx + model.ort
"""
from calora.targets.onnx_pack import pack_shared_input_matmulnbits

if __name__ == "__main__":
    import shutil
    import sys
    from pathlib import Path

    import onnx

    from calora.targets.onnx import _to_ort

    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    model = onnx.load(str(src))
    print("MatMulNBits nodes fewer:", pack_shared_input_matmulnbits(model))
    dst.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst / "model.onnx"))
    _to_ort(dst / "model.onnx", dst / "model.ort")
    shutil.copy(src.parent / "genai_config.json", dst / "genai_config.json")
