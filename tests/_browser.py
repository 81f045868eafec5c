"""A real browser for the tests: Debian's headless Chromium driven by playwright.

``playwright install`` is never needed: the system Chromium is launched through
``executable_path`` (``$EXAONEPATH_LAB_CHROMIUM``, else ``chromium`` / ``chromium-browser`` /
``google-chrome`` on PATH). Without Chromium or playwright the browser tests skip with the
reason, except under ``CI=true`` where they fail (``.ci/run`` installs ``chromium``).

:func:`browser_session` records what a user would not see but should never happen: console
errors, uncaught page errors, failed requests, and every request that leaves the allowed
origin (``file://`` for an offline report, the local server for JupyterLab). When the body
of the ``with`` fails, a full-page screenshot of every open page is written to
``test-artifacts/<name>/`` (``$EXAONEPATH_LAB_TEST_ARTIFACTS`` overrides the folder) and the
path is printed. :func:`plots` and :func:`undrawn_points` read plotly figures as drawn.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ENV = "EXAONEPATH_LAB_CHROMIUM"
ARTIFACTS_ENV = "EXAONEPATH_LAB_TEST_ARTIFACTS"
#: Chromium flags: no sandbox (CI runs as root), no first-run/background traffic of its own.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-default-apps", "--disable-sync"]
#: URL schemes that never leave the page (inline images, generated iframes and blobs).
INLINE_SCHEMES = ("data:", "blob:", "about:")


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run; .ci/run installs Debian's chromium)")
    pytest.skip(reason)


def chromium_executable() -> str:
    """The Chromium binary to drive, or skip (fail under CI=true) saying how to get one."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    env = os.environ.get(CHROMIUM_ENV)
    if env:
        if not Path(env).is_file():
            _missing(f"${CHROMIUM_ENV}={env} is not a file")
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    _missing(f"no Chromium found (apt-get install chromium, or set ${CHROMIUM_ENV} to a Chromium binary)")
    raise AssertionError("unreachable")


def artifacts_dir(name: str) -> Path:
    base = Path(os.environ.get(ARTIFACTS_ENV) or ROOT / "test-artifacts")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return base / safe


def file_only(url: str) -> bool:
    """Allowed origin of an offline report: the file system only."""
    return url.startswith("file://")


