"""A generative Core ML bundle run as a stateful model: on macOS `MLModel.predict(..., state=)`
with `make_state()`; elsewhere calora's stateful MIL reference evaluator (program-level check,
not Apple's runtime), labelled as such in every report row."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .base import Finding, Stage
from .generation import Generation, OnToken


def program_runtime() -> str:
    import coremltools as ct

    if sys.platform == "darwin":
        return "Core ML runtime (stateful MLModel.predict, macOS)"
    return f"coremltools {ct.__version__} MIL reference evaluator with KV-cache state (program-level check, not Apple's runtime)"


class StatefulProgram:
    """One function of a stateful .mlpackage: call() runs S new tokens after `past` cached ones."""

    def __init__(self, path: Path, function: str) -> None:
        self.path, self.function = Path(path), function
        if sys.platform == "darwin":
            import coremltools as ct

            self.model = ct.models.MLModel(str(path), function_name=None if function == "main" else function)
            self.state = self.model.make_state()
        else:
            from .coreml import load_program
            from .coreml_state import StatefulEvaluator

            self.evaluator = StatefulEvaluator(load_program(path).functions[function])

    def reset(self) -> None:
        if sys.platform == "darwin":
            self.state = self.model.make_state()
        else:
            self.evaluator.reset()

    def call(self, tokens: list[int], past: int) -> np.ndarray:
        """[S, vocab] logits of `tokens` at positions past .. past+S-1."""
        from calora.export.decoder import causal_mask

        feeds = {"input_ids": np.asarray([tokens], dtype=np.int32),
                 "causal_mask": causal_mask(past, len(tokens)).numpy()}
        if sys.platform == "darwin":
            out = self.model.predict(feeds, state=self.state)["logits"]
        else:
            out = self.evaluator(feeds)[0]
        return np.asarray(out, dtype=np.float32)[0]

    def generate(self, prompt: list[int], max_new_tokens: int, eos: int, on_token: OnToken | None = None) -> Generation:
        self.reset()
        t0 = time.perf_counter()
        logits = self.call(prompt, 0)
        prefill = time.perf_counter() - t0
        tokens: list[int] = []
        steps: list[float] = []
        token = int(logits[-1].argmax())
        while token != eos and len(tokens) < max_new_tokens:
            tokens.append(token)
            if on_token is not None:
                on_token(token)
            if len(tokens) == max_new_tokens:
                break
            t0 = time.perf_counter()
            logits = self.call([token], len(prompt) + len(tokens) - 1)
            steps.append(time.perf_counter() - t0)
            token = int(logits[-1].argmax())
        return Generation(tokens, prefill, len(prompt), steps)

    def forward_logits(self, ids: list[int]) -> np.ndarray:
        self.reset()
        return self.call(ids, 0)

    def cached_logits(self, ids: list[int], prompt_len: int) -> np.ndarray:
        self.reset()
        rows = [self.call(ids[:prompt_len], 0)[-1]]
        for i in range(prompt_len, len(ids)):
            rows.append(self.call([ids[i]], i)[-1])
        return np.stack(rows)


class CoreMLGenRunner:
    """`GenerativeRunner` over a generative Core ML bundle."""

    def __init__(self, bundle: Path, manifest: dict) -> None:
        from .coreml_runtime import CoreMLRunner

        self.bundle, self.manifest = Path(bundle), manifest
        self.runtime = program_runtime()
        self._files = CoreMLRunner(self.bundle, manifest)
        self._programs: dict[str, StatefulProgram] = {}

    def _program(self, task: str) -> StatefulProgram:
        if task not in self._programs:
            self._programs[task] = StatefulProgram(*self._files._package(task))
        return self._programs[task]

    def generate(self, task: str, prompt: list[int], max_new_tokens: int, eos: int,
                 on_token: OnToken | None = None) -> Generation:
        return self._program(task).generate(prompt, max_new_tokens, eos, on_token)

    def forward_logits(self, task: str, ids: list[int]) -> np.ndarray:
        return self._program(task).forward_logits(ids)

    def cached_logits(self, task: str, ids: list[int], prompt_len: int) -> np.ndarray:
        return self._program(task).cached_logits(ids, prompt_len)

    def bare_logits(self, ids: list[int]) -> np.ndarray | None:
        return None  # every function holds its task's adapter; there is no adapter-free function

    def findings(self) -> list[Finding]:
        import coremltools as ct

        out = self._files.findings()
        want = {n: [int(d) for d in s] for n, s in _state_shapes(self.manifest).items()}
        for path in sorted({self._files._package(t["name"])[0] for t in self.manifest["tasks"]}):
            spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
            for d in list(spec.description.functions) or [spec.description]:
                got = {s.name: list(s.type.stateType.arrayType.shape) for s in d.state}
                where = path.name + (f":{d.name}" if getattr(d, "name", "") else "")
                out.append(Finding(Stage.SHAPES, f"{where}: KV-cache states", got == want,
                                   f"states {got}, expected {want} (layers, 1, kv heads, max context, head dim)"))
        return out


def _state_shapes(manifest: dict) -> dict[str, list[int]]:
    """The cache states the manifest implies (its shape is recorded in the generation block)."""
    cache = manifest["generation"].get("kv_cache_shape")
    return {n: list(cache) for n in ("k_cache", "v_cache")} if cache else {}
