"""The Python export API on small generators of our own: rejections, dynamic batch, conditional models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import assert_ok, assert_user_error, run_distgan
from distgan.errors import ExportError, InputError
from distgan.export import ExportOptions, export_generator
from distgan.imaging import tile, to_pixels
from distgan.runtime import OnnxGenerator

Z_DIM = 8
SHAPE = [1, 4, 4]


def image_record(**extra: object) -> dict:
    return {"kind": "image", "z_dim": Z_DIM, "sample_shape": SHAPE, "value_range": [-1.0, 1.0], "layout": "NCHW",
            "step": 5, "weights": "G_ema", **extra}


class ReshapingGenerator(nn.Module):
    """Projects z and reshapes with the batch size read from the input, as many user generators do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.project = nn.Linear(Z_DIM, 2 * 2 * 4)
        self.norm = nn.BatchNorm2d(4)
        self.up = nn.ConvTranspose2d(4, 1, 4, 2, 1)
        with torch.no_grad():  # running statistics away from the defaults, so a wrong mode shows
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[0]
        x = self.project(z).view(batch, 4, 2, 2)
        return torch.tanh(self.up(torch.relu(self.norm(x))))


class NoisyGenerator(ReshapingGenerator):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z + 0.1 * torch.randn_like(z))


class BatchStatisticsGenerator(ReshapingGenerator):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(4, track_running_stats=False)


class MinibatchMeanGenerator(ReshapingGenerator):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z - z.mean(dim=0, keepdim=True))


class FixedBatchGenerator(ReshapingGenerator):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).reshape(int(z.shape[0]), 4, 2, 2)
        return torch.tanh(self.up(x))


