"""Each input mistake a user can make ends in one `error:` line and exit code 1, never a traceback."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_ok, assert_user_error, run_distgan


def test_version_and_help(tmp_path: Path):
    result = run_distgan("--version", cwd=tmp_path)
    assert_ok(result)
    assert result.stdout.startswith("distgan 0.")
    assert "train" in run_distgan("--help", cwd=tmp_path).stdout


def test_missing_data_path(tmp_path: Path):
    assert_user_error(run_distgan("train", "--data", "no/such/folder", cwd=tmp_path),
                      "data folder not found: no/such/folder")


def test_folder_without_images(tmp_path: Path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    assert_user_error(run_distgan("train", "--data", "empty", cwd=tmp_path), "no PNG or JPEG images found under empty")


def test_unreadable_image(tmp_path: Path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "fine.png")
    (tmp_path / "images" / "corrupt.jpg").write_bytes(b"\x00" * 100)
    assert_user_error(run_distgan("train", "--data", "images", cwd=tmp_path), "cannot read image", "corrupt.jpg")


def test_unknown_config_key(tmp_path: Path):
    (tmp_path / "run.toml").write_text("stpes = 10\n")
    line = assert_user_error(run_distgan("train", "--config", "run.toml", cwd=tmp_path),
                             "unknown config key 'stpes' in run.toml", "did you mean 'steps'?", "Valid keys:")
    assert "batch_size" in line


@pytest.mark.parametrize(("args", "fragment"), [
    (["--model", "gan"], "invalid model (--model) 'gan'; choose one of auto, dense, dcgan"),
    (["--resolution", "30"], "resolution of base * 2**n"),
    (["--batch-size", "0"], "batch_size (--batch-size) must be at least 1"),
    (["--data", "ring8", "--depth", "0"], "depth (--depth) is the number of hidden layers of the dense model"),
    (["--data", "ring8", "--augment", "color"], "augment transforms apply to images"),
])
def test_invalid_option_values(tmp_path: Path, args: list[str], fragment: str):
    assert_user_error(run_distgan("train", "--steps", "1", "--out", "rejected", *args, cwd=tmp_path), fragment)
    assert not (tmp_path / "rejected").exists()  # a rejected run leaves no folder behind


def test_networks_too_large_for_the_memory(tmp_path: Path):
    # A hidden layer of 2e7 x 2e7 floats needs 1.6 PB, more than any address space, so the allocation fails.
    result = run_distgan("train", "--cpu", "--data", "ring8", "--width", "20000000", "--steps", "1", "--out", "big",
                         cwd=tmp_path)
    assert_user_error(result, "not enough memory for the dense pair of width 20000000 and depth 4",
                      "lower --width or --depth")
    assert not (tmp_path / "big").exists()  # the folder this command made is removed again

    common = ["train", "--cpu", "--data", "ring8", "--width", "20000000", "--steps", "1"]
    assert_user_error(run_distgan(*common, "--out", "nest/a/b", cwd=tmp_path), "not enough memory")
    assert not (tmp_path / "nest").exists()  # and so are the parents it made
    (tmp_path / "mine").mkdir()
    assert_user_error(run_distgan(*common, "--out", "mine", cwd=tmp_path), "not enough memory")
    assert (tmp_path / "mine").is_dir()  # a folder that existed before stays, without the lock file
    assert list((tmp_path / "mine").iterdir()) == []


def test_resume_without_run(tmp_path: Path):
    assert_user_error(run_distgan("train", "--out", "nothing", "--resume", "latest", cwd=tmp_path),
                      "nothing to resume in nothing", "config.toml not found")


def test_resume_with_incomplete_checkpoint(mnist_run: Path, tmp_path: Path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mnist_run, run)
    shutil.rmtree(run / "checkpoints" / "step-0000003")
    (run / "checkpoints" / "step-0000006" / "optimizer_D.pt").unlink()
    result = run_distgan("train", "--out", str(run), cwd=tmp_path)  # --resume auto, the default
    assert_user_error(result, "no complete checkpoint", "to resume from")
    assert "optimizer_D.pt is missing" in result.stderr  # the skipped checkpoint is named in a warning


def test_damaged_checkpoint_file(mnist_run: Path, tmp_path: Path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mnist_run, run)
    weights = run / "checkpoints" / "step-0000006" / "G.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = run_distgan("train", "--out", str(run), "--steps", "8", cwd=tmp_path)
    # The damaged step 6 is skipped (its size no longer matches) and step 3 is used.
    assert_ok(result)
    assert "G.safetensors has 100 bytes" in result.stderr
    assert "at step 3" in result.stderr


def test_export_without_generator(tmp_path: Path):
    (tmp_path / "empty_run").mkdir()
    assert_user_error(run_distgan("export", "empty_run", cwd=tmp_path), "no generator weights in empty_run")
    assert_user_error(run_distgan("export", "absent", cwd=tmp_path), "not found: absent")


def test_sample_missing_onnx(tmp_path: Path):
    assert_user_error(run_distgan("sample", "absent.onnx", cwd=tmp_path), "ONNX file not found: absent.onnx")


def test_sample_bad_latents(exported_onnx: Path, tmp_path: Path):
    np.save(tmp_path / "float64.npy", np.zeros((2, 64)))
    np.save(tmp_path / "shape.npy", np.zeros((2, 10), np.float32))
    (tmp_path / "text.npy").write_text("not numpy")
    assert_user_error(run_distgan("sample", str(exported_onnx), "--latents", "float64.npy", cwd=tmp_path),
                      "z must be float32, got float64")
    assert_user_error(run_distgan("sample", str(exported_onnx), "--latents", "shape.npy", cwd=tmp_path),
                      "z must have shape [batch, 64] with batch >= 1, got [2, 10]")
    assert_user_error(run_distgan("sample", str(exported_onnx), "--latents", "text.npy", cwd=tmp_path),
                      "cannot read latents from text.npy")
    assert_user_error(run_distgan("sample", str(exported_onnx), "--n", "0", cwd=tmp_path),
                      "the number of samples must be at least 1")
    assert_user_error(run_distgan("sample", str(exported_onnx), "--providers", "tpu", cwd=tmp_path),
                      "invalid providers 'tpu'")
    metadata = json.loads(exported_onnx.with_suffix(".json").read_text())
    assert metadata["z_dim"] == 64


def test_concurrent_run_into_same_directory_is_rejected(tmp_path: Path):
    import subprocess
    import sys
    import time

    first = subprocess.Popen([sys.executable, "-m", "distgan", "train", "--data", "ring8", "--steps", "5000",
                              "--out", "run"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "run" / "config.toml").exists() and time.time() < deadline:
            time.sleep(0.2)
        result = run_distgan("train", "--data", "ring8", "--steps", "10", "--out", "run", cwd=tmp_path)
        assert_user_error(result, "run is in use by another distgan training", f"process {first.pid}")
    finally:
        first.kill()
        first.wait()


def test_foreign_folder_is_not_overwritten(tmp_path: Path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.toml").write_text("my own notes\n")
    assert_user_error(run_distgan("train", "--data", "ring8", "--steps", "2", "--out", "mine", cwd=tmp_path),
                      "is an existing folder that is not a distgan run (it contains config.toml)")
    assert (tmp_path / "mine" / "config.toml").read_text() == "my own notes\n"


@pytest.mark.parametrize(("args", "fragment"), [
    (["--name", "../escape"], "must be a plain, non-empty run name"),
    (["--out", ""], "out (--out) must not be empty"),
    (["--mixed-precision", "fp16", "--cpu"], "--mixed-precision fp16 needs a GPU"),
])
def test_invalid_run_names_and_precision(tmp_path: Path, args: list[str], fragment: str):
    assert_user_error(run_distgan("train", "--data", "ring8", "--steps", "1", *args, cwd=tmp_path), fragment)


def test_resume_from_another_directory_and_lower_steps(tmp_path: Path):
    (tmp_path / "work" / "images" / "a").mkdir(parents=True)
    for index in range(4):
        Image.new("RGB", (8, 8), (index * 60, 0, 0)).save(tmp_path / "work" / "images" / "a" / f"{index}.png")
    common = ["train", "--data", "images", "--resolution", "8", "--model", "dense", "--width", "8", "--batch-size", "4",
              "--sample-every", "0"]
    assert_ok(run_distgan(*common, "--steps", "2", "--out", "run", cwd=tmp_path / "work"))
    # From the parent directory, the saved absolute data path still resolves.
    result = run_distgan("train", "--out", "work/run", "--steps", "3", cwd=tmp_path)
    assert_ok(result)
    assert "at step 2" in result.stderr
    assert_user_error(run_distgan("train", "--out", "work/run", "--steps", "1", cwd=tmp_path),
                      "already at step 3, beyond --steps 1")


def test_sample_label_and_interpolation_errors(exported_onnx: Path, tmp_path: Path):
    assert_user_error(run_distgan("sample", str(exported_onnx), "--label", "1", cwd=tmp_path),
                      "is an unconditional generator and takes no labels")
    assert_user_error(run_distgan("sample", str(exported_onnx), "--interpolate", "1", cwd=tmp_path),
                      "interpolation needs at least 2 steps, got 1")
    assert_user_error(run_distgan("sample", str(exported_onnx), "--out", "grid.gif", cwd=tmp_path),
                      "an animated GIF needs --interpolate STEPS")
    assert_user_error(run_distgan("sample", str(exported_onnx), "--scale", "0", cwd=tmp_path),
                      "--scale must be at least 1, got 0")
    np.save(tmp_path / "one.npy", np.zeros((1, 64), np.float32))
    assert_user_error(run_distgan("sample", str(exported_onnx), "--interpolate", "4", "--latents", "one.npy",
                                  cwd=tmp_path), "needs at least 2 latents in one.npy, got shape [1, 64]")


@pytest.mark.parametrize(("args", "fragment"), [
    (["--opset", "7"], "invalid opset 7; choose 13 to"),
    (["--postprocess", "jpeg"], "invalid postprocess 'jpeg'; choose one of none, uint8"),
    (["--exporter", "onnxscript"], "invalid exporter 'onnxscript'; choose one of auto, dynamo, torchscript"),
    (["--fp16-atol", "0"], "fp16_atol must be positive, got 0.0"),
])
def test_export_invalid_options(mnist_run: Path, tmp_path: Path, args: list[str], fragment: str):
    assert_user_error(run_distgan("export", str(mnist_run), "--out", "g.onnx", *args, cwd=tmp_path), fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "fragment"), [
    (["--seed", "-1"], "--seed must be 0 or more, got -1"),
    (["--columns", "0"], "--columns must be at least 1, got 0"),
    (["--out", "grid.txt"], "must end in .png (a grid or strip) or .gif"),
    (["--out", "."], "--out . is a directory"),
])
def test_sample_invalid_output_options(exported_onnx: Path, tmp_path: Path, args: list[str], fragment: str):
    assert_user_error(run_distgan("sample", str(exported_onnx), *args, cwd=tmp_path), fragment)


def test_export_into_directory_is_rejected(mnist_run: Path, tmp_path: Path):
    (tmp_path / "folder").mkdir()
    assert_user_error(run_distgan("export", str(mnist_run), "--out", "folder", cwd=tmp_path),
                      "--out folder is a directory; pass the path of the ONNX file to write")


def test_sample_metadata_that_contradicts_the_graph(exported_onnx: Path, tmp_path: Path):
    import onnx

    for name, change, fragment in (
        ("zdim.onnx", {"z_dim": "four"}, "the metadata field 'z_dim' = 'four' is invalid"),
        ("shape.onnx", {"sample_shape": "[3, 32, 32]"}, "the metadata sets sample_shape [3, 32, 32] but the output"),
    ):
        model = onnx.load(str(exported_onnx))
        for entry in model.metadata_props:
            if entry.key in change:
                entry.value = change[entry.key]
        onnx.save(model, str(tmp_path / name))
        assert_user_error(run_distgan("sample", name, cwd=tmp_path), fragment)


def test_commands_without_torch_say_what_is_missing(tmp_path: Path):
    import subprocess
    import sys

    code = "import sys; sys.modules['torch'] = None; sys.argv = ['distgan', 'train', '--steps', '1']; " \
           "from distgan.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert_user_error(result, "distgan train needs torch, which is not installed")


def test_interrupted_training_names_the_checkpoint(tmp_path: Path):
    import signal
    import subprocess
    import sys
    import time

    # A shell without job control starts background commands with SIGINT ignored, and the child would
    # inherit that. With the default disposition, Python raises KeyboardInterrupt as in a terminal.
    process = subprocess.Popen([sys.executable, "-m", "distgan", "train", "--data", "ring8", "--steps", "100000",
                                "--checkpoint-every", "5", "--out", "run"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list((tmp_path / "run" / "checkpoints").glob("step-*")) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "interrupted; the latest complete checkpoint is run/checkpoints/step-" in stderr
    assert "Run the same command again to resume from it." in stderr
