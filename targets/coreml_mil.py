"""MIL-level helpers of the Core ML target: exact weight quantization and a reference evaluator.

- `quantize_consts(prog, weights)`: replace the float `const` ops that hold given backbone weights
  by `constexpr_blockwise_shift_scale` ops carrying the very integer codes and scales calora trained
  with (no re-quantization, so the stored weight is the trained one). A const is matched by value
  (the weight or its transpose: the torch frontend folds `permute` of a linear weight into it).
- `evaluate(func, feeds)`: run one function of a pymil program with the numpy reference
  implementations (`value_inference`) that coremltools' MIL ops carry. This checks the converted
  program, not Apple's Core ML runtime (which only runs on macOS).
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class QuantWeight:
    name: str  # the torch name of the layer
    weight: np.ndarray  # float32 (out, in): the trained (dequantized) weight
    codes: np.ndarray  # int8 (out, in)
    scale: np.ndarray  # float32 (out, groups)


def _float_matrices(prog):
    """(function, const op, value) for every 2-D float32 constant of `prog`, snapshot per function
    (callers replace ops while iterating)."""
    for func in prog.functions.values():
        for op in list(func.operations):
            if op.op_type == "const":
                val = op.outputs[0].val
                if isinstance(val, np.ndarray) and val.ndim == 2 and val.dtype == np.float32:
                    yield func, op, val


def constexpr_name(name: str) -> str:
    return "calora_q__" + name.replace(".", "_")


def quantize_consts(prog, weights: list[QuantWeight]) -> dict[str, str]:
    """Rewrite `prog` in place; returns {layer name: orientation ("w" or "wT")}. Raises if a weight
    is not found (the graph would silently keep it in float)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    found: dict[str, str] = {}
    for func, op, val in _float_matrices(prog):
        for qw in weights:
            if val.shape == qw.weight.shape and np.array_equal(val, qw.weight):
                orient, codes, scale = "w", qw.codes, qw.scale
            elif val.shape == qw.weight.T.shape and np.array_equal(val, qw.weight.T):
                orient, codes, scale = "wT", qw.codes.T, qw.scale.T
            else:
                continue
            codes = np.ascontiguousarray(codes)
            if codes.min() >= -8 and codes.max() <= 7:
                data = codes.astype(types.nptype_from_builtin(types.int4))
            else:
                data = codes.astype(np.int8)
            name = constexpr_name(qw.name)
            if qw.name in found:  # the same table read twice (a tied LM head): a second, distinct op
                name += f"__{sum(1 for o in func.operations if o.name.startswith(name))}"
            _replace(func, op, lambda before, d=data, sc=scale, n=name: mb.constexpr_blockwise_shift_scale(
                data=d, scale=np.ascontiguousarray(sc, dtype=np.float32), before_op=before, name=n))
            found[qw.name] = orient
            break
    missing = [qw.name for qw in weights if qw.name not in found]
    if missing:
        raise RuntimeError(f"coreml: backbone weights not found as constants of the converted program: {missing}")
    return found


