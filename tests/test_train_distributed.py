"""Data-parallel training: two CPU processes (gloo) under torchrun and accelerate launch.

Exactness: the processes' gradients are averaged, every sample's randomness comes from
its global index, so two processes of micro-batch b make the same steps as one process
of batch 2b. With batch norm the training-mode statistics are per micro-batch, so the
one-process twin of two processes is one process with two accumulation steps of b (the
same micro-batches); without normalisation it is one process of batch 2b. Parameters agree
to 1e-5 (fp32; only the order of the sums differs). BN running averages are rank 0's
(DDP broadcasts them) and are not compared.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from diffjscc.jscc.model import DeepJSCC  # noqa: E402
from diffjscc.train import jscc as train_jscc  # noqa: E402
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--base-width", "8", "--max-width-encoder", "16", "--max-width-decoder", "16",
        "--encoder-blocks", "1", "--decoder-blocks", "1"]  # fmt: skip
TOL = dict(rtol=1e-4, atol=1e-5)
LAUNCH_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(launcher: str, module_args: list[str], tmp_path) -> None:
    """Two processes of ``python -m diffjscc ...`` on this machine, under a launcher."""
    port = str(_free_port())
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", port]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", port]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"))
    # On a timeout, SIGTERM lets the launcher stop its workers (each in a session of its
    # own); whatever is left of the launcher's group is then killed.
    proc = subprocess.Popen(
        [*cmd, "-m", "diffjscc", *module_args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        pytest.fail(f"{launcher} did not finish in {LAUNCH_TIMEOUT_S} s:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-6000:]


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(5)
    folders = []
    for name, n in (("train", 4), ("val", 1)):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(n):
            pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
        folders.append(str(folder))
    return folders


def _jscc_args(data, out, *extra) -> list[str]:
    train, val = data
    return ["train-jscc", "--data", train, "--val", val, "--out", str(out), "--crop", "32",
            "--mixed-precision", "no", "--no-channels-last", "--warmup", "1", "--lr", "1e-3",
            "--val-limit", "1", "--threads", "1", "--no-progress", "--seed", "3", "--device", "cpu", *TINY,
            *extra]  # fmt: skip


def _params(path) -> dict:
    model = DeepJSCC.from_pretrained(path)
    return {k: v.detach() for k, v in model.named_parameters()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **TOL, msg=key)


def test_two_processes_step_as_one_and_resume_with_one(data, tmp_path):
    two = tmp_path / "two"
    _launch("torchrun", _jscc_args(data, two, "--steps", "2", "--batch-size", "4"), tmp_path)
    ckpt = torch.load(two / "checkpoint.pt", weights_only=False)
    assert (ckpt["step"], ckpt["samples"], ckpt["processes"]) == (2, 8, 2)

    one = tmp_path / "one"
    twin = _jscc_args(data, one, "--batch-size", "4", "--grad-accum", "2")
    assert train_jscc.main([*twin[1:], "--steps", "2"]) == 0
    before = _params(one / "last.safetensors")
    _assert_same(_params(two / "last.safetensors"), before)
    # The weights moved: a comparison of two untrained models would prove nothing.
    torch.manual_seed(3)  # the trainer's initialisation (--seed 3)
    start = DeepJSCC(train_jscc.JSCCConfig(**ckpt["config"]))
    assert any((before[k] - v).abs().max() > 1e-4 for k, v in start.named_parameters())

    # One process continues the two processes' run where it stopped: the same third step
    # as the one-process run's own.
    resumed = _jscc_args(data, two, "--batch-size", "4", "--grad-accum", "2", "--steps", "3")
    assert train_jscc.main(resumed[1:]) == 0
    assert train_jscc.main([*twin[1:], "--steps", "3"]) == 0
    _assert_same(_params(two / "last.safetensors"), _params(one / "last.safetensors"))
    records = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val" in r] == [2, 3]


def test_accelerate_launch_matches_one_process_of_the_global_batch(data, tmp_path):
    two = tmp_path / "two"
    args = _jscc_args(data, two, "--steps", "2", "--batch-size", "4", "--norm", "none")
    _launch("accelerate", args, tmp_path)
    one = tmp_path / "one"
    single = _jscc_args(data, one, "--steps", "2", "--batch-size", "4", "--norm", "none")
    assert train_jscc.main(single[1:]) == 0
    _assert_same(_params(two / "last.safetensors"), _params(one / "last.safetensors"))


def test_a_global_batch_that_does_not_split_is_refused(data, tmp_path, capsys):
    args = _jscc_args(data, tmp_path / "run", "--steps", "1", "--batch-size", "3")
    from diffjscc.cli import main

    assert main([*args, "--grad-accum", "2"]) == 2
    assert "does not split" in capsys.readouterr().err


def test_refiner_two_processes_step_as_one_with_two_accumulation_steps(data, tmp_path):
    pytest.importorskip("diffusers")
    from diffjscc.jscc.model import JSCCConfig
    from diffjscc.refiner import train as train_refiner
    from diffjscc.refiner.tiny import tiny_refiner

    tiny_refiner(seed=0).save_pretrained(tmp_path / "init")
    torch.manual_seed(0)
    widths = {k[2:].replace("-", "_"): int(v) for k, v in zip(TINY[::2], TINY[1::2], strict=True)}
    DeepJSCC(JSCCConfig(**widths)).save_pretrained(tmp_path / "jscc.safetensors")

    def args(out, *extra):
        return ["train-refiner", "--init", str(tmp_path / "init"), "--jscc",
                str(tmp_path / "jscc.safetensors"), "--data", data[0], "--out", str(out),
                "--crop", "32", "--batch-size", "2", "--lr", "2e-3",
                "--no-progress", "--seed", "4", "--device", "cpu", *extra]  # fmt: skip

    _launch("torchrun", args(tmp_path / "two", "--steps", "2"), tmp_path)
    assert train_refiner.main(args(tmp_path / "one", "--grad-accum", "2", "--steps", "2")[1:]) == 0
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    assert (two["step"], two["samples"], two["processes"]) == (2, 4, 2)
    start = tiny_refiner(seed=0).control.state_dict()
    assert any((one["control"][k] - v).abs().max() > 1e-4 for k, v in start.items())
    for key, value in one["control"].items():
        torch.testing.assert_close(two["control"][key], value, **TOL, msg=key)
    # ... and one process continues the two processes' run with the same third step.
    more = ["--grad-accum", "2", "--steps", "3", "--resume"]
    assert train_refiner.main([*args(tmp_path / "two", *more)[1:]]) == 0
    assert train_refiner.main([*args(tmp_path / "one", *more)[1:]]) == 0
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    assert two["samples"] == one["samples"] == 6
    for key, value in one["control"].items():
        torch.testing.assert_close(two["control"][key], value, **TOL, msg=key)
