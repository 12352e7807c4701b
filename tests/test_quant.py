import pytest
import torch

from calora.train.quant import QuantLinear, dequantize_weight, fake_quant_activation, quantize_weight


@pytest.mark.parametrize("bits, group", [(4, 32), (8, None), (4, 16)])
def test_quantize_error_within_half_step_and_zeros_kept(bits, group):
    torch.manual_seed(0)
    w = torch.randn(48, 64)
    w[w.abs() < 0.3] = 0.0
    codes, scale = quantize_weight(w, bits, group)
    lo, hi = (-8, 7) if bits == 4 else (-128, 127)
    assert codes.dtype == torch.int8 and codes.min() >= lo and codes.max() <= hi
    deq = dequantize_weight(codes, scale)
    step = scale.repeat_interleave(64 // scale.shape[1], dim=1)
    assert torch.all((deq - w).abs() <= step / 2 + 1e-6)
    assert torch.all(deq[w == 0] == 0)  # symmetric: pruned weights stay exactly zero


def test_group_must_divide_in_features():
    with pytest.raises(ValueError, match="divisible"):
        quantize_weight(torch.randn(4, 40), 4, 32)


def test_activation_fake_quant_is_close_and_straight_through():
    x = torch.randn(3, 5, 64, requires_grad=True)
    y = fake_quant_activation(x)
    step = (x.detach().amax(-1, keepdim=True).clamp(min=0) - x.detach().amin(-1, keepdim=True).clamp(max=0)) / 255
    assert torch.all((y - x).abs() <= step * 0.51 + 1e-6)
    assert not torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    # the written-out form of the same grid (scale, zero point, codes rounded half to even), value for value
    xd = x.detach()
    lo, hi = xd.amin(-1, keepdim=True).clamp(max=0), xd.amax(-1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / 255
    zero = torch.clamp(torch.round(-128 - lo / scale), -128, 127)
    assert torch.equal(y.detach(), (torch.clamp(torch.round(xd / scale) + zero, -128, 127) - zero) * scale)
    before = xd.clone()
    fake_quant_activation(xd)
    assert torch.equal(xd, before)  # computed in place, but never in the input's own storage
    assert fake_quant_activation(xd.bfloat16()).dtype == torch.bfloat16


def test_quant_linear_matches_its_dequantized_weight():
    lin = torch.nn.Linear(64, 16)
    q = QuantLinear.from_linear(lin, 4, 32, act_quant=False)
    x = torch.randn(2, 64)
    assert torch.allclose(q(x), x @ dequantize_weight(q.codes, q.scale).T + lin.bias, atol=1e-6)
    assert isinstance(q, torch.nn.Linear)  # so that peft can wrap it


def test_per_tensor_activations_match_onnxruntime_int8_kernels_and_per_token_do_not():
    """`act:tensor` simulates ONNX Runtime's DynamicQuantizeMatMul (the fused form of what
    quantize_dynamic writes) to float rounding; the per-token simulation does not match it."""
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 96)
    x = torch.randn(3, 16, 64)
    x[..., 5] *= 20  # an outlier channel, as transformer activations have: per-tensor ranges differ from per-token
    per_tensor = QuantLinear.from_linear(lin, 8, None, act_quant=True, act_per_tensor=True)
    per_token = QuantLinear.from_linear(lin, 8, None, act_quant=True)
    codes = per_tensor.codes.numpy().T.copy()
    scale = per_tensor.scale.numpy().reshape(-1)
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeMatMul", ["x", "B", "s", "zp", "bias"], ["y"], domain="com.microsoft")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 96])],
        [numpy_helper.from_array(codes, "B"), numpy_helper.from_array(scale, "s"),
         numpy_helper.from_array(np.zeros_like(codes[0]), "zp"), numpy_helper.from_array(lin.bias.detach().numpy(), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        sim_tensor, sim_token = per_tensor(x).numpy(), per_token(x).numpy()
    for i in range(3):  # each example on its own, as the app runs it; the batch gave each row its own scale
        got = sess.run(None, {"x": x[i:i + 1].numpy()})[0]
        assert np.abs(got - sim_tensor[i:i + 1]).max() < 1e-4
        assert np.abs(got - sim_token[i:i + 1]).max() > 1e-2
