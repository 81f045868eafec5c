"""Cluster launch: dry-run renderings, their syntax, batch arithmetic, clear errors, CLI."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from exaonepath_lab.cli import build_parser, main
from exaonepath_lab.pretrain.launch import (
    LaunchConfig,
    format_slurm_time,
    parse_slurm_time,
    plan_launch,
    render_launch,
    split_batch,
    submit,
)

ROOT = Path(__file__).resolve().parents[1]


INIT = "/models/vit_base_patch16_224.augreg_in21k_ft_in1k.safetensors"  # ImageNet weights on the cluster


def _paper(tmp_path: Path, **kw) -> LaunchConfig:
    """The paper's launch, starting from ImageNet weights as the paper does (§4.2)."""
    overrides = (f"init_checkpoint={INIT}", *kw.pop("overrides", ()))
    return LaunchConfig(data=str(tmp_path / "tiles"), out=str(tmp_path / "run"), overrides=overrides, **kw)


def _srun_line(sbatch: str) -> list[str]:
    lines = [ln for ln in sbatch.splitlines() if ln.startswith("srun ")]
    assert len(lines) == 1 and lines[0].endswith(" &"), sbatch  # backgrounded so the trap can run
    return shlex.split(lines[0][: -len(" &")])


def test_dry_run_writes_paper_job(tmp_path):
    cfg = _paper(tmp_path, partition="gpu", constraint="a100", setup=("source /opt/venv/bin/activate",))
    paths = render_launch(cfg)
    folder = tmp_path / "run" / "launch"
    assert {p.name for p in folder.iterdir()} == {
        "launch_config.json", "train_config.json", "job.sbatch", "torchrun.sh", "submitit.json", "slurm"}
    assert (folder / "slurm").is_dir()  # SLURM opens #SBATCH --output there before the script runs
    assert all(p.parent == folder for p in paths.values())
    # Configs round-trip and carry the paper's split: 10 x 8 GPUs, 64 per GPU = 5,120.
    assert LaunchConfig.load(paths["launch_config"]) == cfg
    train_cfg = json.loads(paths["train_config"].read_text())
    assert (train_cfg["batch_size"], train_cfg["world_batch_size"], train_cfg["preset"]) == (64, 5120, "paper")
    assert train_cfg["init_checkpoint"] == INIT
    assert train_cfg["data"] == str((tmp_path / "tiles").absolute())
    sb = paths["sbatch"].read_text()
    for directive in ("--nodes=10", "--ntasks-per-node=1", "--gpus-per-node=8", "--cpus-per-task=80",
                      "--time=2-00:00:00", "--signal=B:USR1@120", "--requeue", "--partition=gpu",
                      "--constraint=a100", f"--output={folder.absolute()}/slurm/%x-%j.out"):
        assert f"#SBATCH {directive}\n" in sb
    assert "source /opt/venv/bin/activate" in sb and "scontrol requeue" in sb and "trap on_preempt USR1" in sb
    sub = json.loads(paths["submitit"].read_text())
    assert sub["parameters"]["nodes"] == 10 and sub["parameters"]["tasks_per_node"] == 8
    assert sub["parameters"]["slurm_additional_parameters"] == {"requeue": True, "signal": "USR1@120"}
    assert sub["parameters"]["slurm_setup"][0] == "export SUBMITIT_PREEMPT_SIGNAL=USR1"
    assert (sub["world_size"], sub["batch_per_gpu"], sub["global_batch"]) == (80, 64, 5120)
    for key in ("sbatch", "torchrun"):  # rendered scripts are valid bash
        res = subprocess.run(["bash", "-n", str(paths[key])], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert os.access(paths[key], os.X_OK)


def test_sbatch_torchrun_line_parses_back(tmp_path):
    """The srun line's torchrun options are torchrun's, and the rest is a valid `train` command line."""
    from torch.distributed.run import get_args_parser

    cfg = _paper(tmp_path, overrides=("epochs=5", "global_crop_scale=[0.25,1.0]"))
    argv = _srun_line(plan_launch(cfg).sbatch)
    assert argv[:3] == ["srun", "--kill-on-bad-exit=1", "torchrun"]
    tr = get_args_parser().parse_args(argv[3:])  # torchrun's own parser (this torch version)
    assert (tr.nnodes, tr.nproc_per_node, tr.rdzv_backend) == ("$SLURM_NNODES", "8", "c10d")
    assert tr.rdzv_endpoint == "$MASTER_ADDR:$PORT" and tr.rdzv_id == "$SLURM_JOB_ID"
    assert tr.module and tr.training_script == "exaonepath_lab.cli"
    assert "SIGUSR1" in tr.signals_to_handle.split(",")
    train_argv = [a for a in tr.training_script_args if a != "$RESUME"] + ["--resume"]  # as on a requeue
    args = build_parser().parse_args(train_argv)
    assert (args.command, args.preset, args.resume, args.no_progress) == ("train", "paper", True, True)
    assert args.data == str((tmp_path / "tiles").absolute()) and args.out == str((tmp_path / "run").absolute())
    assert args.overrides == [f"init_checkpoint={INIT}", "epochs=5", "global_crop_scale=[0.25,1.0]", "batch_size=64"]


def test_torchrun_script_single_and_multi_node(tmp_path):
    from torch.distributed.run import get_args_parser

    one = plan_launch(_paper(tmp_path, nodes=1, gpus_per_node=8, global_batch=512)).torchrun
    line = [ln for ln in one.splitlines() if ln.startswith("exec torchrun ")][0]
    tr = get_args_parser().parse_args(shlex.split(line)[2:-1])  # drop "exec torchrun" and "$@"
    assert tr.standalone and tr.nnodes == "1" and tr.nproc_per_node == "8"
    assert build_parser().parse_args(tr.training_script_args).overrides == [f"init_checkpoint={INIT}", "batch_size=64"]
    multi = plan_launch(_paper(tmp_path, nodes=2, gpus_per_node=4)).torchrun
    assert "--nnodes 2 --node_rank \"$NODE_RANK\"" in multi and "batch_size=640" in multi  # 5120 / 8
    mline = [ln for ln in multi.splitlines() if ln.startswith("exec torchrun ")][0]
    mt = get_args_parser().parse_args(shlex.split(mline.replace('"$NODE_RANK"', "1"))[2:-1])  # as on node 1
    # Every node's torchrun forwards SLURM's USR1 and waits for the checkpoint, as the one-node script does.
    assert (mt.nnodes, mt.node_rank, mt.nproc_per_node, mt.rdzv_backend) == ("2", 1, "4", "c10d")
    assert mt.shutdown_timeout == tr.shutdown_timeout == 100 and "SIGUSR1" in mt.signals_to_handle.split(",")


def test_batch_split_arithmetic_and_errors(tmp_path):
    assert split_batch(80, global_batch=5120, batch_per_gpu=None, preset_batch_per_gpu=64) == (64, 5120)
    assert split_batch(16, global_batch=None, batch_per_gpu=None, preset_batch_per_gpu=64) == (64, 1024)
    assert split_batch(80, global_batch=None, batch_per_gpu=32, preset_batch_per_gpu=64) == (32, 2560)
    with pytest.raises(ValueError, match=r"global batch 5120 does not split evenly over 24 GPUs.*213\.33"):
        split_batch(24, global_batch=5120, batch_per_gpu=None, preset_batch_per_gpu=64)
    with pytest.raises(ValueError, match=r"batch per GPU 60 × 80 GPUs = 4800, not the global batch 5120"):
        split_batch(80, global_batch=5120, batch_per_gpu=60, preset_batch_per_gpu=64)
    # The paper preset keeps its global batch when the GPU count changes ...
    assert plan_launch(_paper(tmp_path, nodes=4)).batch_per_gpu == 160
    with pytest.raises(ValueError, match=r"global batch 5120 does not split evenly over 24 GPUs"):
        plan_launch(_paper(tmp_path, nodes=3))
    # `--set batch_size=N` is the per-GPU batch, as for `train`: the global batch follows.
    assert plan_launch(_paper(tmp_path, overrides=("batch_size=32",))).global_batch == 2560
    with pytest.raises(ValueError, match="batch per GPU 32 × 80 GPUs = 2560, not the global batch 5120"):
        plan_launch(_paper(tmp_path, overrides=("batch_size=32",), global_batch=5120))
    # ... other presets keep their per-GPU batch.
    from exaonepath_lab.pretrain.presets import get_preset

    per = get_preset("cpu-demo").batch_size
    demo = plan_launch(LaunchConfig(preset="cpu-demo", data="d", out=str(tmp_path), nodes=1, gpus_per_node=2))
    assert (demo.batch_per_gpu, demo.global_batch) == (per, 2 * per)


def test_config_validation_messages(tmp_path):
    with pytest.raises(ValueError, match="engine='slurm'; use one of submitit, sbatch, torchrun"):
        _paper(tmp_path, engine="slurm")
    with pytest.raises(ValueError, match="override 'epochs': expected KEY=VALUE"):
        _paper(tmp_path, overrides=("epochs",))
    with pytest.raises(ValueError, match="signal_delay_s=7200 must be within the time limit"):
        _paper(tmp_path, time_min=60, signal_delay_s=7200)
    with pytest.raises(ValueError, match="unknown config keys \\['epochz'\\]"):  # typo caught before queueing
        plan_launch(_paper(tmp_path, overrides=("epochz=3",)))
    with pytest.raises(ValueError, match="--data, --out"):
        plan_launch(LaunchConfig(out=str(tmp_path)))


@pytest.mark.parametrize("text,minutes", [("90", 90), ("48:00:00", 2880), ("2-00:00:00", 2880), ("1-12", 2160),
                                          ("0-00:30", 30), ("10:30", 11), ("1:00:01", 61)])
def test_slurm_time(text, minutes):
    assert parse_slurm_time(text) == minutes
    assert parse_slurm_time(format_slurm_time(minutes)) == minutes


def test_slurm_time_error():
    with pytest.raises(ValueError, match="'two days' is not a SLURM time"):
        parse_slurm_time("two days")


def test_submit_without_slurm_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # a machine without SLURM's commands
    with pytest.raises(RuntimeError, match=r"`sbatch` is not on PATH.*job\.sbatch"):
        submit(_paper(tmp_path, engine="sbatch"))
    with pytest.raises(RuntimeError, match="submitit found no SLURM here"):
        submit(_paper(tmp_path, engine="submitit"))
    with pytest.raises(ValueError, match="runs on this machine only \\(nodes=1\\), not 10 nodes"):
        submit(_paper(tmp_path, engine="torchrun"))
    assert (tmp_path / "run" / "launch" / "job.sbatch").is_file()  # rendered before failing


def test_cli_dry_run_and_error(tmp_path, capsys):
    rc = main(["launch", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--init", INIT, "--nodes", "2",
               "--gpus-per-node", "4", "--time", "12:00:00", "--partition", "a100", "--engine", "sbatch"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 node(s) x 4 GPU(s) = 8 processes; 640 images per GPU, global batch 5120" in out
    assert "dry run: nothing submitted" in out
    sb = (tmp_path / "o" / "launch" / "job.sbatch").read_text()
    assert "#SBATCH --time=0-12:00:00" in sb and "#SBATCH --partition=a100" in sb
    rc = main(["launch", "--data", "d", "--out", str(tmp_path / "o2"), "--init", INIT, "--nodes", "3"])
    err = capsys.readouterr().err
    assert rc == 1 and "global batch 5120 does not split evenly over 24 GPUs" in err
    assert not (tmp_path / "o2").exists()  # nothing rendered for an invalid job


def test_paper_launch_without_init_is_refused_before_queueing(tmp_path, capsys):
    """The paper starts from ImageNet: no --init is an error at render time; --init none is random init on purpose."""
    rc = main(["launch", "--data", "d", "--out", str(tmp_path / "o"), "--engine", "sbatch"])
    assert rc == 1 and "starts from ImageNet weights" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["launch", "--data", "d", "--out", str(tmp_path / "o"), "--engine", "sbatch", "--init", "none"]) == 0
    assert json.loads((tmp_path / "o" / "launch" / "train_config.json").read_text())["init_checkpoint"] is None
    sb = (tmp_path / "o" / "launch" / "job.sbatch").read_text()
    assert "--set init_checkpoint=none" in sb  # `train` reads it as random init on purpose, as launch did


def test_relative_init_and_stain_target_are_made_absolute_like_data_and_out(tmp_path, monkeypatch):
    """Jobs start in another working directory (each node running torchrun.sh, a copied job.sbatch): the
    ImageNet weights and the Macenko target given relative to here must reach `train` as absolute paths."""
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--data", "tiles", "--out", "run", "--init", "weights/vit_b.safetensors", "--nodes", "2",
                 "--gpus-per-node", "4", "--set", "stain_target=targets/authors.png"]) == 0
    init, target = str(tmp_path / "weights" / "vit_b.safetensors"), str(tmp_path / "targets" / "authors.png")
    folder = tmp_path / "run" / "launch"
    train_cfg = json.loads((folder / "train_config.json").read_text())  # what the submitit job trains with
    assert (train_cfg["init_checkpoint"], train_cfg["stain_target"]) == (init, target)
    srun = [a for a in _srun_line((folder / "job.sbatch").read_text()) if a != "$RESUME"]
    sb_args = build_parser().parse_args(srun[srun.index("exaonepath_lab.cli") + 1:])
    line = [ln for ln in (folder / "torchrun.sh").read_text().splitlines() if ln.startswith("exec torchrun ")][0]
    tr_args = build_parser().parse_args(shlex.split(line)[shlex.split(line).index("exaonepath_lab.cli") + 1:-1])
    for args in (sb_args, tr_args):
        assert f"init_checkpoint={init}" in args.overrides and f"stain_target={target}" in args.overrides


def test_submit_into_a_run_with_a_checkpoint_is_refused_before_queueing_unless_resume(tmp_path, capsys):
    """A new job for an --out that holds a checkpoint would stop at its start (after the queue wait); `launch
    --resume` is the way to continue that run (its train command gets --resume from the first start on)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"a previous run")
    argv = ["launch", "--preset", "cpu-demo", "--data", str(tmp_path / "d"), "--out", str(out), "--nodes", "1",
            "--gpus-per-node", "1", "--engine", "sbatch"]
    assert main([*argv, "--submit"]) == 1
    assert "checkpoint.pt exists: pass --resume to continue that run" in capsys.readouterr().err
    assert not (out / "launch").exists()  # nothing rendered, nothing queued
    assert main([*argv, "--resume"]) == 0  # dry run
    srun = [a for a in _srun_line((out / "launch" / "job.sbatch").read_text()) if a != "$RESUME"]
    assert build_parser().parse_args(srun[srun.index("exaonepath_lab.cli") + 1:]).resume
