"""Rewrites of transposed convolutions into operations that onnxruntime's CPU kernels run faster.

onnxruntime (1.31) computes ConvTranspose image by image as a small matrix
product followed by a scatter (col2im), which wastes most of the CPU on the
layers of a DCGAN generator. These exact rewrites replace it:

- A ConvTranspose on a 1x1 input without padding (the projection of z) is a
  matrix product: [B, C] x [C, O*kh*kw], reshaped to [B, O, kh, kw].
- A ConvTranspose with stride s > 1 and at least POLYPHASE_MIN_CHANNELS
  output channels is s*s ordinary convolutions, one per output phase
  (polyphase decomposition), whose outputs DepthToSpace interleaves. Each
  phase convolves the input with the kernel taps that land on it, so the work
  is the same, and onnxruntime runs Conv with its blocked (NCHWc) kernels.
- A ConvTranspose that reads such an interleaved map (through elementwise
  ops such as Relu) runs on the stacked phases with the combined stride and
  a kernel that places each phase's weights at its offset. This removes the
  DepthToSpace copy, which onnxruntime runs on one thread and which took
  about 30% of a DCGAN generator's time at batch 64.
- From opset 18 on, the remaining ConvTranspose nodes (and the previous one)
  become one batched MatMul and Col2Im, which onnxruntime spreads over all
  threads.

All are the same function up to float rounding; the caller validates the
rewritten file against PyTorch like any other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Below this many output channels the blocked Conv kernels pad the channel axis, and a plain scatter is
# faster (measured with onnxruntime 1.31 on a 2-core AVX-512 CPU: the 64 -> 1 channel layer of the MNIST
# DCGAN took several times longer as four phases).
POLYPHASE_MIN_CHANNELS = 16
COL2IM_OPSET = 18  # the first opset with Col2Im in the default ONNX domain
# Ops that act on each element alone, so they commute with the interleaving of phases.
ELEMENTWISE_OPS = {"Relu", "LeakyRelu", "Tanh", "Sigmoid", "Elu", "Selu", "Identity"}


@dataclass
class _ConvTranspose:
    node: onnx.NodeProto
    weight: np.ndarray  # [C_in, C_out, kh, kw]
    bias: np.ndarray | None  # [C_out]
    input_size: tuple[int, int]  # static (H, W) of the input
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # h_begin, w_begin, h_end, w_end


def _attribute(node: onnx.NodeProto, name: str, default: object) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _static_spatial_size(model: onnx.ModelProto, name: str) -> tuple[int, int] | None:
    for info in [*model.graph.value_info, *model.graph.input]:
        if info.name == name:
            dims = info.type.tensor_type.shape.dim
            if len(dims) == 4 and all(dim.HasField("dim_value") for dim in dims[2:]):
                return dims[2].dim_value, dims[3].dim_value
    return None


def _candidate(model: onnx.ModelProto, node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> _ConvTranspose | None:
    """Describe a ConvTranspose that the rewrites support, or return None."""
    if node.op_type != "ConvTranspose" or node.domain not in ("", "ai.onnx") or node.input[1] not in constants:
        return None
    weight = constants[node.input[1]]
    bias = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if weight.ndim != 4 or (len(node.input) > 2 and node.input[2] and bias is None):
        return None
    plain = (_attribute(node, "group", 1) == 1 and list(_attribute(node, "dilations", [1, 1])) == [1, 1]
             and not any(_attribute(node, "output_padding", [0, 0]))
             and _attribute(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
             and not _attribute(node, "output_shape", []))
    size = _static_spatial_size(model, node.input[0])
    if not plain or size is None:
        return None
    strides = tuple(_attribute(node, "strides", [1, 1]))
    pads = tuple(_attribute(node, "pads", [0, 0, 0, 0]))
    return _ConvTranspose(node, weight, bias, size, strides, pads)  # type: ignore[arg-type]


def _projection_nodes(layer: _ConvTranspose, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """Rewrite a ConvTranspose on a 1x1 input without padding as Flatten, MatMul, Add and Reshape."""
    if layer.input_size != (1, 1) or any(layer.pads):
        return None
    channels_in, channels_out, kernel_h, kernel_w = layer.weight.shape
    node = layer.node
    matrix = layer.weight.reshape(channels_in, channels_out * kernel_h * kernel_w)
    shape = np.array([-1, channels_out, kernel_h, kernel_w], np.int64)
    initializers = [numpy_helper.from_array(matrix, f"{prefix}_matrix"),
                    numpy_helper.from_array(shape, f"{prefix}_shape")]
    nodes = [helper.make_node("Flatten", [node.input[0]], [f"{prefix}_flat"], axis=1, name=f"{prefix}_flatten"),
             helper.make_node("MatMul", [f"{prefix}_flat", f"{prefix}_matrix"], [f"{prefix}_product"],
                              name=f"{prefix}_matmul")]
    product = f"{prefix}_product"
    if layer.bias is not None:
        initializers.append(numpy_helper.from_array(np.repeat(layer.bias, kernel_h * kernel_w), f"{prefix}_bias"))
        nodes.append(helper.make_node("Add", [product, f"{prefix}_bias"], [f"{prefix}_biased"], name=f"{prefix}_add"))
        product = f"{prefix}_biased"
    nodes.append(helper.make_node("Reshape", [product, f"{prefix}_shape"], [node.output[0]], name=f"{prefix}_reshape"))
    return nodes, initializers


def _phase(size_in: int, kernel: int, stride: int, pad_begin: int, phase: int, phase_size: int
           ) -> tuple[list[int], int, int] | None:
    """Return (kernel taps, pad begin, pad end) of the convolution for one output phase along one axis.

    Output index stride*m + phase receives input index m + q - j through tap
    phase_offset + stride*j. As a cross-correlation over a window of J taps
    this is kernel [tap(J-1), ..., tap(0)] with the pads returned.
    """
    offset = (phase + pad_begin) % stride
    taps = math.ceil((kernel - offset) / stride)
    if taps < 1:
        return None
    shift = (phase + pad_begin - offset) // stride
    begin = taps - 1 - shift
    end = phase_size - size_in - begin + taps - 1
    if begin < 0 or end < 0:
        return None
    return [offset + stride * (taps - 1 - t) for t in range(taps)], begin, end


def _polyphase_nodes(layer: _ConvTranspose, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """Rewrite a ConvTranspose with equal strides > 1 as one Conv per output phase and DepthToSpace."""
    stride = layer.strides[0]
    if stride < 2 or layer.strides[1] != stride or layer.weight.shape[1] < POLYPHASE_MIN_CHANNELS:
        return None
    kernel_h, kernel_w = layer.weight.shape[2:]
    sizes_out = [(size - 1) * stride - layer.pads[axis] - layer.pads[axis + 2] + kernel
                 for axis, (size, kernel) in enumerate(zip(layer.input_size, (kernel_h, kernel_w)))]
    if any(size % stride for size in sizes_out):
        return None
    node = layer.node
    nodes, initializers, phase_outputs = [], [], []
    for phase_h in range(stride):
        for phase_w in range(stride):
            plan_h = _phase(layer.input_size[0], kernel_h, stride, layer.pads[0], phase_h, sizes_out[0] // stride)
            plan_w = _phase(layer.input_size[1], kernel_w, stride, layer.pads[1], phase_w, sizes_out[1] // stride)
            if plan_h is None or plan_w is None:
                return None
            (taps_h, begin_h, end_h), (taps_w, begin_w, end_w) = plan_h, plan_w
            # ConvTranspose weights are [C_in, C_out, kh, kw]; Conv weights are [C_out, C_in, kh, kw].
            weight = layer.weight[:, :, taps_h][:, :, :, taps_w].transpose(1, 0, 2, 3).copy()
            name = f"{prefix}_phase{phase_h}{phase_w}"
            inputs = [node.input[0], f"{name}_weight"]
            initializers.append(numpy_helper.from_array(weight, f"{name}_weight"))
            if layer.bias is not None:
                initializers.append(numpy_helper.from_array(layer.bias, f"{name}_bias"))
                inputs.append(f"{name}_bias")
            nodes.append(helper.make_node("Conv", inputs, [name], name=name, kernel_shape=list(weight.shape[2:]),
                                          pads=[begin_h, begin_w, end_h, end_w]))
            phase_outputs.append(name)
    # Channels ordered (phase_h, phase_w, c) are DepthToSpace's "DCR" order.
    nodes.append(helper.make_node("Concat", phase_outputs, [f"{prefix}_phases"], axis=1, name=f"{prefix}_concat"))
    nodes.append(helper.make_node("DepthToSpace", [f"{prefix}_phases"], [node.output[0]], blocksize=stride,
                                  mode="DCR", name=f"{prefix}_interleave"))
    return nodes, initializers


def _scatter_nodes(input_name: str, weight: np.ndarray, bias_name: str | None, strides: list[int],
                   pads: list[int], output_size: list[int], output_name: str, prefix: str, opset: int
                   ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Emit a ConvTranspose as one batched MatMul and Col2Im, or as a ConvTranspose node before opset 18.

    onnxruntime runs the batched MatMul on all threads, which its ConvTranspose,
    looping over the images of the batch, does not.
    """
    channels_in, channels_out, kernel_h, kernel_w = weight.shape
    if opset < COL2IM_OPSET:
        inputs = [input_name, f"{prefix}_weight"] + ([bias_name] if bias_name else [])
        node = helper.make_node("ConvTranspose", inputs, [output_name], name=f"{prefix}_scatter",
                                kernel_shape=[kernel_h, kernel_w], strides=strides, pads=pads)
        return [node], [numpy_helper.from_array(weight, f"{prefix}_weight")]
    # Col2Im reads rows in (channel, kernel row, kernel column) order, as ConvTranspose weights flatten.
    matrix = weight.reshape(channels_in, channels_out * kernel_h * kernel_w).T.copy()
    initializers = [numpy_helper.from_array(matrix, f"{prefix}_matrix"),
                    numpy_helper.from_array(np.array([0, channels_in, -1], np.int64), f"{prefix}_flat_shape"),
                    numpy_helper.from_array(np.array(output_size, np.int64), f"{prefix}_image_shape"),
                    numpy_helper.from_array(np.array([kernel_h, kernel_w], np.int64), f"{prefix}_block_shape")]
    image = output_name if bias_name is None else f"{prefix}_image"
    nodes = [
        helper.make_node("Reshape", [input_name, f"{prefix}_flat_shape"], [f"{prefix}_flat"], name=f"{prefix}_flatten"),
        helper.make_node("MatMul", [f"{prefix}_matrix", f"{prefix}_flat"], [f"{prefix}_columns"],
                         name=f"{prefix}_matmul"),
        helper.make_node("Col2Im", [f"{prefix}_columns", f"{prefix}_image_shape", f"{prefix}_block_shape"], [image],
                         name=f"{prefix}_col2im", strides=strides, pads=pads),
    ]
    if bias_name is not None:
        initializers.append(numpy_helper.from_array(np.array([1, channels_out, 1, 1], np.int64),
                                                    f"{prefix}_bias_shape"))
        nodes += [helper.make_node("Reshape", [bias_name, f"{prefix}_bias_shape"], [f"{prefix}_bias"],
                                   name=f"{prefix}_bias_reshape"),
                  helper.make_node("Add", [image, f"{prefix}_bias"], [output_name], name=f"{prefix}_add_bias")]
    return nodes, initializers


