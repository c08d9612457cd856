import pytest
import torch
from torch import nn

from distgan.errors import ConfigError
from distgan.models import build_discriminator, build_generator, default_architecture
from distgan.models.dcgan import plan_resolution


@pytest.mark.parametrize(("resolution", "expected"), [(28, (7, 2)), (32, (4, 3)), (48, (6, 3)), (64, (4, 4)), (8, (4, 1))])
def test_plan_resolution(resolution, expected):
    assert plan_resolution(resolution) == expected


@pytest.mark.parametrize("resolution", [4, 30, 100, 7])
def test_plan_resolution_rejects(resolution):
    with pytest.raises(ValueError, match="base \\* 2\\*\\*n"):
        plan_resolution(resolution)


@pytest.mark.parametrize(("model", "shape"), [("dcgan", [1, 28, 28]), ("dcgan", [3, 32, 32]), ("dense", [1, 28, 28]),
                                              ("dense", [3, 16, 16])])
def test_image_pairs_shapes(model, shape):
    record = default_architecture(model, "image", shape, z_dim=16, width=8)
    G, D = build_generator(record), build_discriminator(record)
    images = G(torch.randn(5, 16))
    assert list(images.shape) == [5, *shape]
    assert images.min() >= -1 and images.max() <= 1  # tanh output
    assert list(D(images).shape) == [5]


@pytest.mark.parametrize("depth", [0, 2])
def test_dcgan_depth_adds_convolutions(depth):
    record = default_architecture("dcgan", "image", [1, 28, 28], z_dim=8, width=8, depth=depth)
    assert record["generator"]["depth"] == record["discriminator"]["depth"] == depth
    G, D = build_generator(record), build_discriminator(record)
    extra = [m for m in [*G.modules(), *D.modules()] if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(extra) == 2 * 2 * depth  # after G's projection and upsampling, after D's two downsamplings
    images = G(torch.randn(3, 8))
    assert list(images.shape) == [3, 1, 28, 28]
    assert list(D(images).shape) == [3]


def test_dcgan_record_without_depth():
    record = default_architecture("dcgan", "image", [1, 28, 28], z_dim=8, width=8)
    assert record["generator"]["depth"] == 1  # the default
    for network in ("generator", "discriminator"):
        del record[network]["depth"]  # a record saved before depth was a key
    plain = default_architecture("dcgan", "image", [1, 28, 28], z_dim=8, width=8, depth=0)
    assert build_generator(record).state_dict().keys() == build_generator(plain).state_dict().keys()
    assert build_discriminator(record).state_dict().keys() == build_discriminator(plain).state_dict().keys()


@pytest.mark.parametrize(("kind", "shape", "depth", "hidden"), [
    ("points", [2], None, [8, 8, 8, 8]),
    ("points", [2], 1, [8]),
    ("image", [1, 28, 28], None, [8, 16, 32]),
    ("image", [1, 28, 28], 5, [8, 16, 32, 32, 32]),
])
def test_dense_depth_is_the_hidden_layer_count(kind: str, shape: list, depth, hidden: list):
    record = default_architecture("dense", kind, shape, z_dim=4, width=8, depth=depth)
    G, D = build_generator(record), build_discriminator(record)
    assert [layer.out_features for layer in G.net if isinstance(layer, nn.Linear)][:-1] == hidden
    assert [layer.out_features for layer in D.net if isinstance(layer, nn.Linear)][:-1] == hidden[::-1]
    assert list(G(torch.randn(3, 4)).shape) == [3, *shape]
    assert list(D(torch.randn(3, *shape)).shape) == [3]


def test_dense_depth_zero_is_rejected():
    with pytest.raises(ConfigError, match="the dense model needs a depth of at least 1, got 0"):
        default_architecture("dense", "points", [2], z_dim=4, width=8, depth=0)


def test_dense_points_output_is_unbounded():
    record = default_architecture("dense", "points", [2], z_dim=4, width=8)
    G = build_generator(record)
    with torch.no_grad():
        G.net[-1].bias.fill_(10.0)
    points = G(torch.randn(3, 4))
    assert list(points.shape) == [3, 2]
    assert points.min() > 5  # no tanh squashing for 2D data


def test_dcgan_rejects_points_and_bad_resolution():
    with pytest.raises(ConfigError, match="use --model dense"):
        default_architecture("dcgan", "points", [2], 4, 8)
    with pytest.raises(ConfigError, match="set --resolution"):
        default_architecture("dcgan", "image", [1, 30, 30], 4, 8)


def test_dcgan_generator_is_batch_independent_in_eval_mode():
    record = default_architecture("dcgan", "image", [1, 28, 28], z_dim=8, width=8)
    G = build_generator(record).eval()
    z = torch.randn(4, 8)
    with torch.no_grad():
        together = G(z)
        alone = G(z[1:2])
    torch.testing.assert_close(together[1:2], alone)


@pytest.mark.parametrize("model", ["dcgan", "dense"])
def test_conditional_pair_uses_labels(model):
    record = default_architecture(model, "image", [1, 28, 28], z_dim=8, width=8, num_classes=10)
    G, D = build_generator(record).eval(), build_discriminator(record)
    z = torch.randn(1, 8).repeat(2, 1)
    with torch.no_grad():
        images = G(z, torch.tensor([3, 7]))
        assert not torch.allclose(images[0], images[1])  # the same z, other labels: other images
        logits = D(images[:1].repeat(2, 1, 1, 1), torch.tensor([3, 7]))
    assert logits[0] != logits[1]  # the projection term depends on the label
    with pytest.raises(ValueError, match="needs labels"):
        G(z)
    with pytest.raises(ValueError, match="takes no labels"):
        build_generator(default_architecture(model, "image", [1, 28, 28], 8, 8))(z, torch.tensor([0, 1]))


def test_conditional_generator_exports_to_onnx(tmp_path):
    import contextlib
    import io

    import numpy as np
    import onnxruntime as ort

    G = build_generator(default_architecture("dcgan", "image", [1, 28, 28], z_dim=8, width=8, num_classes=10)).eval()
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        program = torch.onnx.export(G, (torch.randn(3, 8), torch.arange(3)), dynamo=True, input_names=["z", "label"],
                                    output_names=["image"], opset_version=18,
                                    dynamic_shapes={"z": {0: torch.export.Dim("batch")},
                                                    "labels": {0: torch.export.Dim("batch")}})
    program.save(str(tmp_path / "conditional.onnx"))
    session = ort.InferenceSession(str(tmp_path / "conditional.onnx"), providers=["CPUExecutionProvider"])
    assert [(entry.name, entry.type) for entry in session.get_inputs()] == [("z", "tensor(float)"),
                                                                            ("label", "tensor(int64)")]
    z = np.random.default_rng(0).standard_normal((5, 8), dtype=np.float32)
    labels = np.array([0, 9, 3, 3, 1], dtype=np.int64)
    actual = session.run(None, {"z": z, "label": labels})[0]
    with torch.no_grad():
        expected = G(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    assert actual.shape == (5, 1, 28, 28)
    assert np.abs(actual - expected).max() < 1e-4


def test_num_classes_of_one_is_rejected():
    with pytest.raises(ConfigError, match="num_classes must be 0"):
        default_architecture("dense", "image", [1, 28, 28], 8, 8, num_classes=1)
