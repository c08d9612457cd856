from pathlib import Path

import pytest

from distgan.config import CONFIG_HEADER, TrainConfig, build_config, load_saved, resumed_config, save_toml
from distgan.errors import ConfigError


def test_defaults_validate():
    config = build_config()
    assert config.data == "mnist"
    assert config.batch_size is None  # resolved per data kind once the data set is open
    assert config.ema is True


@pytest.mark.parametrize(("data", "expected"), [
    ("mnist", {"batch_size": 128, "steps": 3500, "lr_g": 5e-4, "lr_d": 5e-4, "r1_gamma": 0.1,
               "beta1": 0.0, "beta2": 0.99, "model": "dcgan", "depth": 1}),
    ("grid25", {"batch_size": 256, "steps": 60000, "lr_g": 5e-4, "lr_d": 5e-4, "r1_gamma": 0.1,
                "beta1": 0.5, "beta2": 0.999, "model": "dense", "depth": 4}),
])
def test_defaults_per_data_kind(data: str, expected: dict):
    from distgan.data import open_data
    from distgan.run import resolve_config

    config = build_config(None, {"data": data})
    resolved = resolve_config(config, open_data(data, None, None))
    for key, value in expected.items():
        assert getattr(resolved, key) == value, key
    explicit = resolve_config(build_config(None, {"data": data, "batch_size": 8, "r1_gamma": 2.0, "beta1": 0.3}),
                              open_data(data, None, None))
    assert explicit.batch_size == 8
    assert explicit.r1_gamma == 2.0
    assert explicit.beta1 == 0.3
    assert explicit.beta2 == expected["beta2"]  # an unset beta keeps the default of the data kind


def test_toml_file_and_overrides(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('steps = 10\nlr_g = 1\nloss = "hinge"\nema = false\n')
    config = build_config(path, {"steps": 20, "seed": None})
    assert config.steps == 20  # the command line wins
    assert config.lr_g == 1.0 and isinstance(config.lr_g, float)
    assert config.loss == "hinge"
    assert config.ema is False
    assert config.seed == 0  # None means "not given"


def test_unknown_key_names_suggestion_and_valid_keys(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text("lr_gg = 0.001\n")
    with pytest.raises(ConfigError) as error:
        build_config(path)
    message = str(error.value)
    assert "unknown config key 'lr_gg'" in message
    assert "did you mean 'lr_g'?" in message
    assert "Valid keys:" in message
    assert "batch_size" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('steps = "ten"\n', "'steps' in"),
        ("steps = 1.5\n", "must be int"),
        ("ema = 1\n", "must be bool"),
        ("[train]\nsteps = 3\n", "has a table [train]"),
        ("steps = \n", "is not valid TOML"),
    ],
)
def test_malformed_values(tmp_path: Path, text: str, fragment: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as error:
        build_config(path)
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"model": "stylegan"}, "invalid model (--model) 'stylegan'"),
        ({"loss": "wgan"}, "invalid loss (--loss) 'wgan'"),
        ({"steps": 0}, "steps (--steps) must be at least 1"),
        ({"lr_d": -1.0}, "lr_d (--lr-d) must be a positive learning rate"),
        ({"beta2": 1.0}, "beta2 (--beta2) must be in [0, 1)"),
        ({"channels": 2}, "channels (--channels) must be 1 or 3"),
        ({"depth": -1}, "depth (--depth) must be between 0 and 16 for the dcgan model (images) and between 1 and "
                        "16 for the dense model (2D data), got -1"),
        ({"depth": 10**20}, "for the dense model (2D data), got 100000000000000000000"),
        ({"model": "dense", "depth": 17}, "depth (--depth) must be between 1 and 16 for the dense model, got 17"),
        ({"model": "dcgan", "depth": -1}, "depth (--depth) must be between 0 and 16 for the dcgan model, got -1"),
        ({"mixed_precision": "fp8"}, "invalid mixed_precision (--mixed-precision) 'fp8'"),
        ({"sample_every": -1}, "sample_every (--sample-every) must be 0 (off) or more"),
    ],
)
def test_out_of_range_values(overrides: dict, fragment: str):
    with pytest.raises(ConfigError) as error:
        build_config(None, overrides)
    assert fragment in str(error.value)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        build_config(tmp_path / "absent.toml")


def test_toml_round_trip(tmp_path: Path):
    config = TrainConfig(data='folder "with quotes"', name="x", steps=7, lr_g=3e-4, ema=False)
    save_toml(config, tmp_path / "config.toml")
    assert load_saved(tmp_path / "config.toml") == config


def test_depth_per_model():
    from distgan.data import open_data
    from distgan.run import resolve_config

    assert resolve_config(build_config(None, {"depth": 0}), open_data("mnist", None, None)).depth == 0
    ring8 = open_data("ring8", None, None)
    assert resolve_config(build_config(None, {"data": "ring8", "depth": 2}), ring8).depth == 2
    mnist_dense = build_config(None, {"model": "dense"})
    assert resolve_config(mnist_dense, open_data("mnist", None, None)).depth == 3
    with pytest.raises(ConfigError, match="depth \\(--depth\\) is the number of hidden layers of the dense model, so "
                                          "it must be between 1 and 16, got 0"):
        resolve_config(build_config(None, {"data": "ring8", "depth": 0}), ring8)


def test_load_saved_without_depth(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text('model = "dcgan"\nwidth = 64\n')  # a run saved before depth was a key
    assert load_saved(path).depth == 0
    path.write_text('model = "dense"\nwidth = 256\n')
    assert load_saved(path).depth == 3
    path.write_text('model = "dense"\nwidth = 256\ndepth = 5\n')
    assert load_saved(path).depth == 5


def test_saved_config_as_template_keeps_legacy_depth(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text(f'{CONFIG_HEADER}\nmodel = "dense"\ndata = "ring8"\n')  # written by distgan before depth
    assert build_config(path, {}).depth == 3
    path.write_text('model = "dense"\ndata = "ring8"\n')  # written by hand: the default applies later
    assert build_config(path, {}).depth is None
    path.write_text(f'{CONFIG_HEADER}\nmodel = "dense"\ndata = "ring8"\n')
    assert build_config(path, {"depth": 5}).depth == 5


def test_resume_allows_only_resumable_changes():
    saved = build_config(None, {"steps": 10})
    assert resumed_config(saved, {"steps": 20}).steps == 20
    assert resumed_config(saved, {"seed": 0}).seed == 0  # the same value is no change
    with pytest.raises(ConfigError, match="cannot change 'seed' from 0 to 1 when resuming"):
        resumed_config(saved, {"seed": 1})
