"""An ONNX bundle opened in ONNX Runtime, for `calora-validate`.

Runs the `.ort` files (what ONNX Runtime Mobile loads), one InferenceSession per file; in swappable
mode the task's `.onnx_adapter` is loaded with `onnxruntime.LoraAdapter` and activated per run with
`RunOptions.add_active_adapter`, exactly as an app does. Structure is read from the sessions and
from the `.onnx` form of the same graph (MatMulNBits nodes, the adapter inputs' zero defaults).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calora.targets.base import Finding, Stage, manifest_file, fingerprint_version

_BATCH = 64  # rows per session.run; the graphs have a dynamic batch dimension


class OnnxRunner:
    #: ONNX Runtime's intra-op thread count for the sessions this runner opens (0: its default, one
    #: per physical core); benchmarks set it to measure how latency scales with threads.
    intra_op_threads: int = 0

    def __init__(self, bundle: Path, manifest: dict) -> None:
        import onnxruntime as ort

        from calora.train.cli_support import disable_ort_telemetry

        disable_ort_telemetry()

        self.bundle, self.manifest = bundle, manifest
        self.swappable = manifest["mode"] == "swappable"
        self.runtime = f"ONNX Runtime {ort.__version__} (CPU execution provider, .ort model)"
        self._sessions: dict[str, object] = {}
        self._adapters: dict[str, object] = {}  # task -> loaded onnxruntime.LoraAdapter
        from calora.targets.onnx import per_example
        from calora.train.spec import CompressionSpec

        # int8 bundles run one row per session.run, as the app does (one activation scale per run)
        self._one_by_one = per_example(CompressionSpec.from_dict(manifest["backbone"]["compression"]["spec"]))

    def _file(self, role: str, task: str | None, suffix: str) -> Path:
        return manifest_file(self.bundle, self.manifest, role, task, suffix)

    def _session(self, path: Path):
        import onnxruntime as ort

        if str(path) not in self._sessions:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = self.intra_op_threads
            self._sessions[str(path)] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return self._sessions[str(path)]

    def _ort_path(self, task: str) -> Path:
        return self._file("backbone", None, ".ort") if self.swappable else self._file("model", task, ".ort")

    # ---- running --------------------------------------------------------------------------------
    def logits(self, task: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        from calora.targets.onnx import run_logits

        sess = self._session(self._ort_path(task))
        opts = None
        if self.swappable:
            if task not in self._adapters:  # loaded once per task, activated on every run (as an app does)
                adapter = ort.LoraAdapter()
                adapter.Load(str(self._file("adapter", task, ".onnx_adapter")))
                self._adapters[task] = adapter
            opts = ort.RunOptions()
            opts.add_active_adapter(self._adapters[task])
        outs = []
        for i in range(0, input_ids.shape[0], _BATCH):
            feed = {"input_ids": np.ascontiguousarray(input_ids[i:i + _BATCH], dtype=np.int64),
                    "attention_mask": np.ascontiguousarray(attention_mask[i:i + _BATCH], dtype=np.int64)}
            outs.append(run_logits(sess, feed, opts, self._one_by_one))
        return np.concatenate(outs).astype(np.float32)

    # ---- structure ------------------------------------------------------------------------------
    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        tasks = [t["name"] for t in self.manifest["tasks"]]
        paths = {None: self._ort_path(tasks[0])} if self.swappable else {t: self._ort_path(t) for t in tasks}
        for task, path in paths.items():
            sess = self._session(path)
            names = [i.name for i in sess.get_inputs()]
            want = [i["name"] for i in self.manifest["inputs"]]
            out.append(Finding(Stage.NAMES, f"{path.name}: input names", names == want,
                               f"runtime {names}, manifest {want}", task))
            outs = [o.name for o in sess.get_outputs()]
            want_out = [o["name"] for o in self.manifest["outputs"]]
            out.append(Finding(Stage.NAMES, f"{path.name}: output names", outs == want_out,
                               f"runtime {outs}, manifest {want_out}", task))
            ranks = [len(i.shape) for i in sess.get_inputs()]
            out.append(Finding(Stage.SHAPES, f"{path.name}: input ranks", ranks == [len(i["shape"]) for i in self.manifest["inputs"]],
                               f"runtime shapes {[i.shape for i in sess.get_inputs()]}, manifest "
                               f"{[i['shape'] for i in self.manifest['inputs']]}", task))
            out += self._onnx_findings(path.with_suffix(".onnx"), task)
        if self.swappable:
            out += self._adapter_findings(self._session(paths[None]))
        return out

    def _onnx_findings(self, path: Path, task: str | None) -> list[Finding]:
        import onnx
        from onnx import numpy_helper

        if not path.is_file():
            return [Finding(Stage.STRUCTURE, f"{path.name}: graph structure", None,
                            f"{path.name} not in the bundle; structure read from the .onnx only", task)]
        proto = onnx.load(str(path))
        ops = [n.op_type for n in proto.graph.node]
        spec = self.manifest["backbone"]["compression"]["spec"]
        from calora.train.spec import CompressionSpec

        quant = CompressionSpec.from_dict(spec).deployed()[0].value
        out: list[Finding] = []
        if quant == "int4":
            n = ops.count("MatMulNBits")
            out.append(Finding(Stage.STRUCTURE, f"{path.name}: int4 backbone linears (MatMulNBits)", n > 0,
                               f"{n} MatMulNBits nodes", task))
        elif quant == "int8":
            n = sum(1 for o in ops if o in ("MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"))
            out.append(Finding(Stage.STRUCTURE, f"{path.name}: int8 backbone linears", n > 0,
                               f"{n} dynamic-quantized MatMul nodes", task))
        if self.swappable:
            inputs = {i.name for i in proto.graph.input}
            defaults = [i for i in proto.graph.initializer if i.name in inputs]
            nonzero = [i.name for i in defaults if np.any(numpy_helper.to_array(i))]
            out.append(Finding(Stage.STRUCTURE, "adapter inputs not baked (all-zero defaults)",
                               bool(defaults) and not nonzero,
                               f"{len(defaults)} adapter inputs with defaults, {len(nonzero)} non-zero"
                               + (f" (e.g. {nonzero[:2]})" if nonzero else ""), None))
        return out

    def _adapter_findings(self, sess) -> list[Finding]:
        import onnxruntime as ort
        import torch

        from calora.export.bundle import adapter_fingerprint

        slots = {i.name: tuple(i.shape) for i in sess.get_overridable_initializers()}
        slot_types = {i.name: i.type for i in sess.get_overridable_initializers()}  # "tensor(float16)"
        fp = self.manifest["backbone"]["fingerprint"]
        out: list[Finding] = []
        for entry in self.manifest["tasks"]:
            task = entry["name"]
            path = self._file("adapter", task, ".onnx_adapter")
            name = path.relative_to(self.bundle)
            try:
                fmt = ort.AdapterFormat.read_adapter(str(path))
                params = {k: v.numpy().copy() for k, v in fmt.get_parameters().items()}
            except Exception as exc:  # noqa: BLE001 - a corrupt file is a finding, not a crash
                out.append(Finding(Stage.NAMES, "adapter file readable", False, f"{name}: {type(exc).__name__}: {exc}", task))
                continue
            version = fmt.get_model_version()
            out.append(Finding(Stage.NAMES, "adapter belongs to this backbone",
                               None if version == 1 else version == fingerprint_version(fp),
                               f"{name} has model_version 1 (exported by an older calora, no backbone link)" if version == 1
                               else f"{name} model_version {version:#x}, this bundle's backbone {fingerprint_version(fp):#x} "
                               f"({fp[:23]}…)", task))
            missing, extra = sorted(set(slots) - set(params)), sorted(set(params) - set(slots))
            out.append(Finding(Stage.NAMES, "adapter tensor names", not missing and not extra,
                               f"{name}: {len(params)} tensors; missing {missing[:3]}, unknown {extra[:3]}", task))
            # A symbolic dimension (the rank of an empty default) takes any size; dtypes must match.
            bad = [(k, params[k].shape, params[k].dtype.name, slots[k], slot_types[k]) for k in params if k in slots
                   and (not _fits(params[k].shape, slots[k]) or f"tensor({_onnx_type(params[k].dtype)})" != slot_types[k])]
            out.append(Finding(Stage.SHAPES, "adapter tensors fit the backbone's inputs", not bad,
                               f"{name}: all shapes match" if not bad else f"{name}: (name, adapter, backbone) {bad[:3]}", task))
            got = adapter_fingerprint({k: torch.from_numpy(v) for k, v in params.items()})
            out.append(Finding(Stage.NAMES, "adapter fingerprint", got == entry["adapter_fingerprint"],
                               f"{name}: {got[:23]}… vs manifest {entry['adapter_fingerprint'][:23]}…", task))
        return out


def _fits(shape: tuple, slot: tuple) -> bool:
    return len(shape) == len(slot) and all(isinstance(s, str) or s is None or int(d) == s for d, s in zip(shape, slot))


def _onnx_type(dtype) -> str:
    return {"float32": "float", "float16": "float16", "float64": "double"}.get(np.dtype(dtype).name, np.dtype(dtype).name)
