"""DINO training when things go wrong: a NaN on one rank of two, resuming with another world size, a pre-emption.

The distributed cases run 2 real gloo processes under torchrun on CPU; the NaN is injected on
rank 1 only by making its loss non-finite from its 4th iteration on (the fault, not the machinery,
is simulated).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from exaonepath_lab.datasets import read_rgb
from exaonepath_lab.models import load_kit_checkpoint
from exaonepath_lab.pretrain.data import ArrayDataset
from exaonepath_lab.pretrain.presets import get_preset
from exaonepath_lab.pretrain.trainer import train

TINY = dict(
    timm_kwargs={"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
    global_crop_size=32, local_crop_size=16, n_local_crops=2, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16,
    batch_size=1, max_iters=8, warmup_iters=2, warmup_teacher_temp_iters=2, checkpoint_every=1, num_threads=1,
    normalize=False, num_workers=0, log_every=1,
)
WORKER = textwrap.dedent("""
    import json, os, sys
    from exaonepath_lab.pretrain import loss as L
    from exaonepath_lab.pretrain.presets import get_preset
    from exaonepath_lab.pretrain.trainer import NonFiniteLossError, train

    rank = int(os.environ["RANK"])
    if rank == 1:  # the fault: this rank's loss turns NaN from its 4th iteration (it = 3) on
        forward, calls = L.DINOLoss.forward, [0]

        def nan_forward(self, *args, **kwargs):
            calls[0] += 1
            loss = forward(self, *args, **kwargs)
            return loss * float("nan") if calls[0] >= 4 else loss

        L.DINOLoss.forward = nan_forward
    cfg = get_preset("cpu-demo", data=sys.argv[1], out_dir=sys.argv[2], **json.loads(sys.argv[3]))
    try:
        train(cfg, progress=False)
    except NonFiniteLossError as e:  # one file per rank: the two ranks' stdout lines can interleave
        with open(os.path.join(os.path.dirname(sys.argv[2]), f"stopped_rank{rank}.txt"), "w") as f:
            f.write(str(e))
        sys.exit(17)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def tiles(sample_tiles: Path) -> Path:
    return (sample_tiles / "cmu").resolve()  # six 256 px real H&E tiles of one slide (CMU-1)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_nan_on_one_rank_stops_every_rank_and_keeps_the_checkpoint(tiles, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(worker), str(tiles), str(out), json.dumps(TINY)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Before the fix rank 0 waited forever in DDP's gradient all-reduce: the timeout is the hang guard.
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode != 0
    stopped = sorted(tmp_path.glob("stopped_rank*.txt"))
    assert [p.name for p in stopped] == ["stopped_rank0.txt", "stopped_rank1.txt"], r.stdout + r.stderr[-3000:]
    msgs = {p.read_text() for p in stopped}
    assert len(msgs) == 1, msgs  # the same message on both ranks
    (msg,) = msgs
    assert "non-finite (nan) at iteration 3 on rank(s) 1 of 2" in msg
    assert f"the last good checkpoint is kept: {out / 'checkpoint.pt'}" in msg
    ck = load_kit_checkpoint(str(out / "checkpoint.pt"))
    assert (ck["iteration"], ck["world_size"]) == (3, 2)
    assert all(torch.isfinite(v).all() for v in ck["teacher_backbone"].values())
    event = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][-1]
    assert event["event"] == "non_finite_loss" and event["ranks"] == [1] and np.isnan(event["rank_losses"][1])

    # Resuming that 2-process checkpoint in 1 process is refused before any training, saying what to do.
    before = (out / "checkpoint.pt").read_bytes()
    cfg = get_preset("cpu-demo", data=str(tiles), out_dir=str(out), **TINY)
    with pytest.raises(ValueError, match=r"written by a run of 2 process\(es\); this run has 1.*relaunch with 2"):
        train(cfg, progress=False)
    assert (out / "checkpoint.pt").read_bytes() == before


class _SignalAt(ArrayDataset):
    """Sends this process SIGUSR1 (SLURM's warning) while reading item number ``at``: a real pre-emption signal."""

    def __init__(self, images: np.ndarray, at: int) -> None:
        super().__init__(images)
        self.at, self.reads = at, 0

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().__getitem__(i)


def test_preempted_event_survives_resume(tiles, tmp_path):
    images = np.stack([read_rgb(p) for p in sorted(tiles.iterdir())])
    cfg = get_preset("cpu-demo", out_dir=str(tmp_path), **{**TINY, "checkpoint_every": 0})
    first = train(cfg, _SignalAt(images, at=3), progress=False)  # batch 1: signalled during iteration 2
    assert (first.status, first.iteration) == ("preempted", 3)
    rest = train(cfg, ArrayDataset(images), progress=False)
    assert (rest.status, rest.iteration) == ("completed", 8)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["it"] for r in rows if "loss" in r] == list(range(8))  # each iteration once
    pre = [r for r in rows if r.get("event") == "preempted"]
    assert len(pre) == 1 and pre[0]["it"] == 3 and pre[0]["signal"] == signal.SIGUSR1
    assert [r["status"] for r in rows if r.get("event") == "end"] == ["completed"]
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "log.csv").is_file()
