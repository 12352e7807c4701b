"""A generative ONNX bundle run with onnxruntime-genai, the runtime's own LLM tooling: `og.Model`
on the bundle's genai folder, `og.Generator` for prefill and decode, `og.Adapters` for swappable
task adapters (activated before the prompt is appended, as an app does)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .base import Finding, Stage
from .generation import Generation, OnToken


def og_version() -> str:
    from importlib import metadata

    return metadata.version("onnxruntime-genai")


class GenaiSession:
    """One genai model folder: an og.Model, its loaded adapters, and calora's three ways of running it.

    `intra_op_threads` (class-wide, as `OnnxRunner.intra_op_threads`; None: the folder's config as
    shipped) overrides the decoder's `session_options.intra_op_num_threads` when the model is
    opened, which is what an app does in its genai_config.json. Benchmarks set it so every runtime
    runs the same number of threads: onnxruntime-genai 0.18 left to its default ran one intra-op
    thread on a 2-core x86 machine, 1.5-1.6x slower per decoded token than with 2 threads set
    (docs/RESULTS.md, section 5), while ExecuTorch's XNNPACK and PyTorch use every core."""

    intra_op_threads: int | None = None

    def __init__(self, folder: Path) -> None:
        import onnxruntime_genai as og

        from calora.train.cli_support import disable_ort_telemetry

        disable_ort_telemetry()
        og.disable_telemetry_events()
        self.folder = Path(folder)
        config = og.Config(str(folder))
        if self.intra_op_threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": int(self.intra_op_threads)}}}}))
        self.model = og.Model(config)
        self.config = json.loads((self.folder / "genai_config.json").read_text())
        self.context = int(self.config["model"]["context_length"])
        self.adapters = og.Adapters(self.model)
        self.loaded: set[str] = set()

    def load_adapter(self, name: str, path: Path) -> None:
        self.adapters.load(str(path), name)
        self.loaded.add(name)

    def unload_adapter(self, name: str) -> None:
        self.adapters.unload(name)
        self.loaded.discard(name)

    def _generator(self, adapter: str | None, max_length: int):
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=min(max_length, self.context))
        gen = og.Generator(self.model, params)
        if adapter is not None:  # before append_tokens: the prefill runs inside it
            gen.set_active_adapter(self.adapters, adapter)
        return gen

    def generate(self, prompt: list[int], max_new_tokens: int, eos: int, adapter: str | None = None,
                 on_token: OnToken | None = None) -> Generation:
        gen = self._generator(adapter, len(prompt) + max_new_tokens)
        t0 = time.perf_counter()
        gen.append_tokens(np.asarray(prompt, dtype=np.int32))
        prefill = time.perf_counter() - t0
        tokens: list[int] = []
        steps: list[float] = []
        while not gen.is_done() and len(tokens) < max_new_tokens:
            t0 = time.perf_counter()
            gen.generate_next_token()
            if tokens:  # the first token comes from the prefill's logits; later ones each cost a forward
                steps.append(time.perf_counter() - t0)
            token = int(gen.get_next_tokens()[0])
            if token == eos:
                break
            tokens.append(token)
            if on_token is not None:
                on_token(token)
        return Generation(tokens, prefill, len(prompt), steps)

    def forward_logits(self, ids: list[int], adapter: str | None = None) -> np.ndarray:
        gen = self._generator(adapter, len(ids) + 1)
        gen.append_tokens(np.asarray(ids, dtype=np.int32))
        return np.asarray(gen.get_output("logits"), dtype=np.float32)[0]

    def cached_logits(self, ids: list[int], prompt_len: int, adapter: str | None = None) -> np.ndarray:
        gen = self._generator(adapter, len(ids) + 1)
        gen.append_tokens(np.asarray(ids[:prompt_len], dtype=np.int32))
        rows = [np.asarray(gen.get_output("logits"), dtype=np.float32)[0, -1]]
        for token in ids[prompt_len:]:
            gen.append_tokens(np.asarray([token], dtype=np.int32))
            rows.append(np.asarray(gen.get_output("logits"), dtype=np.float32)[0, -1])
        return np.stack(rows)


class OnnxGenaiRunner:
    """`GenerativeRunner` over a generative ONNX bundle."""

    def __init__(self, bundle: Path, manifest: dict) -> None:
        from .onnx_genai import folder_of

        self.bundle, self.manifest = Path(bundle), manifest
        self.swappable = manifest["mode"] == "swappable"
        self.runtime = f"onnxruntime-genai {og_version()} (og.Model / og.Generator, CPU, .ort model)"
        self._folder = lambda task: folder_of(self.bundle, manifest, None if self.swappable else task)
        self._sessions: dict[str, GenaiSession] = {}

    def _session(self, task: str) -> tuple[GenaiSession, str | None]:
        folder = self._folder(task)
        if str(folder) not in self._sessions:
            self._sessions[str(folder)] = GenaiSession(folder)
        session = self._sessions[str(folder)]
        if not self.swappable:
            return session, None
        if task not in session.loaded:  # loaded once per task, as an app does
            from .base import manifest_file

            session.load_adapter(task, manifest_file(self.bundle, self.manifest, "adapter", task, ".onnx_adapter"))
        return session, task

    def generate(self, task: str, prompt: list[int], max_new_tokens: int, eos: int,
                 on_token: OnToken | None = None) -> Generation:
        session, adapter = self._session(task)
        return session.generate(prompt, max_new_tokens, eos, adapter, on_token)

    def forward_logits(self, task: str, ids: list[int]) -> np.ndarray:
        session, adapter = self._session(task)
        return session.forward_logits(ids, adapter)

    def cached_logits(self, task: str, ids: list[int], prompt_len: int) -> np.ndarray:
        session, adapter = self._session(task)
        return session.cached_logits(ids, prompt_len, adapter)

    def bare_logits(self, ids: list[int]) -> np.ndarray | None:
        if not self.swappable:
            return None
        session, _ = self._session(self.manifest["tasks"][0]["name"])
        return session.forward_logits(ids, None)  # no active adapter: the all-zero defaults

    def findings(self) -> list[Finding]:
        from .onnx_runtime import OnnxRunner

        # Names, shapes, MatMulNBits, zero adapter defaults and adapter files, read as for
        # classification from the same .ort/.onnx files; then the genai config against the graph.
        out = OnnxRunner(self.bundle, self.manifest).findings()
        tasks = [t["name"] for t in self.manifest["tasks"]]
        for task in ([tasks[0]] if self.swappable else tasks):
            folder = self._folder(task)
            cfg = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
            graph_inputs = [i["name"] for i in self.manifest["inputs"]]
            wanted = [cfg["inputs"]["input_ids"], cfg["inputs"]["attention_mask"], cfg["inputs"]["position_ids"]]
            layers = int(cfg["num_hidden_layers"])
            for i in range(layers):
                wanted += [cfg["inputs"]["past_key_names"] % i, cfg["inputs"]["past_value_names"] % i]
            ok = wanted == graph_inputs
            out.append(Finding(Stage.NAMES, "genai_config.json names the graph's inputs", ok,
                               f"{folder.name}/genai_config.json: {len(wanted)} inputs"
                               + ("" if ok else f"; config {wanted[:4]}…, graph {graph_inputs[:4]}…"),
                               None if self.swappable else task))
        return out