class ConditionalGenerator(nn.Module):
    """G(z, labels): a class embedding added to the projected latent."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.embed = nn.Embedding(classes, Z_DIM)
        self.project = nn.Linear(Z_DIM, 16)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.project(z + 3.0 * self.embed(labels))).view(-1, *SHAPE)


def metadata_of(path: Path) -> dict[str, str]:
    return {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}


def test_reshape_from_input_shape_is_dynamic(tmp_path: Path):
    generator = ReshapingGenerator()
    report = export_generator(generator, image_record(), tmp_path / "g.onnx")
    assert report.exporter == "dynamo"
    assert [result.batch_size for result in report.parity] == [1, 3, 8, 64]
    assert all(result.passed for result in report.parity)
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    for batch_size in (1, 3, 8, 64, 100):
        z = np.random.default_rng(batch_size).standard_normal((batch_size, Z_DIM), dtype=np.float32)
        with torch.no_grad():
            expected = generator.eval()(torch.from_numpy(z)).numpy()
        actual = session.run(None, {"z": z})[0]
        assert actual.shape == (batch_size, *SHAPE)
        assert np.abs(actual - expected).max() < 1e-5


def test_noise_in_forward_rejected(tmp_path: Path):
    with pytest.raises(ExportError, match="different outputs for the same z .* draws its own noise"):
        export_generator(NoisyGenerator(), image_record(), tmp_path / "g.onnx")
    assert list(tmp_path.iterdir()) == []


def test_batch_statistics_rejected(tmp_path: Path):
    with pytest.raises(ExportError, match=r"depends on the other samples in the batch\. Cause: modules that "
                                          r"normalize over the batch: norm \(BatchNorm2d with track_running_stats"):
        export_generator(BatchStatisticsGenerator(), image_record(), tmp_path / "g.onnx")
    assert list(tmp_path.iterdir()) == []


def test_batchnorm_left_in_training_mode_rejected(tmp_path: Path):
    class StaysInTraining(ReshapingGenerator):
        def train(self, mode: bool = True) -> "StaysInTraining":
            return super().train(True)

    with pytest.raises(ExportError, match=r"norm \(BatchNorm2d in training mode\)"):
        export_generator(StaysInTraining(), image_record(), tmp_path / "g.onnx")


def test_minibatch_statistic_rejected(tmp_path: Path):
    with pytest.raises(ExportError, match="mean or standard deviation over the batch axis"):
        export_generator(MinibatchMeanGenerator(), image_record(), tmp_path / "g.onnx")


def test_baked_batch_size_rejected(tmp_path: Path):
    with pytest.raises(ExportError) as caught:
        export_generator(FixedBatchGenerator(), image_record(), tmp_path / "g.onnx")
    message = str(caught.value)
    assert "int(z.shape[0])" in message
    assert "Reshape with -1 or z.shape[0]" in message
    assert list(tmp_path.iterdir()) == []


def test_wrong_output_shape_rejected(tmp_path: Path):
    with pytest.raises(ExportError, match=r"returned shape \[8, 1, 4, 4\] .* expects \[8, 3, 4, 4\]"):
        export_generator(ReshapingGenerator(), image_record(sample_shape=[3, 4, 4]), tmp_path / "g.onnx")


def test_opset_13_falls_back_to_torchscript(tmp_path: Path):
    report = export_generator(ReshapingGenerator(), image_record(), tmp_path / "g.onnx", ExportOptions(opset=13))
    assert report.exporter == "torchscript"
    assert "the dynamo exporter wrote opset 18 instead of the requested 13" in report.notes[0]
    model = onnx.load(str(tmp_path / "g.onnx"))
    assert [entry.version for entry in model.opset_import if entry.domain == ""] == [13]
    sidecar = json.loads((tmp_path / "g.json").read_text())
    assert (sidecar["onnx"]["exporter"], sidecar["onnx"]["opset"]) == ("torchscript", 13)
    assert all(result.passed for result in report.parity)


@pytest.mark.parametrize(("options", "fragment"), [
    (ExportOptions(opset=9), "invalid opset 9; choose 13 to"),
    (ExportOptions(postprocess="png"), "invalid postprocess 'png'; choose one of none, uint8"),
    (ExportOptions(variants=("int4",)), "unknown variant 'int4'"),
    (ExportOptions(exporter="fx"), "invalid exporter 'fx'"),
])
def test_invalid_options_rejected(tmp_path: Path, options: ExportOptions, fragment: str):
    with pytest.raises(ExportError, match=fragment.replace("(", r"\(")):
        export_generator(ReshapingGenerator(), image_record(), tmp_path / "g.onnx", options)


def test_uint8_postprocess_for_points_rejected(tmp_path: Path):
    record = {"kind": "points", "z_dim": Z_DIM, "sample_shape": [2], "value_range": None}
    with pytest.raises(ExportError, match="postprocess 'uint8' needs an image generator"):
        export_generator(nn.Linear(Z_DIM, 2), record, tmp_path / "g.onnx", ExportOptions(postprocess="uint8"))


def test_uint8_postprocess_bakes_nhwc_pixels(tmp_path: Path):
    generator = ReshapingGenerator().eval()
    export_generator(generator, image_record(), tmp_path / "u8.onnx", ExportOptions(postprocess="uint8"))
    metadata = metadata_of(tmp_path / "u8.onnx")
    assert (metadata["dtype"], metadata["layout"], metadata["postprocess"]) == ("uint8", "NHWC", "uint8")
    assert json.loads(metadata["sample_shape"]) == [4, 4, 1]
    assert json.loads(metadata["value_range"]) == [0, 255]

    z = np.random.default_rng(3).standard_normal((5, Z_DIM), dtype=np.float32)
    pixels = OnnxGenerator(tmp_path / "u8.onnx", providers="cpu").generate(z)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (5, 4, 4, 1)
    with torch.no_grad():
        images = generator(torch.from_numpy(z)).numpy()
    expected = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).transpose(0, 2, 3, 1)
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 1
    assert pixels.max() > pixels.min()  # not a constant image


def test_variants_written_validated_and_described(tmp_path: Path):
    options = ExportOptions(variants=("optimized", "fp16", "int8"))
    report = export_generator(ReshapingGenerator(), image_record(), tmp_path / "g.onnx", options)
    assert [file.variant for file in report.files] == ["float32", "optimized", "fp16", "int8"]
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["g.fp16.json", "g.fp16.onnx", "g.int8.json", "g.int8.onnx", "g.json", "g.onnx",
                     "g.optimized.json", "g.optimized.onnx"]
    z = np.random.default_rng(5).standard_normal((6, Z_DIM), dtype=np.float32)
    base = OnnxGenerator(tmp_path / "g.onnx", providers="cpu").generate(z)
    for file in report.files:
        assert file.file_size == file.path.stat().st_size
        assert file.speed.median_ms > 0
        assert file.speed.batch_size == 64
        assert 0 <= file.max_abs_diff <= file.parity[0].tolerance
        assert metadata_of(file.path)["variant"] == file.variant
        assert json.loads(file.path.with_suffix(".json").read_text())["onnx"]["metadata"]["variant"] == file.variant
        output = OnnxGenerator(file.path, providers="cpu").generate(z)
        assert output.dtype == np.float32
        assert output.shape == (6, *SHAPE)
        assert np.abs(output - base).max() <= file.parity[0].tolerance
    int8_model = onnx.load(str(tmp_path / "g.int8.onnx"))
    assert any(node.op_type == "DequantizeLinear" for node in int8_model.graph.node)
    assert any(init.data_type == onnx.TensorProto.INT8 for init in int8_model.graph.initializer)
    fp16_model = onnx.load(str(tmp_path / "g.fp16.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in fp16_model.graph.initializer)


def test_fp16_overflow_fails_and_writes_nothing(tmp_path: Path):
    class Overflowing(ReshapingGenerator):
        def __init__(self) -> None:
            super().__init__()
            # Weights, unlike literals, are not folded into one factor by the exporter.
            self.up_scale, self.down_scale = nn.Parameter(torch.tensor(1e4)), nn.Parameter(torch.tensor(1e-6))

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            # The intermediate values exceed 1e5, finite in float32 but beyond float16's largest 65504.
            return super().forward(z) * self.up_scale * 100.0 * self.down_scale

    record = image_record(value_range=None)
    expected = r"the fp16 variant failed: the intermediate tensor .* reaches [0-9.]+e\+05, beyond float16's largest"
    with pytest.raises(ExportError, match=expected):
        export_generator(Overflowing(), record, tmp_path / "g.onnx", ExportOptions(variants=("fp16",)))
    assert list(tmp_path.iterdir()) == []


def test_conditional_generator_export_and_labels(tmp_path: Path):
    generator = ConditionalGenerator(classes=3).eval()
    record = image_record(num_classes=3, class_names=["zero", "one", "two"])
    report = export_generator(generator, record, tmp_path / "c.onnx", ExportOptions(variants=("fp16",)))
    assert all(result.passed for result in report.parity)
    metadata = metadata_of(tmp_path / "c.onnx")
    assert metadata["num_classes"] == "3"
    assert json.loads(metadata["class_names"]) == ["zero", "one", "two"]
    assert json.loads(metadata["inputs"]) == ["z", "label"]
    session = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    label_input = session.get_inputs()[1]
    assert (label_input.name, label_input.type) == ("label", "tensor(int64)")
    assert isinstance(label_input.shape[0], str)

    runtime = OnnxGenerator(tmp_path / "c.onnx", providers="cpu")
    z = runtime.latents(4, seed=0)
    labels = np.array([0, 1, 2, 1])
    with torch.no_grad():
        expected = generator(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    assert np.abs(runtime.generate(z, labels) - expected).max() < 1e-5
    same_z = np.repeat(z[:1], 3, axis=0)
    by_class = runtime.generate(same_z, [0, 1, 2])
    assert not np.allclose(by_class[0], by_class[1])  # the label changes the image
    assert np.array_equal(runtime.sample(3, seed=4), runtime.generate(runtime.latents(3, 4), [0, 1, 2]))
    assert np.array_equal(runtime.sample(2, seed=4, labels=2), runtime.generate(runtime.latents(2, 4), [2, 2]))

    with pytest.raises(InputError, match="label 3 is out of range; this generator has 3 classes, labels 0 to 2"):
        runtime.generate(z, [0, 1, 2, 3])
    with pytest.raises(InputError, match="label -1 is out of range"):
        runtime.generate(z, -1)
    with pytest.raises(InputError, match="labels must be integers, got float64"):
        runtime.generate(z, np.zeros(4))
    with pytest.raises(InputError, match=r"labels must have shape \[4\] to match z, got \[2\]"):
        runtime.generate(z, [0, 1])
    with pytest.raises(InputError, match="conditional generator: pass labels"):
        runtime.generate(z)


def test_unconditional_runtime_rejects_labels(tmp_path: Path):
    export_generator(ReshapingGenerator(), image_record(), tmp_path / "g.onnx")
    runtime = OnnxGenerator(tmp_path / "g.onnx", providers="cpu")
    assert runtime.num_classes == 0
    with pytest.raises(InputError, match="unconditional generator and takes no labels"):
        runtime.sample(2, seed=0, labels=1)
    with pytest.raises(InputError, match="z contains NaN or Inf"):
        runtime.generate(np.full((1, Z_DIM), np.nan, np.float32))


def test_int8_beyond_tolerance_fails(tmp_path: Path):
    options = ExportOptions(variants=("int8",), int8_atol=1e-6)
    expected = r"the int8 variant failed: .* tolerance 1e-06 \(mean 0\.02\) \(batch 1: max .*Raise --int8-atol only if"
    with pytest.raises(ExportError, match=expected):
        export_generator(ReshapingGenerator(), image_record(), tmp_path / "g.onnx", options)
    assert list(tmp_path.iterdir()) == []


def test_sample_command_with_label(tmp_path: Path):
    record = image_record(num_classes=3, class_names=["zero", "one", "two"])
    export_generator(ConditionalGenerator(classes=3), record, tmp_path / "c.onnx")
    result = run_distgan("sample", "c.onnx", "--n", "4", "--seed", "2", "--label", "1", "--columns", "4",
                         "--out", "one.png", cwd=tmp_path)
    assert_ok(result)
    runtime = OnnxGenerator(tmp_path / "c.onnx", providers="cpu")
    expected = tile(to_pixels(runtime.generate(runtime.latents(4, seed=2), 1)), 4)[:, :, 0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one.png")), expected)
    assert_user_error(run_distgan("sample", "c.onnx", "--label", "3", cwd=tmp_path),
                      "label 3 is out of range; this generator has 3 classes, labels 0 to 2")
