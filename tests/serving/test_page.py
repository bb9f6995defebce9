"""``GET /``, the try-it page, in a real headless browser (Playwright driving Debian's chromium):
the prediction it shows is the one ``/invocations`` answers, and a bad value shows the server's
one-line error."""

from __future__ import annotations

import shutil

import pytest
import requests

INSTALL_HINT = (
    "The browser test needs Playwright for Python and Debian's chromium: "
    "`pip install 'playwright>=1.48,<2'` (in the dev extra) and `apt-get install -y chromium` "
    "(.ci/run installs both)."
)

RECORD = {"x1": "0.5", "x2": "-1.25", "count": "20", "color": "red"}


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the module; a missing browser fails with the install hint."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright is not installed. {INSTALL_HINT}")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(f"chromium is not on PATH. {INSTALL_HINT}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, start_server):
    server = start_server()
    page = browser.new_page()
    page.goto(f"{server.url}/")
    yield server, page
    page.close()


def _fill(page, record: dict[str, str]) -> None:
    for name, value in record.items():
        page.fill(f"#f-{name}", value)
    page.click("button[type=submit]")


def _invocations(server, record: dict) -> requests.Response:
    return requests.post(
        f"{server.url}/invocations", json={"dataframe_records": [record]}, timeout=30
    )


def test_the_page_shows_the_prediction_of_invocations(page):
    server, page = page
    assert page.title() == "binary model of y"
    _fill(page, RECORD)
    page.wait_for_selector("#result h2")
    typed = {name: value if name == "color" else float(value) for name, value in RECORD.items()}
    answer = _invocations(server, typed)
    assert answer.status_code == 200, answer.text
    row = answer.json()["predictions"][0]
    assert page.inner_text("#result h2") == f"prediction: {row['prediction']}"
    bars = page.query_selector_all("#result .row")
    shown = {bar.query_selector("span").inner_text(): bar.inner_text() for bar in bars}
    assert sorted(shown) == ["no", "yes"]
    for label in shown:
        assert f"{100 * row[f'probability_{label}']:.1f}%" in shown[label]
    assert page.inner_text("#error") == ""


def test_a_value_that_is_not_a_number_shows_the_servers_one_line_error(page):
    server, page = page
    _fill(page, {**RECORD, "x1": "lots"})
    page.wait_for_function("document.getElementById('error').textContent !== ''")
    answer = _invocations(server, {"x1": "lots", "x2": -1.25, "count": 20.0, "color": "red"})
    assert answer.status_code == 400
    shown = page.inner_text("#error")
    assert shown == answer.json()["message"]
    assert "\n" not in shown and "Column 'x1' is numeric in 0% of rows but has text" in shown
    assert page.inner_text("#result") == ""
