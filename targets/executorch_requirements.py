"""What a runtime must provide to load an ExecuTorch program, read from the program itself.

An app's ExecuTorch build links only the kernels and backends it names (selective build), so the
bundle's manifest lists, for every `.pte` it ships, the operators `forward` calls outside delegates,
the backends it delegates to, and the kernel library each operator namespace lives in.
"""

from __future__ import annotations

from pathlib import Path

#: Kernel namespaces of ExecuTorch programs -> what an app links to have them (ExecuTorch's names).
KERNEL_LIBRARIES = {
    "aten": "portable (or optimized) kernels: every ExecuTorch runtime build",
    "dim_order_ops": "portable kernels: every ExecuTorch runtime build",
    "executorch_prim": "built into the runtime",
    "llama": "ExecuTorch's LLM kernels: custom_ops (C++), the executorch AAR (Android), kernels_llm (iOS)",
    "quantized_decomposed": "quantized kernels: quantized_ops_lib (C++), the executorch AAR, kernels_quantized (iOS)",
}


def program_requirements(paths: list[Path]) -> dict:
    """What a runtime must provide to load these .pte programs, read from the programs themselves:
    the operators their `forward` calls outside delegates (the list ExecuTorch's selective build
    takes), the backends it delegates to, and the kernel libraries those operators live in."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    operators: set[str] = set()
    backends: set[str] = set()
    for path in paths:
        program = deserialize_pte_binary(Path(path).read_bytes())
        program = getattr(program, "program", program)  # newer releases wrap it with its named data
        for plan in program.execution_plan:
            if plan.name == "forward":
                operators |= {f"{o.name}.{o.overload}" if o.overload else o.name for o in plan.operators}
                backends |= {d.id for d in plan.delegates}
    spaces = sorted({op.split("::")[0] for op in operators})
    return {"operators": sorted(operators), "backends": sorted(backends),
            "kernel_libraries": {ns: KERNEL_LIBRARIES.get(ns, "custom kernels: link the library defining them")
                                 for ns in spaces}}
