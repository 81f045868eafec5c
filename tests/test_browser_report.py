"""The offline reports (the demo's and ``exaonepath-lab audit``'s) in a real browser (headless Chromium via playwright).

What a reader meets when opening ``index.html`` from disk: no console error, no request that
leaves the file system (plotly.js is the local copy, never a CDN), every interactive figure
draws all of its points, and hovering a Figure 2 point shows that patch's thumbnail.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from _browser import browser_session, plots, undrawn_points, wait_for_plots

pytestmark = pytest.mark.timeout(600)  # the first test may build the smoke cohort and the demo report

#: For every iframe of the report: its URL and the title of the report section it sits in.
_IFRAMES_JS = """() => Array.from(document.querySelectorAll('iframe')).map(f => {
  let e = f, title = '';
  while (e && !title) { let s = e.previousElementSibling;
    while (s && !title) { if (/^H[12]$/.test(s.tagName)) title = s.textContent; s = s.previousElementSibling; }
    e = e.parentElement; }
  return {src: f.src, section: title};
})"""


@pytest.fixture(scope="module")
def demo_report(smoke_inputs: dict) -> Path:
    """The demo's report at smoke size (shares the smoke cohort and checkpoints; reruns skip done stages)."""
    from exaonepath_lab.demo import DemoConfig, run_demo

    out = Path(smoke_inputs["tile_dir"]).parent
    return run_demo(DemoConfig(out_dir=str(out), smoke=True), progress=False)


