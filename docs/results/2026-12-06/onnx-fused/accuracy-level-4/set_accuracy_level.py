"""How the accuracy_level 4 bundles of this folder were made (run once per bundle copy, 2026-12-06):
every MatMulNBits of a copied bundle's model.onnx gets accuracy_level 4, then the .ort is rebuilt
with calora's own converter. The copy's manifest still records the original file hashes, which is
why its validation also reports two `files` failures (parity-acc4-op-by-op-onnx-baked-dense).

    python set_accuracy_level.py COPY/onnx/movie_dialog/model.onnx      # generative bundles
    python set_accuracy_level.py COPY/onnx/rotten_tomatoes.onnx ...      # classification bundles
"""
import sys
from pathlib import Path

import onnx

from calora.targets.onnx import _to_ort

for arg in sys.argv[1:]:
    path = Path(arg)
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a for a in node.attribute}
            if "accuracy_level" in attrs:
                attrs["accuracy_level"].i = 4
            else:
                node.attribute.append(onnx.helper.make_attribute("accuracy_level", 4))
    onnx.save(model, str(path))
    # generative folders hold model.onnx + model.ort; classification bundles TASK.onnx + TASK.ort
    _to_ort(path, path.with_name("model.ort") if path.name == "model.onnx" else path.with_suffix(".ort"))
