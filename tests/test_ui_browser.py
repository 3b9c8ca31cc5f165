"""What a reviewer sees in the MLflow UI, checked in a real browser (Chromium, Playwright).

A store with an Iris run and a 2×2 sweep, made by the installed ``numgrad``; served by
``numgrad-ui`` on a free 127.0.0.1 port; Debian's ``chromium`` (``/usr/bin/chromium``)
driven by the ``playwright`` package (no browser download). Screenshots go to the
repository's ``outputs/ui-screens/`` for a person to look at.

Where Chromium or Playwright is missing the tests are skipped, unless
``NUMGRAD_REQUIRE_BROWSER=1`` (``.ci/run`` sets it, after installing ``chromium``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from numgrad.tracking import pages
from tests.conftest import Workdir, answers, free_port, numgrad_env, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCREENS = ROOT / "outputs" / "ui-screens"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 30_000  # the UI renders in 1-3 s; a loaded 2-core machine needs more
ML = "workflowType=machine_learning"
CURVES = ("loss", "grad_norm", "accuracy", "grad_rel_error")
FIRST_SCREEN = 9  # charts drawn in a 1400×1000 viewport: three rows of three
# A fresh browser profile opens the "MLflow Assistant" panel over a third of every page;
# these are the keys closing it leaves in localStorage.
NO_ASSISTANT = (
    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
    "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
)


def _playwright():
    """Playwright's sync API, or a skip (a failure where the browser is required)."""
    required = os.environ.get("NUMGRAD_REQUIRE_BROWSER") == "1"
    why = None
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} is missing: apt-get install chromium"
    try:
        from playwright import sync_api
    except ImportError:
        why = why or "the playwright package is missing: pip install -e '.[test]'"
    if why:
        pytest.fail(why) if required else pytest.skip(why)
    return sync_api


@dataclass
class Store:
    """The reviewed store: its experiment, the Iris run, the sweep's parent and children."""

    url: str  # the experiment's page, as numgrad-ui printed it
    base: str
    experiment: str
    single: object
    parent: object
    children: list


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Make the store with ``numgrad``, serve it with ``numgrad-ui``; stop it afterwards."""
    _playwright()  # skip before spending a minute on the store
    work = Workdir(tmp_path_factory.mktemp("reviewed"))
    # All 150 samples for training: one dataset input, the page's "iris (150 samples)".
    work.run("data=iris", "data.test_fraction=0", "optimizer.steps=60", "gradient.check=true")
    work.run("optimizer.lr=0.1,1.0", "gradient.h=1e-2,1e-4", "data=blobs", "optimizer.steps=20",
             multirun=True)  # fmt: skip
    client = MlflowClient(work.uri)
    experiment = client.get_experiment_by_name("numgrad").experiment_id
    runs = client.search_runs([experiment])
    parent = next(r for r in runs if r.data.tags.get("numgrad.kind") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    (single,) = [r for r in runs if r is not parent and r not in children]
    port = free_port()
    ui = subprocess.Popen(
        [shutil.which("numgrad-ui") or "numgrad-ui", "--port", str(port)], cwd=work.path,
        env=numgrad_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        url = ui.stdout.readline().rsplit(": ", 1)[-1].strip()
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{base}/health") or ui.poll() is not None, timeout=120)
        assert ui.poll() is None, "numgrad-ui exited"
        yield Store(url, base, experiment, single, parent, children)
    finally:
        ui.terminate()  # numgrad-ui stops the server's process group
        ui.wait(timeout=60)
        ui.stdout.close()


@pytest.fixture(scope="module")
def browser(served: Store):
    sync_api = _playwright()
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(NO_ASSISTANT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        yield page
    finally:
        context.close()


def shot(page, name: str) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"{name}.png"))


def cell(page, run_id: str, column: str):
    """A runs-table cell (ag-grid: rows carry the run id, cells the column's id)."""
    return page.locator(
        f'[role=row][row-id="{run_id}"] [role=gridcell][col-id="attributes.`{column}`"]'
    )


def table_rows(page) -> list[dict[str, str]]:
    """The rows of the page's table as {column header: cell text}."""
    return page.evaluate(
        """() => {
            const table = document.querySelector('[role=table], table');
            const head = [...table.querySelectorAll('[role=columnheader], th')]
                .map(h => h.innerText.trim());
            return [...table.querySelectorAll('[role=row]')].slice(1).map(row =>
                Object.fromEntries([...row.querySelectorAll('[role=cell], td')]
                    .map((c, i) => [head[i], c.innerText.trim()])));
        }"""
    )


def chart_titles(page) -> list[str]:
    """The titles of the charts drawn on the page, in drawing (DOM) order."""
    return page.evaluate("() => [...document.querySelectorAll('main h4')].map(e => e.innerText)")


# ------------------------------------------------------------------------ the views


def test_the_printed_page_lists_the_runs_with_their_dataset_and_model(served, page):
    from playwright.sync_api import expect

    assert served.url == f"{served.base}/#/experiments/{served.experiment}?{ML}"
    page.goto(served.url, wait_until="load")
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name=served.single.info.run_name, exact=True)).to_be_visible()
    parent = served.parent.info.run_id
    # The children are folded under their parent: unfold them.
    page.locator(
        f'[role=row][row-id="{parent}"] [col-id="attributes.`Run Name`"] button'
    ).first.click()
    for run in [served.single, *served.children]:
        (given,) = run.inputs.dataset_inputs
        dataset = cell(page, run.info.run_id, "Dataset")
        expect(dataset).to_contain_text(f"{given.dataset.name} ({given.dataset.digest})")
        expect(dataset).to_contain_text(re.compile("training", re.I))  # the context badge
        model = cell(page, run.info.run_id, "Models").get_by_role("link")
        expect(model).to_have_text("simplenet")
        expect(model).to_have_attribute("href", re.compile(r"/models/m-[0-9a-f]+"))
    expect(cell(page, served.single.info.run_id, "Dataset")).to_contain_text("iris (")
    shot(page, "1_runs_table")


