"""The cluster path on a real SLURM scheduler: submit, pre-empt, requeue, resume; a 2-process job; a tiling array.

Needs a scheduler that answers ``sinfo`` — on a laptop or CI machine, the one-node SLURM of
``scripts/slurm_local.sh up`` (``make slurm-up``; `.ci/run` starts it). Without one these tests
skip and say so; under ``CI=true`` they fail instead. Jobs are tiny ``cpu-demo`` runs (a 1-block,
32-wide ViT on real H&E tiles) asking for 1-2 CPUs, so the whole module takes a few minutes on
2 cores; most of it is Python start-up inside the jobs and SLURM's requeue delay.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from exaonepath_lab.cli import main
from exaonepath_lab.models import load_kit_checkpoint
from exaonepath_lab.pretrain.config import PretrainConfig
from exaonepath_lab.pretrain.launch import job_records, scheduler_unavailable, wait_for_job

TINY = (
    "batch_size=2", "n_local_crops=2", "out_dim=64", "head_hidden_dim=32", "head_bottleneck_dim=16",
    'timm_kwargs={"img_size":32,"patch_size":8,"depth":1,"embed_dim":32,"num_heads":2}',
    "global_crop_size=32", "local_crop_size=16", "normalize=false", "num_threads=1", "warmup_iters=2",
    "warmup_teacher_temp_iters=2", "checkpoint_every=1000", "log_every=1",
)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def slurm() -> None:
    reason = scheduler_unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no SLURM scheduler: {reason} (.ci/run starts one with scripts/slurm_local.sh up)")
        pytest.skip(reason)


def launch(capsys: pytest.CaptureFixture, tiles: Path, out: Path, engine: str, *extra: str) -> str:
    """``exaonepath-lab launch ... --submit`` with a tiny cpu-demo run; returns the SLURM job id."""
    setup = f"export PATH={Path(sys.executable).parent}:$PATH"  # as `source .venv/bin/activate` would
    argv = ["launch", "--preset", "cpu-demo", "--data", str(tiles), "--out", str(out), "--engine", engine, "--submit",
            "--nodes", "1", "--cpus-per-task", "1", "--time", "10", "--signal-delay", "30", "--setup", setup,
            "--job-name", f"test-{engine}", *extra]
    for s in TINY:
        argv += ["--set", s]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    m = re.search(r"submitted SLURM job (\d+)", printed)
    assert m, printed
    return m.group(1)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def assert_run_complete(out: Path, iters: int, *, world_size: int) -> None:
    """Checkpoint, config.json, log.jsonl and the run report of a finished run, each iteration logged once."""
    report = json.loads((out / "run_report.json").read_text())
    assert (report["status"], report["iteration"], report["world_size"]) == ("completed", iters, world_size)
    ck = load_kit_checkpoint(str(out / "checkpoint.pt"))
    assert (ck["iteration"], ck["world_size"]) == (iters, world_size)
    conf = json.loads((out / "config.json").read_text())
    assert conf["world_batch_size"] == 2 * world_size and conf["max_iters"] == iters
    assert [r["it"] for r in read_log(out) if "loss" in r and "event" not in r] == list(range(iters))


@pytest.fixture()
def tiles(sample_tiles: Path) -> Path:
    return (sample_tiles / "cmu").resolve()  # six 256 px real H&E tiles of one slide (CMU-1)


def test_sbatch_two_processes_under_srun_torchrun_complete(slurm, tiles, tmp_path, capsys):
    """`launch --engine sbatch --submit`: srun starts torchrun, which starts 2 gloo workers on the one node."""
    out = tmp_path / "run"
    job = launch(capsys, tiles, out, "sbatch", "--gpus-per-node", "2", "--set", "max_iters=4")
    (rec,) = wait_for_job(job, timeout=240)
    logs = out / "launch" / "slurm"
    stdout, stderr = (logs / f"test-sbatch-{job}.out").read_text(), (logs / f"test-sbatch-{job}.err").read_text()
    assert rec["JobState"] == "COMPLETED", stdout + stderr
    assert "completed at iteration 4/4" in stdout
    assert_run_complete(out, 4, world_size=2)
    assert (rec["NumCPUs"], rec["Restarts"]) == ("2", "0")


def test_submitit_job_completes(slurm, tiles, tmp_path, capsys):
    """`launch --engine submitit --submit`: the pickled job holds the PretrainConfig and calls the trainer."""
    out = tmp_path / "run"
    job = launch(capsys, tiles, out, "submitit", "--gpus-per-node", "1", "--set", "max_iters=6")
    (rec,) = wait_for_job(job, timeout=240)
    folder = out / "launch" / "submitit" / job
    stdout, stderr = (folder / f"{job}_0_log.out").read_text(), (folder / f"{job}_0_log.err").read_text()
    assert rec["JobState"] == "COMPLETED", stdout + stderr
    assert "completed at iteration 6/6" in stdout
    assert_run_complete(out, 6, world_size=1)
    import pickle

    with open(folder / f"{job}_0_result.pkl", "rb") as f:
        assert pickle.load(f) == ("success", "completed")


def test_sbatch_preemption_checkpoints_requeues_and_resumes(slurm, tiles, tmp_path, capsys):
    """SLURM's warning signal → trap → USR1 through srun/torchrun → checkpoint → `scontrol requeue` → resume.

    The resumed run must end with the teacher an uninterrupted run of the same length gives.
    """
    iters = 200
    out = tmp_path / "run"
    job = launch(capsys, tiles, out, "sbatch", "--gpus-per-node", "1", "--set", f"max_iters={iters}")
    wait_for_training(job, out)
    # What SLURM does `--signal-delay` seconds before the time limit (`--signal=B:USR1@...`).
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=30)
    (rec,) = wait_for_job(job, timeout=240)
    logs = out / "launch" / "slurm"
    stdout, stderr = (logs / f"test-sbatch-{job}.out").read_text(), (logs / f"test-sbatch-{job}.err").read_text()
    assert rec["JobState"] == "COMPLETED" and rec["Restarts"] == "1", stdout + stderr
    # The script's own account, in order: trap, checkpoint, requeue, restart with SLURM_RESTART_COUNT=1.
    assert "asking the workers to checkpoint" in stderr and "requeueing job" in stderr
    assert "restart 1, resuming from the last checkpoint" in stderr
    stop = re.search(rf"preempted at iteration (\d+)/{iters}", stdout)
    assert stop and 2 <= int(stop.group(1)) < iters, stdout
    assert f"completed at iteration {iters}/{iters}" in stdout
    rows = read_log(out)
    pre = [r for r in rows if r.get("event") == "preempted"]
    assert len(pre) == 1 and pre[0]["it"] == int(stop.group(1))  # kept when the resumed run rewrote the log
    assert_run_complete(out, iters, world_size=1)

    # The same configuration, uninterrupted, in this process.
    from exaonepath_lab.pretrain.trainer import train

    cfg = PretrainConfig.load(out / "launch" / "train_config.json").replace(out_dir=str(tmp_path / "ref"))
    ref = train(cfg, progress=False)
    a = load_kit_checkpoint(str(out / "checkpoint.pt"))["teacher_backbone"]
    b = load_kit_checkpoint(str(ref.checkpoint))["teacher_backbone"]
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([r["loss"] for r in rows if "loss" in r and "event" not in r], ref.losses,
                               rtol=1e-5, atol=1e-6)


def test_sbatch_preemption_beyond_max_requeues_stops_and_keeps_the_checkpoint(slurm, tiles, tmp_path, capsys):
    """`launch --max-requeues 0`: the sbatch script checkpoints on the warning signal but does not requeue."""
    out = tmp_path / "run"
    job = launch(capsys, tiles, out, "sbatch", "--gpus-per-node", "1", "--max-requeues", "0",
                 "--set", "max_iters=200")
    wait_for_training(job, out)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=30)
    (rec,) = wait_for_job(job, timeout=240)
    logs = out / "launch" / "slurm"
    stdout, stderr = (logs / f"test-sbatch-{job}.out").read_text(), (logs / f"test-sbatch-{job}.err").read_text()
    assert (rec["JobState"], rec["Restarts"], rec["ExitCode"]) == ("FAILED", "0", "1:0"), stdout + stderr
    assert "not requeueing" in stderr and "requeueing job" not in stderr, stderr
    stop = re.search(r"preempted at iteration (\d+)/200", stdout)
    assert stop, stdout
    assert load_kit_checkpoint(str(out / "checkpoint.pt"))["iteration"] == int(stop.group(1))


def wait_for_training(job: str, out: Path, rows: int = 2) -> None:
    """Until the job's run has logged ``rows`` iterations."""
    log = out / "log.jsonl"
    deadline = time.time() + 180
    while not (log.is_file() and sum('"loss"' in line for line in log.read_text().splitlines()) >= rows):
        assert time.time() < deadline, f"job {job} did not start training: {job_records(job)}"
        time.sleep(0.05)