def _output_size(layer: _ConvTranspose) -> list[int]:
    kernel = layer.weight.shape[2:]
    return [(size - 1) * layer.strides[axis] - layer.pads[axis] - layer.pads[axis + 2] + kernel[axis]
            for axis, size in enumerate(layer.input_size)]


def _opset(model: onnx.ModelProto) -> int:
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _phase_inputs(model: onnx.ModelProto, layer: _ConvTranspose, consumers: dict[str, list[onnx.NodeProto]]
                  ) -> tuple[list[onnx.NodeProto], int, list[str], list[onnx.NodeProto]] | None:
    """Find Concat -> DepthToSpace -> elementwise ops -> `layer`, each output read by the next node only.

    Returns the nodes to remove, the DepthToSpace block size, the Concat inputs
    (the phases, in DepthToSpace's DCR order) and the elementwise nodes.
    """
    producers = {output: node for node in model.graph.node for output in node.output}
    graph_outputs = {output.name for output in model.graph.output}
    chain: list[onnx.NodeProto] = []
    name = layer.node.input[0]
    while True:
        node = producers.get(name)
        if node is None or len(consumers.get(name, [])) != 1 or name in graph_outputs:
            return None
        if node.op_type in ELEMENTWISE_OPS and node.domain in ("", "ai.onnx"):
            chain.insert(0, node)
            name = node.input[0]
            continue
        break
    interleave = producers[name]
    if interleave.op_type != "DepthToSpace" or _attribute(interleave, "mode", b"DCR") not in (b"DCR", "DCR"):
        return None
    block = int(_attribute(interleave, "blocksize", 0))
    concat = producers.get(interleave.input[0])
    if (concat is None or concat.op_type != "Concat" or _attribute(concat, "axis", 0) != 1
            or len(concat.input) != block * block or len(consumers.get(interleave.input[0], [])) != 1):
        return None
    return [concat, interleave, *chain], block, list(concat.input), chain


