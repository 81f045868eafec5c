"""Notebook 03 through JupyterLab's own UI, in a real browser (headless Chromium via playwright).

JupyterLab is started on 127.0.0.1 (free port, token) over a temporary folder holding a copy of
notebook 03 whose parameters point at the smoke cohort and checkpoints. The browser opens it,
runs every cell from the Run menu, and waits until each code cell has executed; the saved
notebook must hold no error output. Then the collapse explorer (ipywidgets, found by its
controls' descriptions, not by cell position) is driven like a user would: changing the
encoder, the input normalization and the embedding method must change the drawn figure, and
changing what is embedded must change the metrics line. No request may leave the local server.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from _browser import browser_session, chromium_executable, plots, undrawn_points, wait_for_plots

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_wsi_collapse_tsne.ipynb"
RUN_TIMEOUT_S = 240  # Run All on a busy 2-core machine (about a minute when idle)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_notebook(root: Path, smoke_inputs: dict, out_dir: Path) -> Path:
    """Notebook 03 with its parameters injected the way papermill does it (not executed)."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(NOTEBOOK))
    tagged = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    declared = {line.split("=")[0].strip() for line in tagged.source.splitlines()
                if "=" in line and not line.lstrip().startswith("#")}
    params = {"out_dir": str(out_dir), "smoke": True, "method": "pca", **smoke_inputs,
              "data": smoke_inputs["tile_dir"]}  # notebook 03 takes the patches as `data` (as audit does)
    nb = parameterize_notebook(nb, {k: v for k, v in params.items() if k in declared})
    path = root / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1 with its own config, settings and runtime folders."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                         ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
                         ("IPYTHONDIR", "ipython")):
            env[var] = str(home / sub)
            (home / sub).mkdir(parents=True, exist_ok=True)
        # Every cell stays in the page (no virtual scrolling), so each cell's prompt can be read.
        tracker = home / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True, exist_ok=True)
        tracker.write_text(json.dumps({"windowingMode": "none"}))
        news = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True, exist_ok=True)
        news.write_text(json.dumps({"fetchNews": "false"}))  # no "get Jupyter news?" toast over the page
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.log_path = home / "jupyterlab.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
             f"--port={self.port}", "--port-retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def api(self, path: str, method: str = "GET") -> bytes:
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def kernel_states(self) -> list[str]:
        return [k["execution_state"] for k in json.loads(self.api("/api/kernels"))]

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited ({self.proc.returncode}):\n{self.log()}")
            try:
                self.api("/api/status")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise AssertionError(f"jupyter lab did not answer on {self.url} in {timeout_s:.0f} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-4000:]

    def stop(self) -> None:
        """Shut down through the server's API, kernels first; signal only if that fails."""
        if self.proc.poll() is None:
            try:
                for k in json.loads(self.api("/api/kernels")):
                    self.api(f"/api/kernels/{k['id']}", method="DELETE")
                self.api("/api/shutdown", method="POST")
                self.proc.wait(timeout=30)
            except Exception:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        self._log.close()


@pytest.fixture
def jupyterlab(tmp_path: Path):
    chromium_executable()  # skip (or fail under CI) before starting a server the test cannot drive
    root = tmp_path / "lab"
    root.mkdir()
    lab = JupyterLab(root, tmp_path / "jupyter_home")
    try:
        lab.wait_ready()
        yield lab
    finally:
        lab.stop()
    assert lab.proc.returncode is not None


def _executed_prompts(page) -> tuple[int, int, int]:
    """(code cells, cells with an execution number, cells still running) as the notebook shows them."""
    return page.evaluate(r"""() => {
      const sel = '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt';
      const ps = Array.from(document.querySelectorAll(sel))
        .map(p => p.textContent.trim());
      return [ps.length, ps.filter(t => /^\[\d+\]:?$/.test(t)).length, ps.filter(t => t.includes('*')).length];
    }""")


def _control(page, kind: str, description: str):
    """An ipywidgets control by its type (CSS class) and description label."""
    label = page.locator(".widget-label", has_text=re.compile(rf"^\s*{description}\s*$"))
    return page.locator(f".widget-{kind}", has=label)


def _figure_signature(frame) -> tuple:
    """Where the figure's points are drawn (px), per trace: changes only when the picture does."""
    p = wait_for_plots(frame)[0]
    return tuple((t["name"], tuple((round(x), round(y)) for x, y in t["points"])) for t in p["traces"])


@pytest.fixture(scope="module")
def seed1_checkpoint(smoke_inputs: dict, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-iteration cpu-demo run from another seed, standing in for the Macenko-trained encoder.

    The smoke fixture's two checkpoints start from the same seed and train 6 steps, so their
    features give the same neighbourhoods: switching between them could not change the metrics.
    """
    from exaonepath_lab.pretrain.presets import get_preset
    from exaonepath_lab.pretrain.trainer import train

    cfg = get_preset("cpu-demo", data=smoke_inputs["tile_dir"], out_dir=str(tmp_path_factory.mktemp("seed1_run")),
                     normalize=True, seed=1, max_iters=1, warmup_iters=1, warmup_teacher_temp_iters=1, batch_size=16)
    res = train(cfg)
    assert res.status == "completed" and res.checkpoint is not None, res.status
    return str(res.checkpoint)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook03_runs_in_jupyterlab_and_its_explorer_responds(jupyterlab, smoke_inputs: dict, seed1_checkpoint: str,
                                                                  tmp_path: Path) -> None:
    lab = jupyterlab
    nb_path = _prepare_notebook(lab.root, {**smoke_inputs, "ckpt_norm": seed1_checkpoint}, tmp_path / "nb_out")
    local = lambda url: url.startswith((f"{lab.url}/", f"ws://127.0.0.1:{lab.port}/"))
    with browser_session("jupyterlab_notebook03", allowed=local, viewport=(1800, 1000)) as session:
        page = session.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{lab.url}/lab/tree/{nb_path.name}?token={lab.token}", wait_until="domcontentloaded")
        expected = sum(c.cell_type == "code" for c in nbformat.read(nb_path, as_version=4).cells)
        deadline = time.monotonic() + 90
        while _executed_prompts(page)[0] < expected or lab.kernel_states() != ["idle"]:
            assert time.monotonic() < deadline, (f"the notebook did not open with an idle kernel in 90 s: "
                                                  f"{_executed_prompts(page)[0]}/{expected} code cells shown, "
                                                  f"kernels {lab.kernel_states()}")
            page.wait_for_timeout(500)
        n_code = _executed_prompts(page)[0]

        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            total, done, running = _executed_prompts(page)
            if total == n_code and done == n_code and running == 0:
                break
            assert time.monotonic() < deadline, (f"Run All did not finish in {RUN_TIMEOUT_S} s: {done}/{total} cells "
                                                  f"executed, {running} running\n{lab.log()}")
            page.wait_for_timeout(1000)
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for()

        # The notebook as the UI saved it: every code cell executed, no error output anywhere.
        page.get_by_role("menuitem", name="File", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Save Notebook(?! As)")).click()
        codes: list = []
        for _ in range(60):
            try:
                saved = nbformat.read(nb_path, as_version=4)
            except Exception:  # caught mid-write
                saved = nbformat.v4.new_notebook()
            codes = [c for c in saved.cells if c.cell_type == "code"]
            if codes and all(c.get("execution_count") for c in codes):
                break
            page.wait_for_timeout(500)
        assert all(c.get("execution_count") for c in codes), "the saved notebook has unexecuted cells"
        errors = [(c.execution_count, o.get("ename"), o.get("evalue")) for c in codes for o in c.outputs
                  if o.output_type == "error"]
        assert not errors, f"error outputs in notebook 03: {errors}"

        # The notebook's interactive figures (plotly's JupyterLab renderer) draw every point. (Figure 2 is
        # 1260 px wide: the 1800 px window leaves room for it beside JupyterLab's side bar.)
        figures = wait_for_plots(page)
        for k in range(len(figures)):
            page.locator(".js-plotly-plot").nth(k).scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            total, problems = undrawn_points(page, k)
            assert total > 0 and not problems, "notebook figure: " + "; ".join(problems)

        # The explorer: its dropdowns / toggle buttons by description.
        encoder = _control(page, "dropdown", "encoder")
        inputs = _control(page, "dropdown", "input")
        method = _control(page, "toggle-buttons", "method")
        for c, what in ((encoder, "encoder"), (inputs, "input"), (method, "method")):
            assert c.count() == 1, f"explorer control {what!r}: found {c.count()} in the page"
        explorer = page.locator(".widget-vbox", has=encoder).filter(has=page.locator("iframe")).last
        caption = explorer.locator(".widget-html", has_text="purity").first
        frame_el = explorer.locator("iframe").first

        def state() -> tuple[tuple, str]:
            frame_el.scroll_into_view_if_needed()
            frame = frame_el.element_handle().content_frame()
            return _figure_signature(frame), caption.inner_text()

        def change(action, what: str, *, metrics_change: bool) -> None:
            before = state()
            action()
            deadline = time.monotonic() + 90
            while True:
                try:
                    now = state()
                except Exception:  # the figure's iframe is being replaced
                    now = before
                if now[0] != before[0] and (now[1] != before[1] or not metrics_change):
                    break
                assert time.monotonic() < deadline, (
                    f"changing the explorer's {what} did not change the "
                    + ("drawn figure" if now[0] == before[0] else "metrics line") + f" (metrics: {now[1]!r})")
                page.wait_for_timeout(500)
            frame = frame_el.element_handle().content_frame()
            total, problems = undrawn_points(frame)
            assert total > 0 and not problems, f"after changing {what}: " + "; ".join(problems)

        first = state()
        assert any(pts for _, pts in first[0]), "the explorer's figure has no points"
        assert "purity" in first[1], f"no metrics line under the explorer: {first[1]!r}"
        options = lambda sel: [o for o in sel.locator("select option").all_inner_texts()]
        enc_now = encoder.locator("select").input_value()
        other_enc = next(o for o in options(encoder) if o != enc_now)
        change(lambda: encoder.locator("select").select_option(label=other_enc), "encoder", metrics_change=True)
        in_now = inputs.locator("select").input_value()
        other_in = next(o for o in options(inputs) if o != in_now)
        change(lambda: inputs.locator("select").select_option(label=other_in), "input", metrics_change=True)
        buttons = method.locator("button")
        idle = [i for i, b in enumerate(buttons.all()) if "mod-active" not in (b.get_attribute("class") or "")]
        names = buttons.all_inner_texts()
        target = next((i for i in idle if names[i].strip().lower() == "pca"), idle[0])  # PCA: the quickest to embed
        change(lambda: buttons.nth(target).click(), "method", metrics_change=False)
        session.assert_clean()
