"""Invalid training input through the CLI runner in this process: exit code 1 and one `error:` line naming it.

The cases fail while the run is planned, before any process group or model
exists, so they run in-process. Errors that need a launched run are in
test_cli_errors.py and test_training.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from distgan.cli import app

GRID = ["train", "--data", "grid25", "--steps", "2"]


def make_inputs(root: Path) -> None:
    Image.new("RGB", (8, 8)).save(root / "image.png")
    (root / "table.toml").write_text("[train]\nsteps = 10\n")
    (root / "broken.toml").write_text("steps = = 10\n")
    (root / "text_rate.toml").write_text('data = "grid25"\nlr_g = "fast"\n')
    (root / "a_file").write_text("not a directory")
    (root / "latin1.toml").write_bytes(b'data = "gr\xfcd"\n')
    (root / "a_folder.toml").mkdir()


@pytest.mark.parametrize(("args", "fragments"), [
    (["--resume", "sometimes"], ["invalid --resume 'sometimes'", "auto, latest, never"]),
    (["--on-save-error", "ignore"], ["invalid on_save_error (--on-save-error) 'ignore'", "stop, continue"]),
    (["--keep-checkpoints", "-1"], ["keep_checkpoints (--keep-checkpoints) must be 0 (off) or more, got -1"]),
    (["--collective-timeout", "0"], ["collective_timeout (--collective-timeout) must be at least 1, got 0"]),
    (["--steps", "-5"], ["steps (--steps) must be at least 1, got -5"]),
    (["--log-every", "0"], ["log_every (--log-every) must be at least 1, got 0"]),
    (["--loss", "wasserstein"], ["invalid loss (--loss) 'wasserstein'", "logistic, hinge, lsgan, wgan-gp"]),
    (["--mixed-precision", "fp8"], ["invalid mixed_precision (--mixed-precision) 'fp8'", "no, bf16, fp16"]),
    (["--channels", "2"], ["channels (--channels) must be 1 or 3, got 2"]),
    (["--ema-decay", "1.5"], ["ema_decay (--ema-decay) must be in [0, 1), got 1.5"]),
    (["--lr-d", "0"], ["lr_d (--lr-d) must be a positive learning rate, got 0.0"]),
    (["--r1-gamma", "-1"], ["r1_gamma (--r1-gamma) must be 0 (off) or a positive weight, got -1.0"]),
    (["--seed", "-3"], ["seed (--seed) must be in [0, 2**63), got -3"]),
    (["--resolution", "16"], ["resolution and channels do not apply to the 2D data set 'grid25'"]),
    (["--data", "image.png"], ["data path image.png is a file", "folder of PNG or JPEG images"]),
    (["--out", "a_file/run"], ["cannot write to the run directory a_file/run", "choose another --out"]),
    (["--config", "table.toml"], ["config file table.toml has a table [train]", "top level"]),
    (["--config", "broken.toml"], ["config file broken.toml is not valid TOML"]),
    (["--config", "text_rate.toml"], ["config key 'lr_g' in text_rate.toml must be float, got 'fast' (str)"]),
    (["--config", "missing.toml"], ["config file not found: missing.toml"]),
    (["--config", "latin1.toml"], ["config file latin1.toml is not UTF-8 text", "save it as UTF-8"]),
    (["--config", "a_folder.toml"], ["config file a_folder.toml is a directory"]),
])
def test_train_rejects_invalid_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
                                     fragments: list[str]):
    make_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*GRID, *args])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not (tmp_path / "runs").exists()