@dataclass
class BrowserLog:
    """What went wrong in the pages of one session (each entry names the page it came from)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return ([f"console error: {m}" for m in self.console_errors] + [f"page error: {m}" for m in self.page_errors]
                + [f"failed request: {m}" for m in self.failed_requests]
                + [f"request outside the allowed origin: {m}" for m in self.outside_requests])


class BrowserSession:
    """One headless Chromium; pages opened with :meth:`new_page` are watched and screenshotted on failure."""

    def __init__(self, browser: Any, allowed: Callable[[str], bool], viewport: tuple[int, int]) -> None:
        self.browser = browser
        self.allowed = allowed
        self.viewport = viewport
        self.log = BrowserLog()
        self.pages: list[Any] = []

    def new_page(self, *, viewport: tuple[int, int] | None = None) -> Any:
        w, h = viewport or self.viewport
        page = self.browser.new_page(viewport={"width": w, "height": h}, device_scale_factor=1)
        self.pages.append(page)
        log = self.log

        def on_console(msg: Any) -> None:
            if msg.type == "error":
                log.console_errors.append(f"{msg.text} [{msg.location.get('url', page.url)}]")

        def on_request(req: Any) -> None:
            url = req.url
            if not url.startswith(INLINE_SCHEMES) and not self.allowed(url):
                log.outside_requests.append(url)

        def on_failed(req: Any) -> None:
            if not req.url.startswith(INLINE_SCHEMES) and self.allowed(req.url):
                log.failed_requests.append(f"{req.url}: {req.failure}")

        page.on("console", on_console)
        page.on("pageerror", lambda err: log.page_errors.append(f"{err} [{page.url}]"))
        page.on("request", on_request)
        page.on("requestfailed", on_failed)
        return page

    def assert_clean(self, *, ignore_failed: Callable[[str], bool] = lambda _m: False) -> None:
        problems = [p for p in self.log.problems() if not (p.startswith("failed request") and ignore_failed(p))]
        assert not problems, "the browser saw:\n  " + "\n  ".join(problems[:30])

    def screenshots(self, name: str) -> Path:
        out = artifacts_dir(name)
        out.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(self.pages):
            with contextlib.suppress(Exception):
                page.screenshot(path=str(out / f"page{i}.png"), full_page=True, timeout=15_000)
        (out / "browser_log.txt").write_text("\n".join(self.log.problems()) + "\n")
        return out


@contextlib.contextmanager
def browser_session(name: str, *, allowed: Callable[[str], bool] = file_only,
                    viewport: tuple[int, int] = (1400, 900)) -> Iterator[BrowserSession]:
    """Headless Chromium for the ``with`` body; on failure its pages are kept as screenshots."""
    exe = chromium_executable()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        session = BrowserSession(browser, allowed, viewport)
        try:
            yield session
        except BaseException:
            out = session.screenshots(name)
            print(f"\n[browser] screenshots and console log of the failed test: {out}")
            raise
        finally:
            with contextlib.suppress(Exception):
                browser.close()


# ----------------------------------------------------------------------------- plotly figures as drawn
_PLOTS_JS = r"""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  const fl = gd._fullLayout;
  if (!fl || !gd._fullData) return {ready: false};
  const r = gd.getBoundingClientRect();
  const ax = (id, letter) => fl[letter + 'axis' + (id || letter).slice(1)];
  const traces = gd._fullData.filter(t => t.visible === true).map(t => {
    const out = {type: t.type, name: String(t.name), n: 0, points: [], color: t.marker ? t.marker.color : null};
    const markers = (t.type === 'scatter' || t.type === 'scattergl') && String(t.mode).includes('markers');
    if (markers) {
      const xa = ax(t.xaxis, 'x'), ya = ax(t.yaxis, 'y');
      for (let i = 0; i < t._length; i++) {
        const x = xa.d2l(t.x[i]), y = ya.d2l(t.y[i]);
        if (!isFinite(x) || !isFinite(y)) continue;
        out.points.push([xa._offset + xa.l2p(x), ya._offset + ya.l2p(y)]);
      }
      out.n = out.points.length;
    } else if (t.type === 'bar') {
      for (let i = 0; i < t._length; i++) { const v = Number(t.orientation === 'h' ? t.x[i] : t.y[i]); if (v) out.n++; }
    }
    return out;
  });
  // Bars as drawn: the centre of every bar shape of non-zero size, in px of the figure.
  const barCentres = Array.from(gd.querySelectorAll('.barlayer .point path')).map(p => p.getBoundingClientRect())
    .filter(b => b.width > 0 && b.height > 0).map(b => [b.x - r.x + b.width / 2, b.y - r.y + b.height / 2]);
  if (barCentres.length) traces.push({type: 'bar shapes', name: 'bars', n: barCentres.length, points: barCentres});
  const visibleBars = barCentres.length;
  return {ready: true, id: gd.id, width: fl.width, height: fl.height, rect: [r.x, r.y, r.width, r.height],
          svgPoints: gd.querySelectorAll('.scatterlayer .point').length, bars: visibleBars,
          glCanvases: gd.querySelectorAll('canvas').length, traces: traces,
          title: (fl.title && fl.title.text) || ''};
})"""


def plots(frame: Any) -> list[dict]:
    """Every plotly figure in ``frame`` (a playwright Page or Frame) with its points in CSS px of the figure."""
    return frame.evaluate(_PLOTS_JS)


def wait_for_plots(frame: Any, *, timeout_s: float = 30.0) -> list[dict]:
    """Wait until the frame's plotly figures exist and are laid out (plotly.js loaded and drawn)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        ps = plots(frame)
        if ps and all(p["ready"] for p in ps):
            return ps
        if time.monotonic() > deadline:
            raise AssertionError(f"no drawn plotly figure in {frame.url} after {timeout_s:.0f} s (found {ps})")
        frame.wait_for_timeout(250)


def undrawn_points(frame: Any, index: int = 0, *, tolerance: int = 40) -> tuple[int, list[str]]:
    """Count the points of figure ``index`` that are visible on screen; return (total, problems).

    Each marker point (SVG or WebGL) must show a non-background pixel within 2 px of where its
    data coordinates map; SVG marker and bar counts must match the data. The screenshot is the
    figure element as the browser composited it, so a WebGL canvas that failed to draw fails here.
    """
    import numpy as np
    from PIL import Image

    p = plots(frame)[index]
    loc = frame.locator(".js-plotly-plot").nth(index)
    img = np.asarray(Image.open(io.BytesIO(loc.screenshot(animations="disabled"))).convert("RGB")).astype(int)
    bg = np.array([255, 255, 255])
    h, w = img.shape[:2]
    problems: list[str] = []
    total = 0
    n_svg = sum(t["n"] for t in p["traces"] if t["type"] == "scatter")
    if p["svgPoints"] != n_svg:
        problems.append(f"figure {p['id']}: {p['svgPoints']} SVG points drawn for {n_svg} in the data")
    n_bars = sum(t["n"] for t in p["traces"] if t["type"] == "bar")
    if p["bars"] < n_bars:
        problems.append(f"figure {p['id']}: {p['bars']} bars drawn for {n_bars} non-zero bars in the data")
    for t in p["traces"]:
        missing = []
        for x, y in t["points"]:
            total += 1
            xi, yi = int(round(x)), int(round(y))
            patch = img[max(yi - 2, 0):min(yi + 3, h), max(xi - 2, 0):min(xi + 3, w)]
            if patch.size == 0 or np.abs(patch - bg).max(axis=-1).max() < tolerance:
                missing.append((xi, yi))
        if missing:
            problems.append(f"figure {p['id']} trace {t['name']!r} ({t['type']}): {len(missing)} of {t['n']} points "
                            f"not drawn, e.g. at px {missing[:3]} of the {w}x{h} figure as shown")
    return total, problems
