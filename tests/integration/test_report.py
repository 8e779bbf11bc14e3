"""piebench report: a self-contained page that renders in headless Chromium with every image loaded.

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``; .ci/run
installs them); the test is skipped, saying why, only when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from piebench.cli import cli

CHROMIUM = Path("/usr/bin/chromium")
FAST = ["--steps", "3", "--set", "eval.max_photos=3", "--set", "train.threads=1", "--quiet"]


def invoke(args: list[str]) -> str:
    res = CliRunner().invoke(cli, args, catch_exceptions=True)
    assert res.exit_code == 0, res.output + (f"\n{res.exception!r}" if res.exception else "")
    return res.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    with threadpool_limits(1):
        invoke(["run", "--encoder", "lab-stats", "--enhancer", "csrnet", "--runs-dir", str(root), *FAST])
        invoke(["run", "--encoder", "lab-stats", "--enhancer", "transfer", "--runs-dir", str(root), *FAST])
        invoke(["run", "--encoder", "lab-stats", "--enhancer", "identity", "--runs-dir", str(root), *FAST])
    return root


def _run_dir(root: Path, pair: str) -> Path:
    return next(p.parent for p in root.rglob("record.json") if p.parent.parent.name == pair)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed (/usr/bin/chromium absent): apt-get install -y chromium "
                    "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="piebench-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _load(browser, page: Path) -> dict:
    browser.get(page.resolve().as_uri())
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all(Array.from(document.images).map(img => img.complete ? Promise.resolve() :
            new Promise(r => { img.onload = r; img.onerror = r; }))).then(() => done());""")
    return browser.execute_script("""
        return {
          tables: document.querySelectorAll('table.leaderboard').length,
          leaderRows: document.querySelectorAll('table.leaderboard tbody tr').length,
          imgs: Array.from(document.images).map(i => ({w: i.naturalWidth, src: i.src.slice(0, 22), alt: i.alt})),
          alarms: document.querySelectorAll('.alarm').length,
          gridImgs: document.querySelectorAll('table.grid img').length,
          text: document.body.innerText,
        };""")


def test_run_report_renders_with_every_image(runs, browser, tmp_path):
    with threadpool_limits(1):
        invoke(["report", str(_run_dir(runs, "lab-stats+csrnet")), "--runs-dir", str(runs), "--out", str(tmp_path),
                "--photos", "2", "--users", "4"])
    html = (tmp_path / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html), "the page must not load external assets"
    page = _load(browser, tmp_path / "index.html")
    assert page["tables"] == 1 and page["leaderRows"] == 3  # every run of the protocol is ranked
    assert page["imgs"] and all(i["w"] > 0 for i in page["imgs"]), page["imgs"]
    assert all(i["src"].startswith("data:image/png") for i in page["imgs"])
    alts = [i["alt"] for i in page["imgs"]]
    assert "control_heatmap".replace("_", " ") in alts and "tsne" in alts and "training curves" in alts
    # 2 photos x (input + 4 users x (target + output))
    assert page["gridImgs"] == 2 * (1 + 4 * 2)
    assert "lab-stats + csrnet" in page["text"] and "weights from ckpt-" in page["text"]


def test_protocol_report_covers_every_configuration_and_shows_alarms(runs, browser, tmp_path):
    with threadpool_limits(1):
        invoke(["report", "--protocol", "smoke", "--runs-dir", str(runs), "--out", str(tmp_path), "--photos", "1",
                "--users", "2"])
    page = _load(browser, tmp_path / "index.html")
    assert page["imgs"] and all(i["w"] > 0 for i in page["imgs"])
    assert "lab-stats + csrnet, seed 0" in page["text"] and "lab-stats + transfer, seed 0" in page["text"]
    assert page["gridImgs"] == 3 * (1 + 2 * 2)
    # identity ignores the preference: the page says so plainly, for seen and unseen users
    assert page["alarms"] == sum(len(json.loads(p.read_text())["metrics"].get("alarms", []))
                                 for p in runs.rglob("record.json"))
    assert page["alarms"] >= 2 and "ignores the preference" in page["text"]


def test_report_refuses_a_directory_that_is_not_a_run(tmp_path):
    res = CliRunner().invoke(cli, ["report", str(tmp_path), "--out", str(tmp_path / "out")])
    assert res.exit_code != 0 and "not a run directory" in str(res.exception)