def test_submitit_preemption_requeues_and_resumes(slurm, tiles, tmp_path, capsys):
    """USR1 to the submitit task: the trainer checkpoints, DinoTrainJob.checkpoint() resubmits, SLURM requeues."""
    iters = 200
    out = tmp_path / "run"
    job = launch(capsys, tiles, out, "submitit", "--gpus-per-node", "1", "--set", f"max_iters={iters}")
    wait_for_training(job, out)
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)  # to the job's tasks, as SLURM does
    (rec,) = wait_for_job(job, timeout=240)
    folder = out / "launch" / "submitit" / job
    stdout, stderr = (folder / f"{job}_0_log.out").read_text(), (folder / f"{job}_0_log.err").read_text()
    assert rec["JobState"] == "COMPLETED" and rec["Restarts"] == "1", stdout + stderr
    stop = re.search(rf"preempted at iteration (\d+)/{iters}", stdout)
    assert stop and 2 <= int(stop.group(1)) < iters, stdout
    assert f"completed at iteration {iters}/{iters}" in stdout
    rows = read_log(out)
    assert [r["it"] for r in rows if r.get("event") == "preempted"] == [int(stop.group(1))]
    assert_run_complete(out, iters, world_size=1)


def test_tiling_job_array_tiles_each_slide_once_and_records_the_corrupt_one(slurm, tmp_path):
    """`sbatch --array=0-1` of `exaonepath-lab tile`, then a dependent `tile --merge` job."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_tiling_run import _tissue_image, _write_tiff

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for i, mpp in enumerate((0.5, 0.5, 0.25)):
        _write_tiff(cohort / f"slide_{i}.tiff", _tissue_image(1024, mpp, seed=i), mpp)
    (cohort / "corrupt.svs").write_bytes(b"\x00garbage" * 1000)
    tiles, logs = tmp_path / "tiles", tmp_path / "logs"
    logs.mkdir()
    kit = f"{sys.executable} -m exaonepath_lab"
    common = ["sbatch", "--parsable", "--cpus-per-task=1", "--time=10"]
    array = subprocess.run(
        [*common, "--array=0-1", f"--output={logs}/tile-%A_%a.out", "--job-name=test-tile",
         f"--wrap={kit} tile {cohort} --out {tiles} --workers 1 --no-progress"],
        capture_output=True, text=True, check=True, timeout=30).stdout.strip().split(";")[0]
    merge = subprocess.run(
        [*common, f"--dependency=afterany:{array}", f"--output={logs}/merge-%j.out", "--job-name=test-merge",
         f"--wrap={kit} tile --merge --out {tiles}"],
        capture_output=True, text=True, check=True, timeout=30).stdout.strip().split(";")[0]
    tasks = wait_for_job(array, timeout=240)
    (merged,) = wait_for_job(merge, timeout=240)
    merge_out = (logs / f"merge-{merge}.out").read_text()
    # `tile --merge` exits 3 when the cohort has failed slides, as `tile` does, after writing the manifest.
    assert merged["ExitCode"] == "3:0" and "3 ok, 0 skipped (already done), 1 failed" in merge_out, merge_out
    assert "FAILED corrupt: SlideReadError" in merge_out
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"]
    # Every slide once, in one merged manifest; the corrupt file recorded as failed, the others tiled.
    m = pd.read_csv(tiles / "manifest.csv")
    assert sorted(m.slide_id) == ["corrupt", "slide_0", "slide_1", "slide_2"]
    st = m.set_index("slide_id")
    assert st.loc["corrupt", "status"] == "failed" and "corrupt.svs" in st.loc["corrupt", "error"]
    assert (st.drop("corrupt").status == "ok").all() and (st.drop("corrupt").n_patches > 0).all()
    shards = sorted(p.name for p in tiles.glob("manifest.shard-*.csv"))
    assert shards == ["manifest.shard-0000-of-0002.csv", "manifest.shard-0001-of-0002.csv"]
    report = json.loads((tiles / "tile_report.json").read_text())
    assert report["counts"]["ok"] == 3 and report["counts"]["failed"] == 1 and report["missing_shards"] == []
    # The task that met the corrupt file says so in its exit code; the other exits 0.
    exits = {t["ArrayTaskId"]: t["ExitCode"] for t in tasks}
    assert sorted(exits.values()) == ["0:0", "3:0"], exits


@pytest.mark.timeout(900)
def test_notebook_05_submits_the_cpu_demo_job_and_plots_it(slurm, smoke_inputs, tmp_path):
    """Notebook 05 with the scheduler present: renders the paper job, submits the cpu-demo job, follows it."""
    import nbformat
    import papermill as pm

    nb = Path(__file__).resolve().parents[1] / "notebooks" / "05_launch_cluster_training.ipynb"
    out = tmp_path / "out"
    pm.execute_notebook(str(nb), str(tmp_path / "05.ipynb"), cwd=str(nb.parent), kernel_name="python3",
                        progress_bar=False, request_save_on_cell_execute=False,
                        parameters={"out_dir": str(out), "smoke": True, "tile_dir": smoke_inputs["tile_dir"],
                                    "submit": True})
    summary = json.loads((out / "notebook_summary.json").read_text())
    demo = summary["demo_job"]
    assert (demo["submitted"], demo["state"], demo["iterations"], demo["restarts"]) == (True, "COMPLETED", 6, 0)
    report = json.loads((Path(demo["run_dir"]) / "run_report.json").read_text())
    assert (report["status"], report["iteration"]) == ("completed", 6)
    assert "completed at iteration 6/6" in Path(demo["job_output"]).read_text()
    assert (out / "demo_curves.html").is_file() and "demo_curves.html" in summary["figures"]
    text = "\n".join(o.get("text", "") for c in nbformat.read(tmp_path / "05.ipynb", as_version=4).cells
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "JOBID" in text and re.search(r"iteration \d+/6  loss", text), text[-3000:]  # squeue, then the log
    # The rendered paper job: random init said out loud (no init_checkpoint given), setup by absolute path.
    sb = (out / "launch" / "job.sbatch").read_text()
    assert "--set init_checkpoint=none" in sb
    setup_line = sb.split("set -uo pipefail\n", 1)[1].splitlines()[0]  # the first line after the preamble
    assert setup_line.split()[1].startswith("/"), setup_line
    assert json.loads((out / "launch" / "train_config.json").read_text())["init_checkpoint"] is None


def test_slurm_local_up_again_changes_nothing(slurm):
    """`scripts/slurm_local.sh up` is idempotent: on a running one-node SLURM it starts no second daemon."""
    state = Path(os.environ.get("EXAONEPATH_SLURM_DIR", "/var/tmp/exaonepath-lab-slurm")) / "run"
    pidfiles = [state / f"{d}.pid" for d in ("munged", "slurmctld", "slurmd")]
    if not all(p.is_file() for p in pidfiles) or os.geteuid() != 0:
        pytest.skip("this scheduler was not started by scripts/slurm_local.sh as root (another SLURM is in use)")
    before = [p.read_text() for p in pidfiles]
    script = Path(__file__).resolve().parents[1] / "scripts" / "slurm_local.sh"
    r = subprocess.run(["bash", str(script), "up"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "up: node" in r.stderr, r.stderr
    assert [p.read_text() for p in pidfiles] == before
    st = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True, timeout=60)
    assert st.returncode == 0 and st.stdout.count(": running (pid") == 3, st.stdout


def test_slurm_local_down_leaves_a_process_that_reuses_a_stale_pid_alone(tmp_path):
    """A pid file left behind (a reboot, a crashed daemon) whose number now belongs to another program:
    `down` must not kill that program, and `status` must not call it a running daemon."""
    state = tmp_path / "slurm"
    (state / "run").mkdir(parents=True)
    other = subprocess.Popen(["sleep", "60"])  # stands for whatever process got the old daemon's pid
    try:
        for d in ("munged", "slurmctld", "slurmd"):
            (state / "run" / f"{d}.pid").write_text(f"{other.pid}\n")
        script = Path(__file__).resolve().parents[1] / "scripts" / "slurm_local.sh"
        env = {**os.environ, "EXAONEPATH_SLURM_DIR": str(state)}
        st = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True, timeout=60, env=env)
        assert ": running (pid" not in st.stdout, st.stdout
        r = subprocess.run(["bash", str(script), "down"], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        assert other.poll() is None, f"`down` killed pid {other.pid}, which it did not start: {r.stderr}"
        assert not list((state / "run").glob("*.pid"))  # the stale files are gone
    finally:
        other.kill()
        other.wait()