def test_a_runs_model_metrics_tab_draws_the_curves_first(served, page):
    from playwright.sync_api import expect

    run = served.single
    page.goto(f"{served.base}/#/experiments/{served.experiment}/runs/{run.info.run_id}"
              f"/model-metrics?{ML}", wait_until="load")  # fmt: skip
    expect(page.get_by_role("tab", name="Model metrics")).to_have_attribute("aria-selected", "true")
    loss = page.get_by_role("heading", name="loss", exact=True, level=4)
    card = page.locator('[data-testid="experiment-view-compare-runs-card"]').filter(has=loss)
    expect(card.locator(".js-plotly-plot")).to_be_visible()  # the loss curve is drawn
    titles = chart_titles(page)
    assert "loss" in titles[:FIRST_SCREEN], titles
    first_weight = next((i for i, t in enumerate(titles) if "W_final" in t), len(titles))
    assert all(titles.index(c) < first_weight for c in CURVES), titles
    shot(page, "2_run_model_metrics")


def test_the_final_values_compare_as_bars_across_runs(served, page):
    from playwright.sync_api import expect

    page.goto(f"{served.base}/#/experiments/{served.experiment}/runs?{ML}&compareRunsMode=CHART",
              wait_until="load")  # fmt: skip
    final = page.locator('[data-testid="experiment-view-compare-runs-card"]').filter(
        has=page.get_by_role("heading", name="final_loss", exact=True)
    )
    expect(final.locator(".barlayer .trace").first).to_be_attached()  # a bar chart, not a dot
    shot(page, "3_experiment_chart_view")


def test_a_runs_overview_shows_its_description_dataset_and_model(served, page):
    from playwright.sync_api import expect

    run = served.single
    page.goto(f"{served.base}/#/experiments/{served.experiment}/runs/{run.info.run_id}?{ML}",
              wait_until="load")  # fmt: skip
    expect(page.get_by_role("heading", name=run.info.run_name, level=2)).to_be_visible()
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("Gradient descent on iris (150 samples) with a 4×3 SimpleNet")
    expect(page.get_by_text(note, exact=True)).to_be_visible()
    expect(page.get_by_text("No description")).to_have_count(0)
    (given,) = run.inputs.dataset_inputs
    expect(page.get_by_role("button", name=f"iris ({given.dataset.digest})")).to_be_visible()
    expect(page.get_by_role("heading", name="Logged models (1)", level=4)).to_be_visible()
    expect(page.get_by_role("link", name="simplenet").first).to_be_visible()
    shot(page, "4_run_overview")  # docs/run-page.png is made from this one


