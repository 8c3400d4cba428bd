"""The report in a real browser: Debian's headless Chromium driven by playwright (no browser
download), with every network request refused, so the page must carry all it needs. The
figures must render, the table must sort and filter, and nothing may log an error.

`make test` installs chromium when it is absent. Under CI (the CI variable set) a missing
browser fails this test rather than skipping it, so a broken install is never silent."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from anyformer.report.html import write_report
from tests.report.synthetic import BY_PARAMS, MODELS, RECOMMENDED

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401  (optional test dependency: the `test` extra)
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (apt-get install -y chromium, as `make test` does)"
    return None


def require_browser() -> None:
    """Skip without the browser, except under CI, where its absence is a failure."""
    reason = _unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run under CI: {reason}")
        pytest.skip(reason)


def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run under CI.*no-chromium is absent"):
        require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-chromium is absent"):
        require_browser()


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


def _open(browser, path: Path):
    """A page with the report loaded and its figures drawn; every request that is not the
    file itself is aborted and recorded, and console/page errors are collected."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    blocked: list[str] = []
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3", timeout=20_000)
    return page, errors, blocked


def _first_column(page) -> list[str]:
    return page.eval_on_selector_all("#results tbody tr:not([hidden]) td:first-child", "tds => tds.map(t => t.textContent)")


def test_report_renders_sorts_and_filters_offline(browser, tmp_path, results, curves):
    path = write_report(tmp_path, results, curves)
    page, errors, blocked = _open(browser, path)

    # Every figure is drawn: one scatter point per trained model (the baseline is a line, not
    # a point), error bars from the intervals, and curves for every model.
    for fig in ("fig-latency", "fig-params"):
        assert page.locator(f"#{fig} .scatterlayer .point").count() == len(MODELS), fig
        assert page.locator(f"#{fig} .errorbar").count() >= len(MODELS), fig
    assert page.locator("#fig-curves .scatterlayer .trace").count() >= 2 * len(MODELS)
    assert page.locator("#fig-curves .scatterlayer .point").count() > 0
    drawn = page.eval_on_selector_all("#fig-curves .scatterlayer .js-line", "ps => ps.filter(p => (p.getAttribute('d') || '').length > 10).length")
    assert drawn >= len(MODELS) - 1  # vit+fnet logged too few training points for a line in one panel
    # Log scale only where the costs span more than a decade (parameters here, not latency).
    axis = "id => document.getElementById(id)._fullLayout.xaxis.type"
    assert page.evaluate(axis, "fig-params") == "log" and page.evaluate(axis, "fig-latency") == "linear"
    # The constraint region is shaded; the baseline, far below the models, is noted at the edge.
    assert page.locator("#fig-latency .shapelayer path").count() == 1
    assert "baseline majority class: 0.1010 (below this range)" in page.text_content("#fig-latency .annotation")

    # The table: one row per result row, in rank order; a header click sorts by that column.
    order = [r["model"] for r in results["rows"]]
    assert _first_column(page) == order
    params = page.locator("#results thead th", has_text="params").first
    params.click()
    assert _first_column(page)[: len(MODELS)] == BY_PARAMS  # the baseline has no params: last
    params.click()
    assert _first_column(page)[: len(MODELS)] == BY_PARAMS[::-1]
    page.locator("#results thead th").first.click()
    assert _first_column(page) == sorted(order, key=str.lower)

    # Typing in the filter hides the rows that do not match.
    page.fill("#filter", "tied")
    assert sorted(_first_column(page)) == sorted(m for m in MODELS if MODELS[m][6])
    assert page.inner_text("#shown") == "2 of 5 rows"
    page.fill("#filter", "")
    assert len(_first_column(page)) == len(order)

    # The verdict names the recommended model; its row carries the markers.
    assert RECOMMENDED in page.inner_text("#recommendation")
    row = page.inner_text(f'#results tr[data-model="{RECOMMENDED}"]')
    assert "recommended" in row and "tied with best" in row

    page.screenshot(path=str(tmp_path / "report.png"))
    page.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert errors == [] and blocked == []


def test_an_old_results_file_renders_too(browser, tmp_path, results, curves):
    """A results.json from before seeds and intervals: no error bars, no bands, still drawn."""
    keep = {"model", "quality", "val", "metric", "higher_is_better", "params", "params_non_embedding", "flops_per_sample",
            "latency_ms", "latency_batch", "train_step_ms", "peak_memory_bytes", "steps", "train_seconds",
            "pareto_latency", "pareto_params"}
    rows = [{k: v for k, v in r.items() if k in keep} for r in results["rows"] if not r.get("baseline")]
    path = write_report(tmp_path, {"task": "digits", "rows": rows}, {m: runs[0] for m, runs in curves.items()})
    page, errors, blocked = _open(browser, path)
    assert page.locator("#fig-latency .scatterlayer .point").count() == len(MODELS)
    assert page.locator("#fig-latency .errorbar").count() == 0
    assert "Best test accuracy" in page.inner_text("#recommendation")
    page.close()
    assert errors == [] and blocked == []