def _replace(func, op, make) -> None:
    """Swap the const `op` for the op `make(before_op)` builds, keeping the op's source scopes (torch
    module names, for debuggability; the graph-pass history may hold several passes, which
    ScopeInfo refuses, so it is not copied)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.scope import ScopeInfo

    scopes = [ScopeInfo(source=k, data=v) for k, v in op.scopes.items() if k.name != "COREMLTOOLS_GRAPH_PASS"]
    with func, contextlib.ExitStack() as stack:
        if scopes:
            stack.enter_context(mb.scope(*scopes))
        new = make(op)
    op.enclosing_block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=new,
                                                     no_check_var_types=True)
    op.enclosing_block.remove_ops([op])


def adapter_consts(prog, tensors: dict[str, np.ndarray], dtype) -> int:
    """Store the given float32 matrices (a task's LoRA, recovery and head weights) as
    `adapter_codec` stores them for `dtype` (an AdapterDType other than float32): float16 as
    `constexpr_cast`, int8 codes with one scale per rank component as `constexpr_blockwise_shift_scale`
    (the ops the backbone's int4/int8 weights use); both materialise float32 at load time, so the
    program still computes in float32. Matched by value like `quantize_consts`; returns how many ops
    were rewritten, and raises if a matrix is not found (it would silently stay float32)."""
    import torch
    from coremltools.converters.mil import Builder as mb

    from . import adapter_codec

    stored = adapter_codec.encode({n: torch.from_numpy(t) for n, t in tensors.items()}, dtype)
    found: set[str] = set()
    for func, op, val in _float_matrices(prog):
        name, transposed = next(((n, val.shape != t.shape) for n, t in tensors.items()
                                 if (val.shape == t.shape and np.array_equal(val, t))
                                 or (val.shape == t.T.shape and np.array_equal(val, t.T))), (None, False))
        if name is None:
            continue
        op_name = f"calora_{dtype.value}__{name.replace('.', '_')}__{len(found)}"
        scale = stored.get(name + adapter_codec.SCALE_SUFFIX)
        if scale is None:
            _replace(func, op, lambda before, v=val, n=op_name: mb.constexpr_cast(
                source_val=v.astype(np.float16), output_dtype="fp32", before_op=before, name=n))
        else:
            codes, sc = stored[name].numpy(), scale.numpy()
            codes, sc = (codes.T, sc.T) if transposed else (codes, sc)
            _replace(func, op, lambda before, d=np.ascontiguousarray(codes), c=np.ascontiguousarray(sc), n=op_name:
                     mb.constexpr_blockwise_shift_scale(data=d, scale=c, before_op=before, name=n))
        found.add(name)
    missing = sorted(set(tensors) - found)
    if missing:
        raise RuntimeError(f"coreml: adapter weights not found as constants of the converted program: {missing[:3]}")
    return len(found)


# ---- reference evaluator --------------------------------------------------------------------------
def _gather_nd(x, indices, batch_dims=0):
    if batch_dims:
        raise NotImplementedError("gather_nd with batch_dims")
    idx = np.asarray(indices)
    k = idx.shape[-1]
    flat = idx.reshape(-1, k)
    out = np.stack([x[tuple(i)] for i in flat])
    return out.reshape(idx.shape[:-1] + x.shape[k:])


def _fallback(op, val):
    """numpy implementations for ops whose `value_inference` is missing."""
    t = op.op_type
    if t == "gather_nd":
        return _gather_nd(val(op.x), val(op.indices), int(val(op.batch_dims)) if op.batch_dims is not None else 0)
    if t == "silu":
        x = val(op.x)
        return x / (1.0 + np.exp(-x))
    if t == "gather":
        x, ind = val(op.x), val(op.indices)
        axis = int(val(op.axis)) if op.axis is not None else 0
        return np.take(x, ind.astype(np.int64), axis=axis)
    raise NotImplementedError(f"no reference implementation for MIL op {t!r}")


def _set(var, value) -> None:
    from coremltools.converters.mil.mil import types

    if types.is_tensor(var.sym_type):
        value = np.asarray(value, dtype=types.nptype_from_builtin(var.dtype))
        # Some ops reduce a rank-0 tensor to a numpy scalar: keep the declared shape.
        if value.shape != tuple(var.shape) and all(isinstance(d, (int, np.integer)) for d in var.shape):
            value = value.reshape(var.shape)
    elif types.is_scalar(var.sym_type):
        value = types.nptype_from_builtin(var.sym_type)(value)
    sym = var.sym_type()
    sym.val = value
    var._sym_val = sym


def _gelu(op) -> np.ndarray | None:
    """GELU vectorised with scipy's erf: coremltools' reference loops over elements in Python
    (a third of a 6-layer BERT's evaluation time); the formulas are the op's documented ones."""
    from scipy.special import erf

    x, mode = op.x.val, op.mode.val if op.mode is not None else "EXACT"
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float64)
    if mode == "EXACT":
        y = 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    elif mode == "TANH_APPROXIMATION":
        y = 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    else:  # SIGMOID_APPROXIMATION
        y = x / (1.0 + np.exp(-1.702 * x))
    return y.astype(np.float32)


def run_op(op, fallback):
    """One op's output values: its reference implementation, else calora's numpy `fallback`."""
    try:
        if op.op_type == "gelu":
            out = _gelu(op)
        elif op.op_type.startswith("constexpr_"):
            out = op.materialized_val_inference()
        else:
            out = op.value_inference()
    except NotImplementedError:
        out = None
    return out if out is not None else fallback(op, lambda v: v.val)


def evaluate(func, feeds: dict[str, np.ndarray], reuse: bool = False) -> list[np.ndarray]:
    """Run `func` (a pymil Function, modified in place) on `feeds`. With `reuse`, a function already
    evaluated keeps its materialized constexpr weights (they do not depend on the inputs), so many
    rows can run through one loaded program; every other op is recomputed."""
    for name, var in func.inputs.items():
        _set(var, feeds[name])
    for op in func.operations:  # constants read back from a .mlpackage hold numpy bools; numpy wants bool
        if op.op_type == "const" and isinstance(op.outputs[0].val, np.bool_):
            op.outputs[0]._sym_val.val = bool(op.outputs[0].val)

    for op in func.operations:
        if all(o.val is not None for o in op.outputs) and (
                op.op_type == "const" or (reuse and op.op_type.startswith("constexpr_"))):
            continue
        out = run_op(op, _fallback)
        outs = out if len(op.outputs) > 1 else (out,)
        for var, v in zip(op.outputs, outs):
            _set(var, v)
    return [np.asarray(v.val) for v in func.outputs]
