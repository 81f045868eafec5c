"""The rendered torchrun script, run for real: SLURM's warning signal reaches the workers through torchrun.

This is the chain the sbatch script relies on (srun -> torchrun -> workers): torchrun
must forward SIGUSR1 (``--signals-to-handle``) instead of dying on it, and wait
(``--shutdown-timeout``) while the trainer writes its checkpoint.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exaonepath_lab.pretrain.launch import LaunchConfig, render_launch

TINY = (
    "batch_size=2", "n_local_crops=2", "out_dim=64", "head_hidden_dim=32", "head_bottleneck_dim=16",
    'timm_kwargs={"img_size":32,"patch_size":8,"depth":1,"embed_dim":32,"num_heads":2}',
    "global_crop_size=32", "local_crop_size=16", "normalize=false", "num_threads=1", "warmup_iters=2",
    "warmup_teacher_temp_iters=2", "checkpoint_every=100000", "max_iters=100000",  # runs until signalled
)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_torchrun_script_forwards_preemption_signal(tmp_path, sample_tiles):
    tiles = sample_tiles / "cmu"  # six 256 px real tiles of one slide
    cfg = LaunchConfig(preset="cpu-demo", engine="torchrun", data=str(tiles.resolve()), out=str(tmp_path / "run"),
                       overrides=TINY, nodes=1, gpus_per_node=1, signal_delay_s=60)
    script = render_launch(cfg)["torchrun"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(["bash", str(script), "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "run" / "log.jsonl"
    try:
        deadline = time.time() + 150
        while not (log.is_file() and len(log.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)  # the script exec'd torchrun: this is torchrun's pid
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    report = json.loads((tmp_path / "run" / "run_report.json").read_text())
    assert report["status"] == "preempted", out
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert "closing signal SIGUSR1" in out and "preempted at iteration" in out  # forwarded, then saved
    ckpt = __import__("torch").load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["iteration"] == report["iteration"] >= 2


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_launch_resume_continues_a_finished_runs_checkpoint(tmp_path, sample_tiles, capfd, monkeypatch):
    """`launch --submit` twice on one --out: refused without --resume, resumed from the checkpoint with it."""
    from exaonepath_lab.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    over = [a for s in (*TINY[:-2], "checkpoint_every=1", "max_iters=3") for a in ("--set", s)]
    argv = ["launch", "--preset", "cpu-demo", "--engine", "torchrun", "--data", str((sample_tiles / "cmu").resolve()),
            "--out", str(tmp_path / "run"), "--nodes", "1", "--gpus-per-node", "1", "--submit", *over]
    assert main(argv) == 0
    assert main(argv) == 1 and "pass --resume" in capfd.readouterr().err
    assert main([*argv, "--resume"]) == 0
    printed = capfd.readouterr().out
    assert "completed at iteration 3/3" in printed and "torchrun finished: exit 0" in printed
    report = json.loads((tmp_path / "run" / "run_report.json").read_text())
    assert (report["status"], report["iteration"]) == ("completed", 3)