def _phase_consumer_nodes(layer: _ConvTranspose, block: int, phases: list[str], chain: list[onnx.NodeProto],
                          phase_size: tuple[int, int], prefix: str, opset: int
                          ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """Rewrite DepthToSpace -> elementwise ops -> ConvTranspose as one scatter over the stacked phases.

    Input pixel block*m + r of the interleaved map lands at output
    block*stride*m + r*stride - pad_begin + k. So the phases, stacked along the
    channel axis, feed one transposed convolution with stride block*stride
    whose kernel contains each phase's copy of the weights shifted by
    r*stride - pad_begin. Summing over the stacked channels adds the phases'
    contributions, and the large DepthToSpace copy disappears.
    """
    stride = layer.strides[0]
    if layer.strides[1] != stride:
        return None
    channels_in, channels_out, kernel_h, kernel_w = layer.weight.shape
    combined = block * stride
    shifts = [[phase * stride - layer.pads[axis] for phase in range(block)] for axis in (0, 1)]
    base = [min(0, *axis_shifts) for axis_shifts in shifts]
    kernel = [size + max(axis_shifts) - low for size, axis_shifts, low in zip((kernel_h, kernel_w), shifts, base)]
    sizes_out = [(block * size - 1) * stride - layer.pads[axis] - layer.pads[axis + 2] + (kernel_h, kernel_w)[axis]
                 for axis, size in enumerate(phase_size)]
    pads_end = [(size - 1) * combined + kernel[axis] + base[axis] - sizes_out[axis]
                for axis, size in enumerate(phase_size)]
    # Trailing zero taps make room where the last phase's output ends before the layer's output does.
    kernel = [size - min(0, end) for size, end in zip(kernel, pads_end)]
    pads_end = [max(0, end) for end in pads_end]

    weight = np.zeros((block * block * channels_in, channels_out, *kernel), np.float32)
    for index in range(block * block):
        phase_h, phase_w = divmod(index, block)
        top, left = shifts[0][phase_h] - base[0], shifts[1][phase_w] - base[1]
        rows = slice(index * channels_in, (index + 1) * channels_in)
        weight[rows, :, top : top + kernel_h, left : left + kernel_w] = layer.weight

    nodes: list[onnx.NodeProto] = []
    stacked = []
    for index, phase in enumerate(phases):
        current = phase
        for step, node in enumerate(chain):
            output = f"{prefix}_phase{index}_{node.op_type.lower()}{step}"
            nodes.append(helper.make_node(node.op_type, [current, *node.input[1:]], [output], name=output,
                                          domain=node.domain))
            nodes[-1].attribute.extend(node.attribute)
            current = output
        stacked.append(current)
    nodes.append(helper.make_node("Concat", stacked, [f"{prefix}_stacked"], axis=1, name=f"{prefix}_concat"))
    bias_name = layer.node.input[2] if layer.bias is not None else None
    scatter, initializers = _scatter_nodes(f"{prefix}_stacked", weight, bias_name, [combined, combined],
                                           [-base[0], -base[1], pads_end[0], pads_end[1]], sizes_out,
                                           layer.node.output[0], prefix, opset)
    return nodes + scatter, initializers


def _fold_batch_norms(model: onnx.ModelProto) -> None:
    """Fold each inference BatchNormalization that directly follows a ConvTranspose into its weights and bias.

    The TorchScript exporter keeps BatchNormalization nodes (the dynamo
    exporter folds them), and the rewrites below only see ConvTranspose.
    """
    constants = {initializer.name: numpy_helper.to_array(initializer) for initializer in model.graph.initializer}
    consumers = _consumers(model)
    graph_outputs = {output.name for output in model.graph.output}
    folded: set[int] = set()
    for index, node in enumerate(model.graph.node):
        if node.op_type != "ConvTranspose" or node.output[0] in graph_outputs:
            continue
        readers = consumers.get(node.output[0], [])
        if len(readers) != 1 or readers[0].op_type != "BatchNormalization" or len(readers[0].output) != 1:
            continue
        norm = readers[0]
        names = [node.input[1], *norm.input[1:5]]
        if any(name not in constants for name in names) or _attribute(node, "group", 1) != 1:
            continue
        weight, scale, shift, mean, variance = (constants[name] for name in names)
        factor = scale / np.sqrt(variance + float(_attribute(norm, "epsilon", 1e-5)))
        bias = constants.get(node.input[2], np.zeros_like(mean)) if len(node.input) > 2 and node.input[2] else None
        bias = np.zeros_like(mean) if bias is None else bias
        prefix = f"distgan_folded{index}"
        model.graph.initializer.extend([
            numpy_helper.from_array((weight * factor[None, :, None, None]).astype(np.float32), f"{prefix}_weight"),
            numpy_helper.from_array(((bias - mean) * factor + shift).astype(np.float32), f"{prefix}_bias"),
        ])
        del node.input[1:]
        node.input.extend([f"{prefix}_weight", f"{prefix}_bias"])
        node.output[0] = norm.output[0]
        folded.add(id(norm))
    kept = [node for node in model.graph.node if id(node) not in folded]
    del model.graph.node[:]
    model.graph.node.extend(kept)


# New nodes, their initializers, and other nodes that the new nodes make unused.
Replacement = tuple[list[onnx.NodeProto], list[onnx.TensorProto], list[onnx.NodeProto]]


def _rewrite_each(model: onnx.ModelProto, replace: Callable[[int, _ConvTranspose], Replacement | None]) -> int:
    """Offer every supported ConvTranspose of `model` to `replace` and apply its replacements in place."""
    model_with_shapes = onnx.shape_inference.infer_shapes(model)
    constants = {initializer.name: numpy_helper.to_array(initializer) for initializer in model.graph.initializer}
    replacements: dict[int, list[onnx.NodeProto]] = {}
    removed: set[int] = set()
    for index, node in enumerate(model.graph.node):
        layer = _candidate(model_with_shapes, node, constants)
        result = replace(index, layer) if layer is not None else None
        if result is None:
            continue
        new_nodes, initializers, dropped = result
        replacements[index] = new_nodes
        model.graph.initializer.extend(initializers)
        removed.update(id(unused) for unused in dropped)
    nodes = []
    for index, node in enumerate(model.graph.node):
        if index in replacements:
            nodes.extend(replacements[index])
        elif id(node) not in removed:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(replacements)


def rewrite_conv_transpose(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Return a copy of `model` with supported ConvTranspose nodes rewritten, and the number of rewrites.

    BatchNormalization nodes right after a ConvTranspose are folded into it
    first. Unsupported nodes (grouped, dilated, output_padding, weights
    computed at run time, spatial sizes unknown before run time) are left as
    they are.
    """
    model = onnx.shape_inference.infer_shapes(model)
    opset = _opset(model)
    _fold_batch_norms(model)

    def projection_or_phases(index: int, layer: _ConvTranspose) -> Replacement | None:
        prefix = f"distgan_convtranspose{index}"
        found = _projection_nodes(layer, prefix) or _polyphase_nodes(layer, prefix)
        return None if found is None else (*found, [])

    def phase_consumer(index: int, layer: _ConvTranspose) -> Replacement | None:
        found = _phase_inputs(model, layer, _consumers(model))
        if found is None:
            return None
        dropped, block, phases, chain = found
        phase_size = _static_spatial_size(onnx.shape_inference.infer_shapes(model), phases[0])
        if phase_size is None:
            return None
        replacement = _phase_consumer_nodes(layer, block, phases, chain, phase_size, f"distgan_phases{index}", opset)
        return None if replacement is None else (*replacement, dropped)

    def scatter(index: int, layer: _ConvTranspose) -> Replacement | None:
        if opset < COL2IM_OPSET:
            return None
        bias_name = layer.node.input[2] if layer.bias is not None else None
        return (*_scatter_nodes(layer.node.input[0], layer.weight, bias_name, list(layer.strides), list(layer.pads),
                                _output_size(layer), layer.node.output[0], f"distgan_scatter{index}", opset), [])

    rewritten = sum(_rewrite_each(model, replace) for replace in (projection_or_phases, phase_consumer, scatter))
    used = {name for node in model.graph.node for name in node.input}
    kept = [initializer for initializer in model.graph.initializer if initializer.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.graph.value_info[:]
    return model, rewritten
