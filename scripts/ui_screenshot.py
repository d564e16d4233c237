"""Screenshot of the MLflow runs table (headless Chromium via Playwright): a study's parent runs with the
verdict columns (Description, test macro-F1 mean and CI, minority recall, expected cost), sorted by test macro-F1.

    python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright   # not a project dependency; uses Debian's chromium
    make ui   # or: mlflow ui --backend-store-uri sqlite:///results/mlflow.db --host 127.0.0.1 --port 5055
    /tmp/pw/bin/python scripts/ui_screenshot.py "<runs page URL with searchFilter and orderByKey>" results/all/mlflow_runs.png
"""
import sys

from playwright.sync_api import sync_playwright

url, out = sys.argv[1], sys.argv[2]
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = b.new_page(viewport={"width": 2200, "height": 900})
    page.goto(url)
    page.wait_for_timeout(6000)
    page.get_by_role("button", name="Columns", exact=True).first.click()
    page.wait_for_timeout(1000)
    for key in ("Description", "test_macro_f1_mean", "test_macro_f1_ci_low", "test_macro_f1_ci_high", "test_minority_recall_mean", "test_expected_cost_mean"):
        box = page.get_by_placeholder("Search columns")
        box.fill(key)
        page.wait_for_timeout(700)
        page.get_by_text(key, exact=True).first.click()
        page.wait_for_timeout(300)
    page.keyboard.press("Escape")
    page.wait_for_timeout(800)
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.last.click()
    page.wait_for_timeout(1500)
    page.screenshot(path=out)
    b.close()
