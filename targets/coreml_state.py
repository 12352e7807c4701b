"""Stateful, dynamic-shape extension of the Core ML program-level evaluator (`coreml_mil.evaluate`)
for generative programs (KV cache as `ct.StateType`, prompt length as `ct.RangeDim`).

- State inputs live in a dict kept across calls (zeros at start, as `model.make_state()` gives).
  coremltools has no `value_inference` for the state ops, so: read_state -> a copy of the state;
  coreml_update_state(state, value) -> stores value and returns it (a saved package holds
  write_state + read_state; coremltools' milproto loader turns write_state back into
  coreml_update_state).
- Dynamic shapes: the converted program's types carry symbols (is0, ...); each var gets its
  concrete type when its value is set (later ops' `value_inference` read shapes), and the declared
  symbolic types are restored before every call. Every non-const op is recomputed per call.
- `range_1d` fallback (its value_inference gives None above 262,144 elements).

This checks the converted program, not Apple's Core ML runtime (macOS/iOS only).
"""

from __future__ import annotations

import numpy as np

from .coreml_mil import _fallback as _base_fallback, run_op


def _is_state(var) -> bool:
    from coremltools.converters.mil.mil import types

    return types.is_state(var.sym_type)


def state_specs(func) -> dict[str, tuple[tuple[int, ...], type]]:
    """{state input name: (shape, numpy dtype)} of a function."""
    from coremltools.converters.mil.mil import types

    out = {}
    for name, var in func.inputs.items():
        if _is_state(var):
            wrapped = var.sym_type.wrapped_type()
            out[name] = (tuple(int(d) for d in wrapped.get_shape()),
                         types.nptype_from_builtin(wrapped.get_primitive()))
    return out


def _set(var, value) -> None:
    """Store a concrete value and a concrete type (shape) in `var`."""
    from coremltools.converters.mil.mil import types

    if types.is_tensor(var.sym_type):
        dtype = types.nptype_from_builtin(var.dtype)
        value = np.asarray(value, dtype=dtype)
        declared = tuple(var.shape)
        if value.shape != declared and all(isinstance(d, (int, np.integer)) for d in declared) \
                and value.size == int(np.prod(declared, dtype=np.int64)):
            value = value.reshape(declared)  # e.g. an op that returned a numpy scalar for a rank-0 tensor
        if value.shape != declared:
            if len(value.shape) != len(declared) or any(
                    isinstance(d, (int, np.integer)) and d != v for d, v in zip(declared, value.shape)):
                raise ValueError(f"{var.name}: value shape {value.shape} does not fit declared {declared}")
            var._sym_type = types.tensor(var.dtype, value.shape)  # symbolic dims -> concrete
    elif types.is_scalar(var.sym_type):
        value = types.nptype_from_builtin(var.sym_type)(np.asarray(value).reshape(()))
    sym = var.sym_type()
    sym.val = value
    var._sym_val = sym


def _fallback(op, val):
    if op.op_type == "range_1d":
        return np.arange(val(op.start), val(op.end), val(op.step))
    return _base_fallback(op, val)


class StatefulEvaluator:
    """Runs one function of a pymil program call after call, holding its states between calls."""

    def __init__(self, func) -> None:
        self.func = func
        self.specs = state_specs(func)
        for op in func.operations:  # consts read back from a .mlpackage hold numpy bools
            if op.op_type == "const" and isinstance(op.outputs[0].val, np.bool_):
                op.outputs[0]._sym_val.val = bool(op.outputs[0].val)
        # The converted (possibly symbolic) type of every var: restored before each call, so a
        # shape made concrete by one call does not constrain the next.
        self._declared = [(var, var._sym_type) for var in func.inputs.values()]
        self._declared += [(var, var._sym_type) for op in func.operations if op.op_type != "const"
                           for var in op.outputs]
        self.reset()

    def reset(self) -> None:
        """Fresh states (zeros), as a new `MLState` from `model.make_state()`."""
        self.states = {n: np.zeros(shape, dtype) for n, (shape, dtype) in self.specs.items()}

    def __call__(self, feeds: dict[str, np.ndarray], reuse: bool = True) -> list[np.ndarray]:
        func = self.func
        for var, declared in self._declared:
            var._sym_type = declared
        for name, var in func.inputs.items():
            if name not in self.specs:
                _set(var, feeds[name])

        for op in func.operations:
            t = op.op_type
            if t == "const" or (reuse and t.startswith("constexpr_") and all(o.val is not None for o in op.outputs)):
                continue
            if t == "read_state":
                out = self.states[op.input.name].copy()
            elif t == "coreml_update_state":
                self.states[op.state.name] = np.array(op.value.val, copy=True)
                out = self.states[op.state.name].copy()
            else:
                out = run_op(op, _fallback)
            outs = out if len(op.outputs) > 1 else (out,)
            for var, v in zip(op.outputs, outs):
                _set(var, v)
        return [np.asarray(v.val) for v in func.outputs]
