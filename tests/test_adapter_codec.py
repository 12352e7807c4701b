"""How swappable adapter files store their tensors (`calora.targets.adapter_codec`): float16,
float32 and int8 with one scale per rank component."""

from __future__ import annotations

import torch

from calora.targets import adapter_codec as codec
from calora.targets.base import AdapterDType

INT8 = AdapterDType.INT8


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    down = torch.randn(4, 32, generator=g)
    down[2] *= 30  # one rank component 30x the others: a per-tensor scale would crush the rest
    return {"l.0.q.lora_A.weight": torch.randn(4, 32, generator=g), "l.0.q.lora_B.weight": torch.randn(48, 4, generator=g),
            "l.0.q.recovery.down.weight": down, "l.0.q.recovery.up.weight": torch.zeros(48, 4),
            "classifier.weight": torch.randn(3, 32, generator=g), "classifier.bias": torch.randn(3, generator=g)}


def test_int8_codes_and_scales_per_rank_component():
    t = _tensors()
    stored = codec.encode(t, INT8)
    names = list(t)
    assert list(stored) == codec.stored_names(names, INT8)  # each scale right after its matrix
    for n in names:
        assert stored[n].dtype == codec.stored_dtype(n, INT8)
    assert stored["l.0.q.lora_A.weight.scale"].shape == (4, 1)  # one scale per rank component: rows of A
    assert stored["l.0.q.lora_B.weight.scale"].shape == (1, 4)  # ... and columns of B
    assert stored["classifier.weight"].dtype == torch.float16 and "classifier.weight.scale" not in stored
    assert stored["l.0.q.recovery.down.weight"].abs().max() == 127
    # the all-zero (zero-initialised) up-projection: codes 0, scale 1, decodes to exact zeros
    assert not stored["l.0.q.recovery.up.weight"].any() and (stored["l.0.q.recovery.up.weight.scale"] == 1).all()
    back = dict(zip(names, codec.decode(stored, names)))
    for n in names:
        assert back[n].dtype == torch.float32 and back[n].shape == t[n].shape
        scale = stored.get(n + codec.SCALE_SUFFIX)
        bound = scale / 2 + 1e-7 if scale is not None else t[n].abs() * 2 ** -10 + 1e-7  # half a step
        assert ((back[n] - t[n]).abs() <= bound).all(), n
    # the small rank components keep their own resolution next to the 30x one
    small = (back["l.0.q.recovery.down.weight"][0] - t["l.0.q.recovery.down.weight"][0]).abs().max()
    assert small < t["l.0.q.recovery.down.weight"][0].abs().max() / 200


def test_float_dtypes_and_rounded_grid():
    t = _tensors()
    for dtype, torch_dtype in ((AdapterDType.FLOAT16, torch.float16), (AdapterDType.FLOAT32, torch.float32)):
        stored = codec.encode(t, dtype)
        assert list(stored) == list(t) == codec.stored_names(list(t), dtype)
        assert {v.dtype for v in stored.values()} == {torch_dtype}
    assert all(torch.equal(a, b) for a, b in zip(codec.rounded(t, AdapterDType.FLOAT32).values(), t.values()))
    grid = codec.rounded(t, INT8)
    assert torch.equal(codec.rounded(grid, INT8)["l.0.q.lora_A.weight"], grid["l.0.q.lora_A.weight"])  # idempotent


def test_int8_bytes_are_about_a_quarter():
    t = {k: v for k, v in _tensors().items() if not k.startswith("classifier")}
    size = lambda d: sum(v.numel() * v.element_size() for v in d.values())  # noqa: E731
    assert size(codec.encode(t, INT8)) < 0.3 * size(t)