@pytest.fixture(scope="module")
def audit_report(smoke_inputs: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``exaonepath-lab audit`` on the smoke tiling with the two smoke checkpoints, at small sizes."""
    from exaonepath_lab.cli import main

    out = tmp_path_factory.mktemp("audit_report")
    rc = main(["audit", smoke_inputs["tile_dir"], "--out", str(out), "--encoder", "kit-dino", "--checkpoint",
               smoke_inputs["ckpt_raw"], "--encoder", "kit-dino", "--checkpoint", smoke_inputs["ckpt_norm"],
               "--n-slides", "4", "--per-slide", "20", "--k", "5", "--n-boot", "20", "--method", "pca",
               "--threads", "1", "--stain-backend", "torch", "--quiet"])
    assert rc == 0 and (out / "index.html").exists()
    return out / "index.html"


#: The reports a user opens from disk, each built by its own fixture (``<name>_report``).
REPORTS = ["demo", "audit"]


@pytest.fixture(params=REPORTS)
def report(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"{request.param}_report")


def _open_report(session, index: Path):
    """Open the report, scroll every (lazy) iframe into view and wait for its figures to draw."""
    page = session.new_page()
    page.goto(index.as_uri(), wait_until="load")
    frames = []
    for i, info in enumerate(page.evaluate(_IFRAMES_JS)):
        el = page.locator("iframe").nth(i)
        el.scroll_into_view_if_needed()
        frame = el.element_handle().content_frame()
        assert frame is not None, f"iframe {info['src']} has no document"
        frame.wait_for_load_state("load")
        wait_for_plots(frame)
        frames.append((info, frame, el))
    return page, frames


@pytest.mark.slow
def test_report_opens_offline_and_draws_every_point(report: Path, request: pytest.FixtureRequest) -> None:
    with browser_session(f"{request.node.name}") as session:
        page, frames = _open_report(session, report)
        assert frames, "the report shows no interactive figure"
        assert page.evaluate("typeof Plotly") == "object" or all(
            f.evaluate("typeof Plotly") == "object" for _, f, _ in frames), "plotly.js did not load"
        sections = {info["section"] for info, _, _ in frames}
        assert any("Figure 2" in s for s in sections), f"no interactive Figure 2 (iframes in sections {sections})"
        # Each figure the report embeds, opened as its own page at a size that shows all of it
        # (the report links each as "open interactive figure"): every data point is on screen.
        n_points = 0
        for info, frame, _ in frames:
            for k, p in enumerate(plots(frame)):
                fig_page = session.new_page(viewport=(int(p["width"]) + 80, int(p["height"]) + 80))
                fig_page.goto(info["src"], wait_until="load")
                wait_for_plots(fig_page)
                fig_page.wait_for_timeout(300)  # WebGL draws on the next animation frames
                total, problems = undrawn_points(fig_page, k)
                if problems:  # a slow frame: one more look before calling it undrawn
                    fig_page.wait_for_timeout(1500)
                    total, problems = undrawn_points(fig_page, k)
                assert not problems, f"{info['src']}:\n  " + "\n  ".join(problems)
                n_points += total
                fig_page.close()
        assert n_points > 0
        session.assert_clean()


@pytest.mark.slow
def test_report_figure2_hover_shows_the_patch(report: Path, request: pytest.FixtureRequest) -> None:
    with browser_session(f"{request.node.name}") as session:
        page, frames = _open_report(session, report)
        fig2 = [(info, f, el) for info, f, el in frames if "Figure 2" in info["section"]]
        assert fig2, f"no interactive figure in the report's Figure 2 section ({[i['section'] for i, _, _ in frames]})"
        info, frame, el = fig2[0]
        el.scroll_into_view_if_needed()
        box = el.bounding_box()
        p = plots(frame)[0]
        pts = [pt for t in p["traces"] for pt in t["points"]]
        assert pts, "Figure 2 has no points"
        shown_before = _visible_images(frame)
        # A point the user can reach inside the iframe's visible area (page coordinates).
        gx, gy = frame.evaluate("() => { const r = document.querySelector('.js-plotly-plot').getBoundingClientRect();"
                                " return [r.x, r.y]; }")
        reachable = [(box["x"] + gx + x, box["y"] + gy + y) for x, y in pts
                     if 5 < gx + x < box["width"] - 5 and 5 < gy + y < box["height"] - 5]
        assert reachable, "no Figure 2 point is inside the visible part of its iframe"
        shown = []
        for x, y in reachable[:: max(1, len(reachable) // 5)][:5]:
            page.mouse.move(x - 30, y - 30)
            page.mouse.move(x, y, steps=4)
            for _ in range(20):
                shown = [s for s in _visible_images(frame) if s not in shown_before]
                if shown:
                    break
                page.wait_for_timeout(100)
            if shown:
                break
        assert shown, "hovering Figure 2 points showed no patch thumbnail"
        assert all(s["src"].startswith("data:image/") and s["w"] >= 16 for s in shown), shown
        session.assert_clean()


def _visible_images(frame) -> list[dict]:
    return frame.evaluate("""() => Array.from(document.querySelectorAll('img')).filter(i => {
        const r = i.getBoundingClientRect(), s = getComputedStyle(i);
        return i.complete && i.naturalWidth > 0 && r.width > 0 && r.height > 0 && s.display !== 'none'
               && s.visibility !== 'hidden'; })
        .map(i => ({src: i.src.slice(0, 40), w: i.getBoundingClientRect().width}))""")


def test_browser_checks_catch_undrawn_points_and_outside_requests(tmp_path: Path) -> None:
    """The checks above can fail: a hidden trace is reported point by point, a web request is caught."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Scattergl(x=[0, 1, 2, 3], y=[0, 1, 0, 1], mode="markers", name="gl"),
                     go.Scatter(x=[0, 1, 2], y=[1, 0, 1], mode="markers", name="svg")])
    fig.update_layout(width=500, height=400, template="plotly_white")
    page_path = tmp_path / "fig.html"
    fig.write_html(page_path, include_plotlyjs="directory")
    with browser_session("browser_checks_selftest") as session:
        page = session.new_page(viewport=(600, 500))
        page.goto(page_path.as_uri(), wait_until="load")
        wait_for_plots(page)
        page.wait_for_timeout(300)
        assert undrawn_points(page) == (7, [])
        page.evaluate("() => Plotly.restyle(document.querySelector('.js-plotly-plot'), {'marker.opacity': 0}, [0])")
        page.wait_for_timeout(500)
        total, problems = undrawn_points(page)
        assert total == 7 and len(problems) == 1, problems
        assert "'gl' (scattergl): 4 of 4 points not drawn" in problems[0], problems
        session.assert_clean()
        page.set_content("<img src='https://example.invalid/x.png'><img src='data:image/png;base64,iVBORw0KGgo='>")
        assert session.log.outside_requests == ["https://example.invalid/x.png"]


def test_missing_chromium_skips_locally_and_fails_under_ci(monkeypatch, tmp_path: Path) -> None:
    from _browser import CHROMIUM_ENV, chromium_executable

    monkeypatch.setenv(CHROMIUM_ENV, str(tmp_path / "no-such-chromium"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-chromium"):
        chromium_executable()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        chromium_executable()
