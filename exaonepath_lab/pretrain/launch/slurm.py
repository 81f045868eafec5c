"""Talking to a SLURM scheduler: is there one, what state is a job in, wait for it (notebook 05, the tests)."""
from __future__ import annotations

import shutil
import subprocess
import time
from typing import Callable

#: Job states after which a job (or array task) runs no more.
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                          "DEADLINE", "PREEMPTED"})


def scheduler_unavailable() -> str | None:
    """Why no SLURM scheduler can take jobs from here, or None when ``sinfo`` answers with a usable node."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return ("SLURM's commands (sbatch, sinfo) are not installed here; on a laptop, `make slurm-up` installs "
                "and starts a one-node SLURM (scripts/slurm_local.sh)")
    try:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "`sinfo` did not answer within 10 s: the scheduler is down or unreachable (`make slurm-up` starts one)"
    if res.returncode:
        msg = (res.stderr.strip().splitlines() or ["no message"])[-1][:200]
        return f"`sinfo` does not answer ({msg}); on a laptop, `make slurm-up` starts a one-node SLURM"
    states = {s.rstrip("*~#!%$@^-") for s in res.stdout.split()}
    if not states & {"idle", "mixed", "allocated", "completing"}:
        return f"SLURM answers but no node takes jobs (node states: {sorted(states) or 'none'})"
    return None


def job_records(job_id: str) -> list[dict[str, str]]:
    """``scontrol show job -o JOB`` as one dict per job or array task (``JobState``, ``ExitCode``, ``Restarts``...)."""
    res = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, timeout=30)
    if res.returncode:
        raise RuntimeError(f"scontrol show job {job_id}: {res.stderr.strip() or res.stdout.strip()}")
    return [dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in res.stdout.splitlines() if line]


def wait_for_job(job_id: str, *, timeout: float = 3600, poll_s: float = 0.5,
                 on_poll: Callable[[list[dict[str, str]]], None] | None = None) -> list[dict[str, str]]:
    """Wait until every task of ``job_id`` is in a :data:`FINAL_STATES` state; returns the records.

    A requeued job passes through PENDING again and is waited for. ``on_poll`` sees the
    records at every poll (e.g. to print the log's newest rows). ``TimeoutError`` after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        recs = job_records(job_id)
        if on_poll is not None:
            on_poll(recs)
        if recs and all(r.get("JobState") in FINAL_STATES for r in recs):
            return recs
        if time.monotonic() > deadline:
            raise TimeoutError(f"SLURM job {job_id} still running after {timeout:.0f} s: "
                               f"{[r.get('JobState') for r in recs]}")
        time.sleep(poll_s)


def squeue(job_id: str | None = None) -> str:
    """``squeue``'s table (for one job, or the whole queue)."""
    cmd = ["squeue"] + (["-j", str(job_id)] if job_id else [])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return res.stdout if res.returncode == 0 else f"squeue failed: {res.stderr.strip()}"
