"""A Core ML bundle opened for `calora-validate`.

On macOS the packages run in Apple's runtime (`MLModel.predict`, the function chosen with
`function_name` in swappable mode). Elsewhere `MLModel.predict` does not exist, so each function's
saved program is evaluated op by op with coremltools' own reference implementations
(`coreml_mil.evaluate`): a program-level check, labelled as such in every report row, never passed
off as Apple's runtime.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from calora.targets.base import Finding, Stage

APPLE_RUNTIME = "Core ML runtime (MLModel.predict, macOS)"


class CoreMLRunner:
    def __init__(self, bundle: Path, manifest: dict) -> None:
        import coremltools as ct

        self.bundle, self.manifest = bundle, manifest
        self.swappable = manifest["mode"] == "swappable"
        self.apple = sys.platform == "darwin"
        self.runtime = APPLE_RUNTIME if self.apple else (
            f"coremltools {ct.__version__} MIL reference evaluator (program-level check, not Apple's runtime)")
        self._programs: dict[tuple[str, str], object] = {}

    def _package(self, task: str) -> tuple[Path, str]:
        """(.mlpackage, function name) serving `task`."""
        entries = self.manifest["backbone"]["files"] if self.swappable else \
            next(t for t in self.manifest["tasks"] if t["name"] == task)["files"]
        role = "backbone" if self.swappable else "model"
        for f in entries:
            if f["role"] == role and f["path"].endswith(".mlpackage"):
                return self.bundle / f["path"], task if self.swappable else "main"
        raise FileNotFoundError(f"manifest lists no .mlpackage for {task}")

    def _function(self, path: Path, function: str):
        from calora.targets.coreml import load_program

        key = (str(path), function)
        if key not in self._programs:
            self._programs[key] = load_program(path).functions[function]
        return self._programs[key]

    # ---- running --------------------------------------------------------------------------------
    def logits(self, task: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        path, function = self._package(task)
        rows = []
        if self.apple:
            import coremltools as ct

            model = ct.models.MLModel(str(path), function_name=function if self.swappable else None)
            for i in range(input_ids.shape[0]):
                rows.append(model.predict({"input_ids": input_ids[i:i + 1].astype(np.int32),
                                           "attention_mask": attention_mask[i:i + 1].astype(np.int32)})["logits"][0])
        else:
            from calora.targets.coreml_mil import evaluate

            func = self._function(path, function)
            for i in range(input_ids.shape[0]):
                rows.append(evaluate(func, {"input_ids": input_ids[i:i + 1].astype(np.int32),
                                            "attention_mask": attention_mask[i:i + 1].astype(np.int32)},
                                     reuse=True)[0][0])
        return np.stack(rows).astype(np.float32)

    # ---- structure ------------------------------------------------------------------------------
    def findings(self) -> list[Finding]:
        import coremltools as ct

        out: list[Finding] = []
        packages = {self._package(t["name"])[0] for t in self.manifest["tasks"]}
        want_in = [(i["name"], list(i["shape"])) for i in self.manifest["inputs"]]
        want_out = [o["name"] for o in self.manifest["outputs"]]
        fp = self.manifest["backbone"]["fingerprint"]
        for path in sorted(packages):
            spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
            descs = list(spec.description.functions) or [spec.description]
            for d in descs:
                where = f"{path.name}" + (f":{d.name}" if getattr(d, "name", "") else "")
                got_in = [(i.name, list(i.type.multiArrayType.shape)) for i in d.input]
                out.append(Finding(Stage.NAMES, f"{where}: input names", [n for n, _ in got_in] == [n for n, _ in want_in],
                                   f"runtime {[n for n, _ in got_in]}, manifest {[n for n, _ in want_in]}"))
                out.append(Finding(Stage.NAMES, f"{where}: output names", [o.name for o in d.output] == want_out,
                                   f"runtime {[o.name for o in d.output]}, manifest {want_out}"))
                fits = [n for n, _ in got_in] == [n for n, _ in want_in] and all(
                    len(g) == len(w) and all(isinstance(b, str) or a == b for a, b in zip(g, w))
                    for (_, g), (_, w) in zip(got_in, want_in))  # a named (flexible) dimension matches any default
                out.append(Finding(Stage.SHAPES, f"{where}: input shapes", fits,
                                   f"runtime {got_in}, manifest {want_in}"))
            if self.swappable:
                names = sorted(spec.mlProgram.functions)
                missing = [t["name"] for t in self.manifest["tasks"] if t["name"] not in names]
                out.append(Finding(Stage.NAMES, f"{path.name}: one function per task", not missing,
                                   f"functions {names}; missing {missing}"))
                out.append(self._shared_backbone(spec, path))
            meta = dict(spec.description.metadata.userDefined)
            got = meta.get("calora.backbone_fingerprint")
            out.append(Finding(Stage.NAMES, f"{path.name}: exported for this backbone",
                               None if got is None else got == fp,
                               f"{path.name} has no calora.backbone_fingerprint metadata (older calora)" if got is None
                               else f"{path.name}: {got[:23]}…, bundle backbone {fp[:23]}…"))
            if not self.swappable and "calora.label_names" in meta:
                task = next(t for t in self.manifest["tasks"] if self._package(t["name"])[0] == path)
                labels = json.loads(meta["calora.label_names"])
                out.append(Finding(Stage.NAMES, f"{path.name}: label names", labels == task["label_names"],
                                   f"package {labels} vs manifest {task['label_names']}", task["name"]))
        return out

    def _shared_backbone(self, spec, path: Path) -> Finding:
        """Swappable: the quantized backbone weights must be stored once and referenced by every
        function (only the task's own float tensors differ), i.e. no task has the backbone baked in
        a private copy."""
        uses: dict[str, set[int]] = {}
        for name, fn in spec.mlProgram.functions.items():
            offs = set()
            for block in fn.block_specializations.values():
                for op in block.operations:
                    values = list(op.attributes.values())
                    # constexpr ops may carry their data and scales as inline input values
                    values += [a.value for arg in op.inputs.values() for a in arg.arguments if a.HasField("value")]
                    for v in values:
                        if v.WhichOneof("value") == "blobFileValue":
                            offs.add(v.blobFileValue.offset)
            uses[name] = offs
        every = set.intersection(*uses.values()) if uses else set()
        weights = next(path.rglob("weight.bin"), None)
        if weights is None or not every:
            return Finding(Stage.STRUCTURE, f"{path.name}: backbone stored once, shared by all functions", False,
                           "no weight blob is shared by all functions")
        ordered = sorted(set().union(*uses.values())) + [weights.stat().st_size]
        size = {o: ordered[i + 1] - o for i, o in enumerate(ordered[:-1])}
        shared = sum(size[o] for o in every)
        private = {n: sum(size[o] for o in offs - every) for n, offs in uses.items()}
        ok = all(p < shared for p in private.values())
        return Finding(Stage.STRUCTURE, f"{path.name}: backbone stored once, shared by all functions", ok,
                       f"{shared:,} B of weights shared by all {len(uses)} functions; task-private: "
                       + ", ".join(f"{n} {p:,} B" for n, p in sorted(private.items())))
