"""ONNX Runtime through its C API, as an Android or iOS app's native code calls it (ctypes over the
`libonnxruntime.so` that the onnxruntime wheel ships), for the benchmarks that time what an app does.

Why not the Python API: `onnxruntime.LoraAdapter.Load` reads the whole adapter file into a buffer
(`LoraAdapter::Load` → `LoadLoraAdapterBytes`), while the C API's `CreateLoraAdapter`, which the
C++ `Ort::LoraAdapter` and Java's `OrtLoraAdapter` wrap, memory-maps it (`LoraAdapter::MemoryMap`
in onnxruntime/core/session/lora_adapters.cc). A task switch timed through Python therefore times a
copy that an app never makes.

Only the calls the benchmarks need are bound. `OrtApi` is an append-only table of function
pointers; `_INDEX` holds each one's slot, counted in `include/onnxruntime/core/session/
onnxruntime_c_api.h`. A wrong slot would call the wrong function, so `OrtC.__init__` checks the
table against the library (`GetErrorMessage` of a status made by `CreateStatus` must return the
message it was given) and `tests/test_benchmarks.py` runs a session through it and compares the
logits with the Python API's.
"""

from __future__ import annotations

import ctypes as C
from pathlib import Path

import numpy as np

# Slot of each function in struct OrtApi (0-based): counted in onnxruntime_c_api.h and checked against
# the static_asserts on slot numbers in onnxruntime/core/session/onnxruntime_c_api.cc.
_INDEX = {
    "CreateStatus": 0, "GetErrorMessage": 2,
    "CreateEnv": 3, "CreateSession": 7, "Run": 9, "CreateSessionOptions": 10,
    "CreateRunOptions": 39,
    "CreateTensorWithDataAsOrtValue": 49, "GetTensorMutableData": 51,
    "CreateCpuMemoryInfo": 69, "ReleaseStatus": 93,
    "ReleaseSession": 95, "ReleaseValue": 96, "ReleaseRunOptions": 97, "ReleaseSessionOptions": 100,
    # API version 20 (ONNX Runtime 1.20): onnxruntime_c_api.cc asserts SetEpDynamicOptions at 284
    "CreateLoraAdapter": 280, "CreateLoraAdapterFromArray": 281, "ReleaseLoraAdapter": 282,
    "RunOptionsAddActiveLoraAdapter": 283,
}
_API_VERSION = 20  # the LoRA adapter calls came with API version 20 (ONNX Runtime 1.20)
_INT64 = 7  # ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64
_P = C.c_void_p


class OrtCError(RuntimeError):
    """A C API call returned an error status (its message attached)."""


def library_path() -> Path:
    """The C API library inside the installed onnxruntime wheel."""
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    found = sorted([*capi.glob("libonnxruntime.so*"), *capi.glob("libonnxruntime*.dylib")])
    if not found:
        raise FileNotFoundError("onnxruntime's wheel has no capi/libonnxruntime.so or .dylib")
    return found[0]


class _ApiBase(C.Structure):
    _fields_ = [("GetApi", C.CFUNCTYPE(_P, C.c_uint32)), ("GetVersionString", C.CFUNCTYPE(C.c_char_p))]


