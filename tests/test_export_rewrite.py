"""Rewrites of ConvTranspose into MatMul or per-phase Conv compute the same values as PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from distgan.export.rewrite import rewrite_conv_transpose


def conv_transpose_model(weight: np.ndarray, bias: np.ndarray | None, size: int, stride: int, pads: list[int],
                         opset: int = 18) -> onnx.ModelProto:
    channels_in, _, kernel, _ = weight.shape
    inputs = ["x", "weight"] + (["bias"] if bias is not None else [])
    node = helper.make_node("ConvTranspose", inputs, ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                            pads=pads)
    initializers = [numpy_helper.from_array(weight, "weight")]
    if bias is not None:
        initializers.append(numpy_helper.from_array(bias, "bias"))
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              ["batch", channels_in, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.mark.parametrize(("channels_out", "kernel", "stride", "padding", "size", "use_bias", "expected_ops"), [
    (16, 4, 2, 1, 5, True, {"Conv", "DepthToSpace"}),  # the DCGAN upsampling layer
    (16, 4, 2, 0, 3, False, {"Conv", "DepthToSpace"}),
    (16, 6, 3, 0, 3, True, {"Conv", "DepthToSpace"}),
    (32, 4, 2, 1, 7, False, {"Conv", "DepthToSpace"}),
    (16, 7, 1, 0, 1, True, {"MatMul"}),  # the projection of z onto a 7x7 map
    (4, 4, 1, 0, 1, False, {"MatMul"}),
    (16, 3, 2, 1, 5, True, {"MatMul", "Col2Im"}),  # odd output size 9: phases would differ in size
    (4, 4, 2, 1, 5, False, {"MatMul", "Col2Im"}),  # few output channels: blocked Conv would pad them
])
def test_rewrite_matches_pytorch(channels_out: int, kernel: int, stride: int, padding: int, size: int,
                                 use_bias: bool, expected_ops: set[str]):
    rng = np.random.default_rng(channels_out + kernel + stride + padding + size)
    weight = rng.standard_normal((8, channels_out, kernel, kernel)).astype(np.float32)
    bias = rng.standard_normal(channels_out).astype(np.float32) if use_bias else None
    model = conv_transpose_model(weight, bias, size, stride, [padding] * 4)
    rewritten, count = rewrite_conv_transpose(model)
    onnx.checker.check_model(rewritten, full_check=True)
    op_types = {node.op_type for node in rewritten.graph.node}
    assert expected_ops <= op_types
    assert "ConvTranspose" not in op_types
    assert count == 1

    session = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch_size in (1, 3):
        x = rng.standard_normal((batch_size, 8, size, size)).astype(np.float32)
        expected = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(weight),
                                      None if bias is None else torch.from_numpy(bias), stride, padding).numpy()
        actual = session.run(None, {"x": x})[0]
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() < 1e-4


def test_rewrite_before_opset_18_keeps_conv_transpose():
    weight = np.random.default_rng(0).standard_normal((8, 4, 4, 4)).astype(np.float32)
    rewritten, count = rewrite_conv_transpose(conv_transpose_model(weight, None, 5, 2, [1] * 4, opset=17))
    assert count == 0
    assert [node.op_type for node in rewritten.graph.node] == ["ConvTranspose"]


@pytest.mark.parametrize(("kernel", "stride", "padding", "use_bias", "activation", "opset"), [
    (4, 2, 1, True, "Relu", 18),  # the last two layers of a DCGAN generator
    (4, 2, 1, True, "Relu", 17),  # before Col2Im: one ConvTranspose over the stacked phases
    (3, 1, 1, False, "LeakyRelu", 18),
    (5, 2, 2, True, "Relu", 17),
    (2, 2, 0, False, "Tanh", 18),
])
def test_rewrite_runs_next_layer_on_phases(kernel: int, stride: int, padding: int, use_bias: bool,
                                           activation: str, opset: int):
    rng = np.random.default_rng(kernel * 10 + stride)
    first = rng.standard_normal((8, 16, 4, 4)).astype(np.float32)
    second = rng.standard_normal((16, 3, kernel, kernel)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32) if use_bias else None
    nodes = [
        helper.make_node("ConvTranspose", ["x", "first"], ["hidden"], kernel_shape=[4, 4], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node(activation, ["hidden"], ["activated"]),
        helper.make_node("ConvTranspose", ["activated", "second"] + (["bias"] if use_bias else []), ["y"],
                         kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[padding] * 4),
    ]
    initializers = [numpy_helper.from_array(first, "first"), numpy_helper.from_array(second, "second")]
    if bias is not None:
        initializers.append(numpy_helper.from_array(bias, "bias"))
    graph = helper.make_graph(nodes, "two_layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  ["batch", 8, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)

    rewritten, count = rewrite_conv_transpose(model)
    onnx.checker.check_model(rewritten, full_check=True)
    op_types = [node.op_type for node in rewritten.graph.node]
    assert count == 2
    assert "DepthToSpace" not in op_types
    # The second layer runs once over the stacked phases of the first.
    assert op_types.count("Col2Im") == (1 if opset >= 18 else 0)
    assert op_types.count("ConvTranspose") == (0 if opset >= 18 else 1)

    activations = {"Relu": torch.relu, "LeakyRelu": lambda t: F.leaky_relu(t, 0.01), "Tanh": torch.tanh}
    session = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch_size in (1, 2):
        x = rng.standard_normal((batch_size, 8, 5, 5)).astype(np.float32)
        hidden = activations[activation](F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(first), None, 2, 1))
        bias_tensor = None if bias is None else torch.from_numpy(bias)
        expected = F.conv_transpose2d(hidden, torch.from_numpy(second), bias_tensor, stride, padding).numpy()
        actual = session.run(None, {"x": x})[0]
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() < 1e-3


def test_rewrite_folds_batch_norm_after_conv_transpose():
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((8, 16, 4, 4)).astype(np.float32)
    scale, shift, mean = (rng.standard_normal(16).astype(np.float32) for _ in range(3))
    variance = rng.uniform(0.5, 2.0, 16).astype(np.float32)
    nodes = [helper.make_node("ConvTranspose", ["x", "weight"], ["hidden"], kernel_shape=[4, 4], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["hidden", "scale", "shift", "mean", "variance"], ["y"],
                              epsilon=1e-3)]
    initializers = [numpy_helper.from_array(array, name) for name, array in
                    (("weight", weight), ("scale", scale), ("shift", shift), ("mean", mean), ("variance", variance))]
    graph = helper.make_graph(nodes, "norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["batch", 8, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)

    rewritten, count = rewrite_conv_transpose(model)
    op_types = [node.op_type for node in rewritten.graph.node]
    assert count == 1
    assert "BatchNormalization" not in op_types
    assert "DepthToSpace" in op_types

    x = rng.standard_normal((2, 8, 5, 5)).astype(np.float32)
    hidden = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(weight), None, 2, 1)
    expected = F.batch_norm(hidden, torch.from_numpy(mean), torch.from_numpy(variance), torch.from_numpy(scale),
                            torch.from_numpy(shift), training=False, eps=1e-3).numpy()
    session = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"x": x})[0] - expected).max() < 1e-3
