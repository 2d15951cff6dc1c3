"""A DIML training stage killed in its second seed resumes and writes the bytes of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lib import params
from lib.studies.diml.params import DimlTrainParams

ROOT = Path(__file__).resolve().parents[3]

# What the notebook of stage diml_train@margin-global does, in a process of its own.
TRAIN = """
import sys
from lib.studies.diml import train
from lib.studies.diml.params import DimlTrainParams
cfg = DimlTrainParams.model_validate_json(sys.argv[1])
train.train_seeds(cfg, "margin", "global", "models/diml/margin_global", sys.argv[2])
"""


def start(cwd: Path, cfg: str, data_dir: Path) -> subprocess.Popen:
    cwd.mkdir(exist_ok=True)
    # One thread each: the same kernels in every run, and two runs side by side on a small machine.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", TRAIN, cfg, str(data_dir)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, out[-2000:] + err[-3000:]
    return out


@pytest.mark.slow
def test_a_stage_killed_in_its_second_seed_resumes_to_the_same_bytes(tmp_path):
    data_dir = ROOT / "data"
    if not (data_dir / "mnist" / "mnist_5k.csv.gz").is_file():
        pytest.skip("data/mnist/mnist_5k.csv.gz is absent; run the fetch step (make data) first")
    values = params.profile("diml", "smoke", root=ROOT).model_dump(include=set(DimlTrainParams.model_fields))
    values.update(seeds=[0, 1], device="cpu")
    values["train"].update(epochs=2, max_steps_per_epoch=2)
    cfg = json.dumps(values)
    models = Path("models/diml/margin_global")
    checkpoints = Path("checkpoints/diml/margin_global")

    straight = start(tmp_path / "straight", cfg, data_dir)
    killed = start(tmp_path / "killed", cfg, data_dir)
    second_seed = tmp_path / "killed" / checkpoints / "seed_1.pt"
    deadline = time.monotonic() + 180
    while not second_seed.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert killed.poll() is None, "the training ended before its second seed had checkpointed an epoch"
    killed.send_signal(signal.SIGKILL)  # no clean-up, no exception handler: as the kernel's OOM killer would
    killed.communicate()

    done = tmp_path / "killed"
    assert (done / models / "seed_0.safetensors").exists() and not (done / models / "seed_1.safetensors").exists()
    assert torch.load(done / checkpoints / "seed_0.pt", weights_only=True)["next_epoch"] == 2  # final
    assert torch.load(second_seed, weights_only=True)["next_epoch"] == 1  # one epoch of two
    (done / models / "seed_0.safetensors").unlink()  # as DVC removes a stage's outputs before rerunning it

    trained = [line for line in finish(start(done, cfg, data_dir)).splitlines() if line.startswith("epoch=")]
    assert [line.split(",")[0] for line in trained] == ["epoch=1"]  # only the second seed's last epoch ran
    assert len([line for line in finish(straight).splitlines() if line.startswith("epoch=")]) == 4

    for seed in (0, 1):
        name = models / f"seed_{seed}.safetensors"
        assert (done / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
