"""The submitit engine for real, on submitit's LocalExecutor: pre-emption -> checkpoint -> requeue -> resume.

A tiny ``cpu-demo`` run on real H&E tiles is submitted as :class:`DinoTrainJob`; once it
trains, its task gets SLURM's warning signal (USR1). The trainer checkpoints and
returns, the job hands the signal to submitit, whose handler calls
``DinoTrainJob.checkpoint()`` (resubmission with ``resume=True``) and requeues; the
restarted task resumes from the checkpoint and finishes the run.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from exaonepath_lab.pretrain.launch import DinoTrainJob, LaunchConfig, make_executor, plan_launch

TINY = (
    "batch_size=2", "max_iters=20", "n_local_crops=2", "out_dim=64", "head_hidden_dim=32",
    "head_bottleneck_dim=16", 'timm_kwargs={"img_size":32,"patch_size":8,"depth":1,"embed_dim":32,"num_heads":2}',
    "global_crop_size=32", "local_crop_size=16", "normalize=false", "num_threads=1", "warmup_iters=2",
    "warmup_teacher_temp_iters=2", "checkpoint_every=1000",
)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the task process through /proc")
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_submitit_preemption_requeues_and_resumes(tmp_path, monkeypatch, sample_tiles):
    tiles = sample_tiles / "cmu"  # six 256 px real tiles of one slide
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    cfg = LaunchConfig(preset="cpu-demo", data=str(tiles.resolve()), out=str(tmp_path / "run"), overrides=TINY,
                       nodes=1, gpus_per_node=1, time_min=60)
    plan = plan_launch(cfg)
    job = make_executor(cfg, cluster="local").submit(DinoTrainJob(plan.train_config))
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 2):  # training has started
        assert time.time() < deadline and job.state != "FINISHED", job.stderr()
        time.sleep(0.02)
    (task,) = _children(int(job.job_id))
    os.kill(task, signal.SIGUSR1)  # what SLURM sends `signal_delay_s` before the time limit
    assert job.result() == "completed", job.stderr()

    out = job.stdout()  # both runs of the task append to the job's log, as on SLURM
    stop = re.search(r"preempted at iteration (\d+)/20", out)
    assert stop and 2 <= int(stop.group(1)) < 20, out
    assert "completed at iteration 20/20" in out
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    report = json.loads((tmp_path / "run" / "run_report.json").read_text())
    assert (report["status"], report["iteration"], report["total_iters"]) == ("completed", 20, 20)
    # Every iteration was run exactly once (the resumed run continued, it did not restart).
    its = [r["it"] for r in rows if "loss" in r and "event" not in r]
    assert its == list(range(20)), its
    # submitit requeued the job checkpoint() produced: the same training config, resumed.
    submitted = Path(str(job.paths.submitted_pickle))
    with submitted.open("rb") as f:
        delayed = pickle.load(f)
    assert delayed.function.resume is True and delayed.function.config == plan.train_config
