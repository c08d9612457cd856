"""Every loss and training option trains a few steps in process, and the models carry what the option adds."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distgan.config import build_config
from distgan.data import open_data
from distgan.errors import ConfigError
from distgan.losses import get_loss
from distgan.lr_decay import decay_factor
from distgan.models import apply_spectral_norm, build_discriminator, build_generator, has_parametrizations
from distgan.run import resolve_config
from distgan.trainer import Trainer


def train(out: Path, **overrides) -> tuple[Trainer, list[dict]]:
    """Train a tiny run in this process; return the trainer and the rows of metrics.jsonl."""
    values = {"batch_size": 8, "width": 8, "steps": 4, "log_every": 2, "sample_every": 4, "checkpoint_every": 0,
              "num_workers": 0, "out": str(out), "cpu": True, **overrides}
    config = build_config(None, values)
    data = open_data(config.data, config.resolution, config.channels)
    trainer = Trainer(resolve_config(config, data), data)
    trainer.fit()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return trainer, rows


def checkpoint(out: Path, name: str, step: int = 4) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoints" / f"step-{step:07d}" / f"{name}.safetensors")


def assert_trained(out: Path, rows: list[dict]) -> None:
    assert [row["step"] for row in rows] == [2, 4]
    for row in rows:
        assert row["Train/skipped_steps"] == 0
        for key in ("Loss/D", "Loss/G", "Logits/real", "Logits/fake"):
            assert row[key] is not None and abs(row[key]) < 1e3, f"{key} = {row[key]}"
    assert (out / "samples" / "step-0000004.png").is_file()


@pytest.mark.parametrize("loss", ["logistic", "hinge", "lsgan", "wgan-gp"])
def test_each_loss_trains(tmp_path: Path, loss: str):
    _, rows = train(tmp_path, data="grid25", loss=loss, r1_gamma=0.0)
    assert_trained(tmp_path, rows)
    assert ("Loss/D/gp" in rows[-1]) == (loss == "wgan-gp")
    if loss == "wgan-gp":
        assert rows[-1]["Loss/D/gp"] > 0


def test_loss_values_on_known_logits():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])
    hinge = get_loss("hinge")
    assert hinge.d_loss(real, fake).item() == pytest.approx(1.0)  # (0 + 1) / 2 for real plus the same for fake
    assert hinge.g_loss(fake).item() == pytest.approx(1.0)
    logistic = get_loss("logistic")
    log2 = torch.log(torch.tensor(2.0)).item()
    assert logistic.d_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(2 * log2)
    assert logistic.g_loss(torch.zeros(3)).item() == pytest.approx(log2)
    lsgan = get_loss("lsgan")
    assert lsgan.d_loss(torch.ones(2), torch.zeros(2)).item() == 0.0
    assert lsgan.g_loss(torch.zeros(2)).item() == pytest.approx(0.5)
    wgan = get_loss("wgan-gp")
    assert wgan.d_loss(real, fake).item() == pytest.approx(-2.0)
    assert wgan.gradient_penalty


def test_r1_penalty_is_logged_on_its_steps(tmp_path: Path):
    _, rows = train(tmp_path, data="grid25", r1_gamma=1.0, r1_every=2)
    assert_trained(tmp_path, rows)
    assert all(row["Loss/D/r1"] > 0 for row in rows)


def test_spectral_norm_only_on_discriminator(tmp_path: Path):
    # Eval mode reuses the power iteration of the last step, which ran before that step's update. The
    # singular value below is therefore 1 only up to one update of D, so this run keeps the rates small.
    trainer, rows = train(tmp_path, model="dcgan", spectral_norm=True, checkpoint_every=4, lr_g=2e-4, lr_d=2e-4)
    assert_trained(tmp_path, rows)
    D = checkpoint(tmp_path, "D")
    assert any(key.endswith("parametrizations.weight.original") for key in D)
    assert any(key.endswith("parametrizations.weight.0._u") for key in D)
    for name in ("G", "G_ema"):
        assert not any("parametrizations" in key for key in checkpoint(tmp_path, name))
    generator = load_file(tmp_path / "generator" / "generator.safetensors")
    assert not any("parametrizations" in key for key in generator)
    record = json.loads((tmp_path / "generator" / "generator.json").read_text())
    assert not has_parametrizations(build_generator(record["architecture"]))
    # The trained D, rebuilt from its checkpoint, uses weights whose largest singular value is about 1.
    discriminator = apply_spectral_norm(build_discriminator(trainer.architecture))
    discriminator.load_state_dict(D)
    discriminator.eval()
    layers = [layer for layer in discriminator.modules() if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item()
        assert 0.8 < sigma < 1.05, f"{layer}: largest singular value {sigma}"


def test_augmentation_changes_training(tmp_path: Path):
    _, plain = train(tmp_path / "plain", model="dense")
    _, augmented = train(tmp_path / "augmented", model="dense", augment="color,translation,cutout")
    assert_trained(tmp_path / "augmented", augmented)
    assert 'augment = "color,translation,cutout"' in (tmp_path / "augmented" / "config.toml").read_text()
    # D receives other real images, so the logits of the first logged step differ too.
    assert plain[0]["Logits/real"] != pytest.approx(augmented[0]["Logits/real"], abs=1e-6)


@pytest.mark.parametrize("model", ["dcgan", "dense"])
def test_conditional_training_records_classes(tmp_path: Path, model: str):
    _, rows = train(tmp_path, model=model, conditional=True, checkpoint_every=4)
    assert_trained(tmp_path, rows)
    record = json.loads((tmp_path / "generator" / "generator.json").read_text())
    assert record["num_classes"] == 10
    assert record["class_names"] == [str(digit) for digit in range(10)]
    assert record["architecture"]["generator"]["num_classes"] == 10
    assert list(checkpoint(tmp_path, "G")["condition.embed.weight"].shape) == [10, 64]
    assert list(checkpoint(tmp_path, "D")["projection.embed.weight"].shape)[0] == 10
    # Grids of a conditional run have one column per class: 10 columns of 30 px (28 + 2 padding) + 2.
    from PIL import Image

    with Image.open(tmp_path / "samples" / "step-0000004.png") as grid:
        assert grid.size[0] == 10 * 30 + 2


def test_unconditional_record_has_no_classes(tmp_path: Path):
    train(tmp_path, data="grid25")
    record = json.loads((tmp_path / "generator" / "generator.json").read_text())
    assert record["num_classes"] == 0


def test_decay_factor_is_linear_to_the_end():
    assert [decay_factor(step, 8, 0.5) for step in range(8)] == [1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25]
    assert [decay_factor(step, 4, 1.0) for step in range(4)] == [1, 1, 1, 1]
    assert decay_factor(0, 4, 0.0) == 1.0
    assert decay_factor(3, 4, 0.0) == 0.25


@pytest.mark.parametrize(("decay_start", "factor"), [(0.5, 0.25), (1.0, 1.0)])
def test_decay_sets_optimizer_learning_rates(tmp_path: Path, decay_start: float, factor: float):
    train(tmp_path, data="grid25", steps=8, checkpoint_every=8, sample_every=0, lr_g=1e-3, lr_d=2e-3,
          lr_decay_start=decay_start)
    for name, base in (("optimizer_G", 1e-3), ("optimizer_D", 2e-3)):
        state = torch.load(tmp_path / "checkpoints" / "step-0000008" / f"{name}.pt", weights_only=True)
        # The last step (index 7) ran at base * (8 - 7) / (8 - 4) with decay from step 4.
        assert state["param_groups"][0]["lr"] == pytest.approx(base * factor)


def test_decay_default_per_data_kind():
    points = resolve_config(build_config(None, {"data": "grid25"}), open_data("grid25", None, None))
    images = resolve_config(build_config(None, {"data": "mnist"}), open_data("mnist", None, None))
    assert points.lr_decay_start == 0.3
    assert images.lr_decay_start == 1.0


def test_optimizers_use_given_betas(tmp_path: Path):
    train(tmp_path, data="grid25", steps=2, checkpoint_every=2, sample_every=0, beta1=0.0, beta2=0.9)
    for name in ("optimizer_G", "optimizer_D"):
        state = torch.load(tmp_path / "checkpoints" / "step-0000002" / f"{name}.pt", weights_only=True)
        beta1, beta2 = state["param_groups"][0]["betas"]
        assert beta1 == 0.0, name
        assert beta2 == 0.9, name


def test_option_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="augment transforms apply to images"):
        train(tmp_path, data="grid25", augment="color")
    with pytest.raises(ConfigError, match="--conditional needs labelled data"):
        train(tmp_path, data="ring8", conditional=True)
    with pytest.raises(ConfigError, match="invalid augment transform 'blur'"):
        train(tmp_path, augment="blur")
