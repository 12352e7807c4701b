"""An ExecuTorch bundle opened in the ExecuTorch runtime, for `calora-validate`.

The programs run through `executorch.runtime` (the same C++ runtime and XNNPACK/portable/quantized
kernels an app links), fed exactly as an app would: baked, one `.pte` per task; swappable, the one
`backbone.pte` with the task's adapter tensors read from its `.safetensors` file and ordered by the
file's own metadata. Structure is read from the serialized program (delegates, operators left
outside them) and from the method's declared inputs, not from how the exporter meant it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calora.targets import adapter_codec
from calora.targets.base import AdapterDType, Finding, Stage, manifest_file
from calora.targets.executorch import BACKBONE_KEY, _load, _runtime_version, shared_data

_QUANT_OPS = ("quantize", "dequantize", "choose_qparams")
_BYTES_PROBED = 3  # adapter tensors per task searched for in the shared backbone's bytes


class ExecuTorchRunner:
    def __init__(self, bundle: Path, manifest: dict) -> None:
        self.bundle, self.manifest = bundle, manifest
        self.swappable = manifest["mode"] == "swappable"
        # shared: each task's program keeps the backbone's weights in the bundle's one backbone.ptd
        self.data = shared_data(bundle, manifest)
        self.runtime = f"ExecuTorch {_runtime_version()} runtime (XNNPACK + portable + quantized kernels)"
        self._methods: dict[str, tuple] = {}  # path -> (program, method); the program must stay alive
        self._tensors: dict[str, list] = {}  # task -> adapter tensors in method input order

    # ---- files ----------------------------------------------------------------------------------
    def _file(self, role: str, task: str | None, suffix: str) -> Path:
        return manifest_file(self.bundle, self.manifest, role, task, suffix)

    def _method(self, path: Path):
        if str(path) not in self._methods:
            self._methods[str(path)] = _load(path, self.data)
        return self._methods[str(path)][1]

    def _adapter(self, task: str) -> tuple[list[str], dict, dict]:
        from .executorch import read_adapter_file

        return read_adapter_file(self._file("adapter", task, ".safetensors"))

    # ---- running --------------------------------------------------------------------------------
    def logits(self, task: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        if self.swappable:
            method = self._method(self._file("backbone", None, ".pte"))
            if task not in self._tensors:  # read (and widened to float32) once per task, as an app does
                order, _, stored = self._adapter(task)
                self._tensors[task] = adapter_codec.decode(stored, order)
            extra = self._tensors[task]
        else:
            method = self._method(self._file("model", task, ".pte"))
            extra = []
        ids, mask = torch.as_tensor(input_ids, dtype=torch.long), torch.as_tensor(attention_mask, dtype=torch.long)
        rows = [method.execute([ids[i:i + 1].contiguous(), mask[i:i + 1].contiguous(), *extra])[0].clone()
                for i in range(ids.shape[0])]
        return torch.cat([torch.as_tensor(r, dtype=torch.float32) for r in rows]).numpy()

    # ---- structure ------------------------------------------------------------------------------
    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        tasks = [t["name"] for t in self.manifest["tasks"]]
        programs = {None: self._file("backbone", None, ".pte")} if self.swappable else \
            {t: self._file("model", t, ".pte") for t in tasks}
        for task, path in programs.items():
            out += self._program_findings(path, task)
        if self.swappable:
            out += self._adapter_findings(programs[None], tasks)
        if self.data is not None:
            out += self._shared_findings(programs)
        return out

    def _shared_findings(self, programs: dict) -> list[Finding]:
        """Each task program's own weights (named data and constants) against backbone.ptd's: the
        backbone's live only in the shared file, so a program holds no more than its adapter's
        bytes in the manifest's adapter dtype (and none of the shared file's tensors). int8 counts 3
        bytes a parameter: 1 per code, and an up-projection's unit row scales (XNNPACK's int8 linears
        take one float32 scale per output row) add 4 / rank per parameter, at most 2 from rank 2."""
        from executorch.exir._serialize._program import deserialize_pte_binary
        from executorch.extension.flat_tensor.serialize.serialize import _deserialize_to_flat_tensor

        shared = {d.key for d in _deserialize_to_flat_tensor(self.data.read_bytes()).named_data}
        out = [Finding(Stage.STRUCTURE, f"{self.data.name}: backbone weights", bool(shared),
                       f"{len(shared)} named tensors", None)]
        for task, path in programs.items():
            pte = deserialize_pte_binary(path.read_bytes())
            stored = pte.named_data  # the program's own named data (XNNPACK's weight sources)
            own = dict(stored.pte_data) if stored is not None else {}
            size = sum(len(stored.buffers[e.buffer_index]) for e in own.values()) + \
                sum(len(b.storage) for b in pte.program.constant_buffer)
            dtype = self.manifest.get("adapter_dtype", "float32")
            adapter = {"float32": 4, "float16": 2, "int8": 3}[dtype] * \
                next(t for t in self.manifest["tasks"] if t["name"] == task)["adapter_parameters"]
            both = set(own) & shared
            # the slack: alignment padding and the few small constants (masks, rotary tables) kept inline
            ok = not both and size <= 1.1 * adapter + 65536
            out.append(Finding(Stage.STRUCTURE, f"{path.name}: backbone weights only in {self.data.name}", ok,
                               f"the program's own weights: {size} bytes against its adapter's {adapter} {dtype} "
                               f"bytes; {len(both)} of its {len(own)} named tensors also in {self.data.name}", task))
        return out

    def _program_findings(self, path: Path, task: str | None) -> list[Finding]:
        from executorch.exir._serialize._program import deserialize_pte_binary

        out: list[Finding] = []
        plan = deserialize_pte_binary(path.read_bytes()).program.execution_plan[0]
        xnn = sum(1 for d in plan.delegates if d.id == "XnnpackBackend")
        outside = sorted({o.name for o in plan.operators})
        # embedding_byte is the int8 token embedding's portable kernel: expected outside XNNPACK.
        quant_outside = [o for o in outside if any(q in o for q in _QUANT_OPS) and "embedding" not in o]
        from calora.train.spec import CompressionSpec, QuantScheme

        quantized = CompressionSpec.from_dict(self.manifest["backbone"]["compression"]["spec"]).deployed()[0] != \
            QuantScheme.NONE
        out.append(Finding(Stage.STRUCTURE, f"{path.name}: XNNPACK delegation", xnn > 0,
                           f"{xnn} XNNPACK delegate blobs; operators outside delegates: {', '.join(outside) or 'none'}",
                           task))
        if quantized:
            out.append(Finding(Stage.STRUCTURE, f"{path.name}: no (de)quantize op outside XNNPACK", not quant_outside,
                               "quantized backbone linears all run inside XNNPACK" if not quant_outside else
                               f"left outside the delegates (would run on portable kernels, or not at all): "
                               f"{quant_outside}", task))
        method = self._method(path)
        meta = method.metadata
        declared = [tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
        want = [tuple(i["shape"]) for i in self.manifest["inputs"]]
        out.append(Finding(Stage.NAMES, f"{path.name}: number of method inputs", len(declared) == len(want),
                           f"forward takes {len(declared)} inputs, the manifest lists {len(want)}", task))
        if len(declared) == len(want):
            bad = [(self.manifest["inputs"][i]["name"], d, w) for i, (d, w) in enumerate(zip(declared, want))
                   if not _fits(d, w)]
            out.append(Finding(Stage.SHAPES, f"{path.name}: input shapes", not bad,
                               f"{len(declared)} inputs match the manifest" if not bad else f"(name, runtime, manifest): {bad[:3]}",
                               task))
        outs = tuple(meta.output_tensor_meta(0).sizes())
        want_out = tuple(self.manifest["outputs"][0]["shape"])
        out.append(Finding(Stage.SHAPES, f"{path.name}: output shape", _fits(outs, want_out),
                           f"runtime {list(outs)}, manifest {list(want_out)}", task))
        return out

    def _adapter_findings(self, backbone: Path, tasks: list[str]) -> list[Finding]:
        import torch

        from calora.export.bundle import adapter_fingerprint

        out: list[Finding] = []
        blob = backbone.read_bytes()
        want_fp = self.manifest["backbone"]["fingerprint"]
        method = self._method(backbone)
        declared = [tuple(method.metadata.input_tensor_meta(i).sizes()) for i in range(method.metadata.num_inputs())]
        for entry in self.manifest["tasks"]:
            task = entry["name"]
            try:
                order, meta, stored = self._adapter(task)
                tensors = adapter_codec.decode(stored, order)
            except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file is a finding, not a crash
                out.append(Finding(Stage.NAMES, "adapter file readable", False,
                                   f"{self._file('adapter', task, '.safetensors').relative_to(self.bundle)}: "
                                   f"{type(exc).__name__}: {exc}", task))
                continue
            name = self._file("adapter", task, ".safetensors").relative_to(self.bundle)
            got_fp = meta.get(BACKBONE_KEY)
            out.append(Finding(Stage.NAMES, "adapter belongs to this backbone",
                               None if got_fp is None else got_fp == want_fp,
                               f"{name} has no {BACKBONE_KEY} metadata (exported by an older calora)" if got_fp is None
                               else f"{name} was exported for backbone {got_fp[:23]}…, this bundle's backbone is "
                               f"{want_fp[:23]}…" if got_fp != want_fp else f"{name}: {got_fp[:23]}…", task))
            labels = json.loads(meta.get("label_names", "null"))
            out.append(Finding(Stage.NAMES, "adapter label names", labels == entry["label_names"],
                               f"{name}: {labels} vs manifest {entry['label_names']}", task))
            fp = adapter_fingerprint(stored)
            out.append(Finding(Stage.NAMES, "adapter fingerprint", fp == entry["adapter_fingerprint"],
                               f"{name}: {fp[:23]}… vs manifest {entry['adapter_fingerprint'][:23]}…", task))
            shapes = [tuple(t.shape) for t in tensors]
            ok = shapes == declared[2:]
            out.append(Finding(Stage.SHAPES, "adapter tensors fit the backbone's inputs", ok,
                               f"{len(shapes)} tensors match backbone.pte's inputs 3..{len(declared)}" if ok else
                               f"{name}: {len(shapes)} tensors vs {len(declared) - 2} adapter inputs; first mismatch "
                               f"{next(((i, s, d) for i, (s, d) in enumerate(zip(shapes, declared[2:])) if s != d), None)}",
                               task))
            # The file stores the manifest's adapter dtype (float16 by default); apps widen to float32.
            want = AdapterDType(self.manifest.get("adapter_dtype", "float32"))
            bad = sorted((n, str(t.dtype).removeprefix("torch."))
                         for n, t in stored.items() if t.dtype != adapter_codec.stored_dtype(n, want))
            expected = set(adapter_codec.stored_names(order, want))
            extra, missing = sorted(set(stored) - expected), sorted(expected - set(stored))
            ok = not bad and not extra and not missing
            out.append(Finding(Stage.SHAPES, "adapter tensor dtype", ok,
                               f"{name}: every tensor stored as the manifest's adapter_dtype {want.value!r} says"
                               if ok else f"{name}: against adapter_dtype {want.value!r}: (tensor, dtype) {bad[:3]}, "
                               f"tensors outside the input order {extra[:3]}, missing {missing[:3]}", task))
            # Not baked: the task's largest tensors must not occur byte for byte in the shared program
            # (as stored, and as the float32 inputs an app widens them to).
            probes = sorted((t for t in [*stored.values(), *tensors] if t.numel() >= 16 and bool(torch.any(t != 0))),
                            key=lambda t: -t.numel())[:_BYTES_PROBED]
            found = sum(1 for t in probes if blob.find(t.numpy().tobytes()) >= 0)
            out.append(Finding(Stage.STRUCTURE, "adapter not baked into backbone.pte", found == 0 if probes else None,
                               f"{found} of the task's {len(probes)} largest non-zero adapter tensors found byte for "
                               f"byte in backbone.pte" if probes else "no non-zero adapter tensor to look for", task))
        return out


def _fits(declared: tuple, manifest: tuple) -> bool:
    """A program's declared sizes against the manifest's: a named (dynamic) dimension matches the
    program's upper bound, a number must be equal."""
    return len(declared) == len(manifest) and all(isinstance(w, str) or d == w for d, w in zip(declared, manifest))
