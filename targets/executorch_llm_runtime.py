"""A generative ExecuTorch bundle run in the ExecuTorch runtime: the program's `forward(tokens,
input_pos[, *adapter])` driven as ExecuTorch's LLM runner drives it (prefill, then one token per
call, the KV cache living in the program), and, for baked programs, ExecuTorch's own LLM runner
(`executorch.extension.llm.runner`) where its Python bindings are available."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import torch

from .base import Finding, Stage, manifest_file
from .generation import Generation, OnToken


class PteSession:
    """One loaded .pte (with `data`, a shared bundle's backbone.ptd); `extra` are a swappable
    program's adapter tensors (empty when baked or shared)."""

    def __init__(self, path: Path, data: Path | None = None) -> None:
        from calora.export.decoder import load_llm_kernels

        from .executorch import _load

        load_llm_kernels()  # the program's cache and attention kernels (llama::update_cache, custom_sdpa)
        self.path, self.data = Path(path), data
        self.program, self.method = _load(self.path, data)

    def _run(self, tokens: list[int], pos: int, extra: list) -> torch.Tensor:
        out = self.method.execute([torch.tensor([tokens], dtype=torch.long), torch.tensor([pos], dtype=torch.long),
                                   *extra])[0]
        return torch.as_tensor(out)[0]  # [S, vocab]

    def generate(self, prompt: list[int], max_new_tokens: int, eos: int, extra: list,
                 on_token: OnToken | None = None) -> Generation:
        t0 = time.perf_counter()
        logits = self._run(prompt, 0, extra)
        prefill = time.perf_counter() - t0
        tokens: list[int] = []
        steps: list[float] = []
        pos = len(prompt)
        token = int(logits[-1].argmax())
        while token != eos and len(tokens) < max_new_tokens:
            tokens.append(token)
            if on_token is not None:
                on_token(token)
            if len(tokens) == max_new_tokens or pos >= self.max_context:
                break
            t0 = time.perf_counter()
            logits = self._run([token], pos, extra)
            steps.append(time.perf_counter() - t0)
            pos += 1
            token = int(logits[-1].argmax())
        return Generation(tokens, prefill, len(prompt), steps)

    @functools.cached_property
    def max_context(self) -> int:
        # read once per session, not once per decode step (it loads a method)
        return int(self.program.load_method("get_max_context_len").execute([])[0]) \
            if "get_max_context_len" in self.program.method_names else 1 << 30

    def forward_logits(self, ids: list[int], extra: list) -> np.ndarray:
        return self._run(ids, 0, extra).float().numpy().copy()

    def cached_logits(self, ids: list[int], prompt_len: int, extra: list) -> np.ndarray:
        rows = [self._run(ids[:prompt_len], 0, extra)[-1].float().numpy().copy()]
        for i in range(prompt_len, len(ids)):
            rows.append(self._run([ids[i]], i, extra)[-1].float().numpy().copy())
        return np.stack(rows)


class ExecuTorchGenRunner:
    """`GenerativeRunner` over a generative ExecuTorch bundle."""

    def __init__(self, bundle: Path, manifest: dict) -> None:
        from calora.export.decoder import load_llm_kernels

        from .executorch import _runtime_version, shared_data

        load_llm_kernels()  # before any check loads a program: they use llama::update_cache and custom_sdpa
        self.bundle, self.manifest = Path(bundle), manifest
        self.swappable = manifest["mode"] == "swappable"
        # shared: every task's program loads the bundle's one backbone.ptd as its data file
        self.data = shared_data(self.bundle, manifest)
        self.runtime = f"ExecuTorch {_runtime_version()} runtime, XNNPACK (forward(tokens, input_pos), static KV cache)"
        self._sessions: dict[str, PteSession] = {}
        self._adapters: dict[str, list] = {}

    def _path(self, task: str | None) -> Path:
        if self.swappable:
            return manifest_file(self.bundle, self.manifest, "backbone", None, ".pte")
        return manifest_file(self.bundle, self.manifest, "model", task, ".pte")

    def _session(self, task: str) -> tuple[PteSession, list]:
        from .executorch import read_adapter

        path = self._path(task)
        if str(path) not in self._sessions:
            self._sessions[str(path)] = PteSession(path, self.data)
        if not self.swappable:
            return self._sessions[str(path)], []
        if task not in self._adapters:  # read once per task, as an app does
            self._adapters[task] = read_adapter(manifest_file(self.bundle, self.manifest, "adapter", task, ".safetensors"))
        return self._sessions[str(path)], self._adapters[task]

    def generate(self, task: str, prompt: list[int], max_new_tokens: int, eos: int,
                 on_token: OnToken | None = None) -> Generation:
        session, extra = self._session(task)
        return session.generate(prompt, max_new_tokens, eos, extra, on_token)

    def forward_logits(self, task: str, ids: list[int]) -> np.ndarray:
        session, extra = self._session(task)
        return session.forward_logits(ids, extra)

    def cached_logits(self, task: str, ids: list[int], prompt_len: int) -> np.ndarray:
        session, extra = self._session(task)
        return session.cached_logits(ids, prompt_len, extra)

    def stock_generate(self, task: str, prompt_text: str, max_new_tokens: int) -> tuple[str | None, str]:
        """Greedy text from ExecuTorch's own LLM runner (TextLLMRunner, the C++ runner behind Android's
        LlmModule) on the baked program (a shared bundle's task program with backbone.ptd as the runner's
        data file) with the bundle's tokenizer.json: (text, what ran), or (None, why not). The runner
        tokenizes `prompt_text` itself, with ExecuTorch's C++ HF tokenizer."""
        if self.swappable:
            return None, ("the stock runner calls forward(tokens, input_pos) only; a swappable backbone.pte "
                          "also takes the adapter tensors, so apps drive it through the Module API")
        try:
            import executorch.kernels.quantized  # noqa: F401  embedding_byte for int8 embeddings
            from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner
        except ImportError as exc:
            return None, f"ExecuTorch's LLM runner bindings are not installed here ({exc})"
        tokenizer = self.bundle / "tokenizer" / "tokenizer.json"
        if not tokenizer.is_file():
            return None, f"{tokenizer} is missing (the runner reads HF tokenizer.json)"
        pieces: list[str] = []
        with _native_output_silenced():
            runner = TextLLMRunner(str(self._path(task)), str(tokenizer),
                                   None if self.data is None else str(self.data))
            runner.generate(prompt_text, GenerationConfig(echo=False, max_new_tokens=max_new_tokens, temperature=0.0,
                                                          num_bos=0, num_eos=0), pieces.append, None)
        ran = "executorch.extension.llm.runner.TextLLMRunner"
        return "".join(pieces), ran if self.data is None else f"{ran} (data_path {self.data.name})"

    def bare_logits(self, ids: list[int]) -> np.ndarray | None:
        if not self.swappable:
            return None
        task = self.manifest["tasks"][0]["name"]
        session, extra = self._session(task)
        return session.forward_logits(ids, [torch.zeros_like(t) for t in extra])

    def findings(self) -> list[Finding]:
        from .executorch_runtime import ExecuTorchRunner

        out = ExecuTorchRunner(self.bundle, self.manifest).findings()
        from .executorch_llm import metadata

        tasks = [t["name"] for t in self.manifest["tasks"]]
        gen = self.manifest["generation"]
        for task in ([tasks[0]] if self.swappable else tasks):
            session = self._session(task)[0]
            names = set(session.program.method_names)
            want = {k: v for k, v in _expected_metadata(self.manifest, metadata).items()}
            got, missing = {}, []
            for k in want:
                if k in names:
                    v = session.program.load_method(k).execute([])
                    got[k] = [int(x) for x in v] if k == "get_eos_ids" else type(want[k])(v[0])
                else:
                    missing.append(k)
            bad = {k: (got[k], want[k]) for k in got if got[k] != want[k]}
            where = None if self.swappable else task
            out.append(Finding(Stage.NAMES, "LLM runner metadata methods", not missing and not bad,
                               f"{session.path.name}: {len(got)} of {len(want)} present" +
                               (f"; missing {missing}" if missing else "") + (f"; (got, want) {bad}" if bad else "")
                               + f"; max context {gen['max_context']}", where))
        return out


class _native_output_silenced:
    """The C++ runner logs every step to the process's stdout/stderr: point both file descriptors at
    /dev/null for the call (Python-level redirection cannot reach native writes)."""

    def __enter__(self):
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        return self

    def __exit__(self, *exc) -> None:
        import os

        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)


def _expected_metadata(manifest: dict, metadata) -> dict:
    from calora.export.decoder import DecoderShape

    g = manifest["generation"]
    logits = next(o for o in manifest["outputs"] if o["name"] == "logits")
    shape = DecoderShape(0, 0, 0, 0, 0, int(logits["shape"][-1]), int(g["max_context"]))
    want = metadata(shape, g)
    want.pop("get_n_layers")  # not recorded in the manifest; the program's own value is not checked
    # Which attention kernels the program was exported with (False before 2026-12-06): the runner does
    # not act on it, and loading the program already proves its kernels are there.
    want.pop("use_sdpa_with_kv_cache")
    return want