class OrtC:
    """The few C API calls an app makes to run a model and switch LoRA adapters."""

    def __init__(self, lib: Path | None = None) -> None:
        self.lib = C.CDLL(str(lib or library_path()))
        self.lib.OrtGetApiBase.restype = C.POINTER(_ApiBase)
        base = self.lib.OrtGetApiBase().contents
        self.version = base.GetVersionString().decode()
        api = base.GetApi(_API_VERSION)
        if not api:
            raise OrtCError(f"onnxruntime {self.version} does not offer C API version {_API_VERSION}")
        self._table = C.cast(api, C.POINTER(_P))
        self._fns: dict[str, object] = {}
        st = self._fn("CreateStatus", _P, C.c_int, C.c_char_p)(2, b"calora slot check")
        msg = self._fn("GetErrorMessage", C.c_char_p, _P)(st)
        self._fn("ReleaseStatus", None, _P)(st)
        if msg != b"calora slot check":
            raise OrtCError(f"OrtApi slots do not match onnxruntime {self.version} (GetErrorMessage gave {msg!r})")
        env = _P()
        self._ok(self._fn("CreateEnv", _P, C.c_int, C.c_char_p, C.POINTER(_P))(3, b"calora", C.byref(env)))
        self.env = env
        info = _P()
        self._ok(self._fn("CreateCpuMemoryInfo", _P, C.c_int, C.c_int, C.POINTER(_P))(1, 0, C.byref(info)))
        self.mem = info

    def _fn(self, name: str, restype, *argtypes):
        if name not in self._fns:
            self._fns[name] = C.CFUNCTYPE(restype, *argtypes)(self._table[_INDEX[name]])
        return self._fns[name]

    def _ok(self, status) -> None:
        if status:
            msg = self._fn("GetErrorMessage", C.c_char_p, _P)(status)
            self._fn("ReleaseStatus", None, _P)(status)
            raise OrtCError(msg.decode(errors="replace"))

    # ---- sessions ------------------------------------------------------------------------------
    def session(self, path: str | Path) -> int:
        """`CreateSession` with default session options (as `onnxruntime.InferenceSession` has)."""
        opts, sess = _P(), _P()
        self._ok(self._fn("CreateSessionOptions", _P, C.POINTER(_P))(C.byref(opts)))
        try:
            self._ok(self._fn("CreateSession", _P, _P, C.c_char_p, _P, C.POINTER(_P))(
                self.env, str(path).encode(), opts, C.byref(sess)))
        finally:
            self._fn("ReleaseSessionOptions", None, _P)(opts)
        return sess.value

    def release_session(self, sess: int) -> None:
        self._fn("ReleaseSession", None, _P)(sess)

    # ---- LoRA adapters -------------------------------------------------------------------------
    def adapter(self, path: str | Path) -> int:
        """`CreateLoraAdapter(path, NULL)`: the file memory-mapped, its tensors used in place on CPU."""
        out = _P()
        self._ok(self._fn("CreateLoraAdapter", _P, C.c_char_p, _P, C.POINTER(_P))(
            str(path).encode(), None, C.byref(out)))
        return out.value

    def release_adapter(self, adapter: int) -> None:
        self._fn("ReleaseLoraAdapter", None, _P)(adapter)

    def run_options(self, adapter: int | None = None) -> int:
        """`CreateRunOptions`, with `adapter` made active (`RunOptionsAddActiveLoraAdapter`)."""
        ro = _P()
        self._ok(self._fn("CreateRunOptions", _P, C.POINTER(_P))(C.byref(ro)))
        if adapter is not None:
            self._ok(self._fn("RunOptionsAddActiveLoraAdapter", _P, _P, _P)(ro, adapter))
        return ro.value

    def release_run_options(self, ro: int) -> None:
        self._fn("ReleaseRunOptions", None, _P)(ro)

    # ---- running -------------------------------------------------------------------------------
    def inputs(self, feed: dict[str, np.ndarray]) -> tuple:
        """int64 input tensors over the arrays' own memory (kept alive by the returned tuple)."""
        names, values, keep = [], [], []
        make = self._fn("CreateTensorWithDataAsOrtValue", _P, _P, _P, C.c_size_t, C.POINTER(C.c_int64),
                        C.c_size_t, C.c_int, C.POINTER(_P))
        for name, arr in feed.items():
            arr = np.ascontiguousarray(arr, dtype=np.int64)
            shape = (C.c_int64 * arr.ndim)(*arr.shape)
            val = _P()
            self._ok(make(self.mem, arr.ctypes.data, arr.nbytes, shape, arr.ndim, _INT64, C.byref(val)))
            names.append(name.encode())
            values.append(val.value)
            keep.append((arr, shape))
        return (C.c_char_p * len(names))(*names), (_P * len(values))(*values), keep

    def release_inputs(self, inputs: tuple) -> None:
        for v in inputs[1]:
            self._fn("ReleaseValue", None, _P)(v)

    def run(self, sess: int, inputs: tuple, output: str, shape: tuple[int, ...], ro: int | None = None) -> np.ndarray:
        """`Run` with one float output of a known `shape`, copied out as a numpy array."""
        names, values, _ = inputs
        out = (_P * 1)()
        self._ok(self._fn("Run", _P, _P, _P, C.POINTER(C.c_char_p), C.POINTER(_P), C.c_size_t,
                          C.POINTER(C.c_char_p), C.c_size_t, C.POINTER(_P))(
            sess, ro, names, values, len(values), (C.c_char_p * 1)(output.encode()), 1, out))
        try:
            data = _P()
            self._ok(self._fn("GetTensorMutableData", _P, _P, C.POINTER(_P))(out[0], C.byref(data)))
            n = int(np.prod(shape))
            return np.ctypeslib.as_array(C.cast(data, C.POINTER(C.c_float)), shape=(n,)).reshape(shape).copy()
        finally:
            self._fn("ReleaseValue", None, _P)(out[0])