def test_the_sweep_parents_description_table_and_figures_open(served, page):
    from playwright.sync_api import expect

    parent = served.parent
    run_page = f"{served.base}/#/experiments/{served.experiment}/runs/{parent.info.run_id}"
    page.goto(f"{run_page}?{ML}", wait_until="load")
    best = min(served.children, key=lambda c: c.data.metrics["final_loss"])
    expect(page.get_by_text(f"Best: {best.info.run_name}")).to_be_visible()
    shot(page, "5_sweep_parent_overview")
    page.goto(f"{run_page}/artifacts?{ML}", wait_until="load")
    page.get_by_text("sweep_summary.json", exact=True).click()
    expect(page.get_by_role("checkbox", name="View as table")).to_be_checked()
    table = page.get_by_role("table")
    expect(table.get_by_role("columnheader", name=re.compile("^final_loss"))).to_be_visible()
    expect(table.get_by_role("row")).to_have_count(1 + len(served.children))
    shown = {row["run_id"]: row for row in table_rows(page)}
    assert set(shown) == {c.info.run_id for c in served.children}
    for child in served.children:  # every cell filled, the swept values too
        row = shown[child.info.run_id]
        assert row["run_name"] == child.info.run_name and row["status"] == "FINISHED"
        assert float(row["optimizer/lr"]) == float(child.data.params["optimizer.lr"])
        assert float(row["gradient/h"]) == float(child.data.params["gradient.h"])
        assert float(row["final_loss"]) == pytest.approx(child.data.metrics["final_loss"])
    shot(page, "6_sweep_summary_table")
    page.get_by_text("figures", exact=True).click()
    figure = "figures/final_loss_vs_optimizer.lr.png"
    page.get_by_text(figure.split("/")[1], exact=True).click()
    expect(page.get_by_role("img", name=figure)).to_be_visible()
    page.wait_for_function(
        "name => [...document.images].some(i => i.alt === name && i.naturalWidth > 0)", arg=figure
    )  # the PNG decoded
    shot(page, "7_sweep_figure")


def test_the_experiments_models_tab_lists_every_model(served, page):
    from playwright.sync_api import expect

    page.goto(f"{served.base}/#/experiments/{served.experiment}/models?{ML}", wait_until="load")
    links = page.get_by_role("link", name="simplenet")
    expect(links).to_have_count(1 + len(served.children))
    shot(page, "8_experiment_models")


def test_the_url_a_run_and_a_sweep_end_with_opens_the_runs_page(served, page, tmp_path):
    from playwright.sync_api import expect

    # numgrad-ui's server is a tracking server too: runs logged to it end with a URL on
    # it, opened here as printed. Their own experiment leaves the others' counts alone.
    work = Workdir(tmp_path)
    logged = (f"tracking.uri={served.base}", "tracking.experiment=printed", "optimizer.steps=5")
    run = work.run(*logged).stdout.splitlines()[-1]  # the URL ends the run's last line
    sweep = work.run(*logged, "optimizer.lr=0.1,1.0", multirun=True).stdout.splitlines()
    best = next(line for line in sweep if line.startswith("numgrad: best job "))
    client = MlflowClient(served.base)
    experiment = client.get_experiment_by_name("printed").experiment_id
    runs = client.search_runs([experiment])
    single = next(r for r in runs if r.info.run_name == "steps=5")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    child = min(children, key=lambda r: r.data.metrics["final_loss"])
    for line, shown in ((run, single), (best, child)):
        url = line.rsplit("page: ", 1)[1]
        assert url == f"{served.base}/#/experiments/{experiment}/runs/{shown.info.run_id}?{ML}"
        page.goto(url, wait_until="load")
        expect(page.get_by_role("heading", name=shown.info.run_name, level=2)).to_be_visible()
        expect(page.get_by_role("tab", name="Overview")).to_have_attribute("aria-selected", "true")
    shot(page, "9_printed_best_child")
    # A local store's run names numgrad-ui's port; where a UI answers there, no hint.
    port = int(served.base.rsplit(":", 1)[1])
    assert pages.serve_hint(f"sqlite:///{work.store}", port) is None
