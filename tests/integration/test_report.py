"""piebench report: a self-contained page that renders in headless Chromium with every image loaded.

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``; .ci/run
installs them). Without them the browser tests are skipped, saying why, on a developer's machine,
and FAIL on CI (``CI=true``), where a missing browser must not pass silently.

The page is screenshotted; each figure must be shown at no less than its natural size, so that
its smallest text (recorded in the PNG by :mod:`piebench.figures`) is at least 10 px on screen,
and the before/after photos at their intended width.
"""

from __future__ import annotations

import json
import os
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
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not CHROMIUM.exists() or not Path(driver_path).exists():
        why = ("headless Chromium or its driver is not installed (/usr/bin/chromium, chromedriver): "
               "apt-get install -y chromium chromium-driver")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="piebench-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
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
          boundsRows: Array.from(document.querySelectorAll('table.bounds tbody tr')).map(r => r.innerText),
          imgs: Array.from(document.images).map(i => ({w: i.naturalWidth, src: i.src.slice(0, 22), alt: i.alt})),
          alarms: document.querySelectorAll('.alarm').length,
          gridImgs: document.querySelectorAll('table.grid img').length,
          plots: Array.from(document.querySelectorAll('figure.plot img')).map(i => ({alt: i.alt,
              natural: i.naturalWidth, shown: i.clientWidth,
              minText: parseFloat(i.dataset.minTextPx)})),
          beforeAfter: Array.from(document.querySelectorAll('img.ba')).map(i => ({alt: i.alt,
              natural: i.naturalWidth, shown: i.clientWidth})),
          text: document.body.innerText,
        };""")


def _screenshot(browser, path: Path) -> None:
    """The whole page as one PNG at a 1400 px wide window."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(int(height) + 200, 16000))
    browser.save_screenshot(str(path))
    browser.set_window_size(1400, 1000)


def _check_readable(page: dict) -> list[tuple[str, float, float]]:
    """Every figure at >= its natural size with text >= 10 px on screen; (alt, shown px, text px)."""
    sizes = []
    for p in page["plots"]:
        scale = p["shown"] / p["natural"]
        assert scale >= 0.999, f"{p['alt']} shown at {p['shown']:.0f} px of {p['natural']} px"
        assert p["minText"] * scale >= 10, f"{p['alt']}: smallest text {p['minText'] * scale:.1f} px on screen"
        sizes.append((p["alt"], p["shown"], p["minText"] * scale))
    return sizes


def test_run_report_renders_with_every_image(runs, browser, tmp_path):
    with threadpool_limits(1):
        invoke(["report", str(_run_dir(runs, "lab-stats+csrnet")), "--runs-dir", str(runs), "--out", str(tmp_path),
                "--photos", "2", "--users", "4"])
    html = (tmp_path / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html), "the page must not load external assets"
    page = _load(browser, tmp_path / "index.html")
    # csrnet is ranked; transfer and identity are baselines (the leaderboard's bounds section), never ranked
    assert page["tables"] == 1 and page["leaderRows"] == 1
    bounds = page["boundsRows"]  # shown for reference under the ranked table
    assert len(bounds) == 2 and all("baseline" in r for r in bounds), bounds
    assert page["imgs"] and all(i["w"] > 0 for i in page["imgs"]), page["imgs"]
    assert all(i["src"].startswith("data:image/png") for i in page["imgs"])
    alts = [i["alt"] for i in page["imgs"]]
    assert "control_heatmap".replace("_", " ") in alts and "tsne" in alts and "training curves" in alts
    # 2 photos x (input + 4 users x (target + output))
    assert page["gridImgs"] == 2 * (1 + 4 * 2)
    assert "lab-stats + csrnet" in page["text"] and "weights from ckpt-" in page["text"]
    # readable figures: heat map, t-SNE and curves at their natural size, text >= 10 px on screen
    sizes = _check_readable(page)
    assert {a for a, _, _ in sizes} >= {"control heatmap", "tsne", "training curves"}
    assert all(shown >= 480 for _, shown, _ in sizes), sizes
    # before/after per user: input | the user's target | the output, each 300 px wide
    ba = page["beforeAfter"]
    assert len(ba) == 3 * 4 and all(b["natural"] > 0 and abs(b["shown"] - 300) < 1 for b in ba), ba
    assert [b["alt"].split(":")[0].split(" ")[0] for b in ba[:3]] == ["before", "target", "after"]
    _screenshot(browser, tmp_path / "report.png")
    from PIL import Image

    shot = Image.open(tmp_path / "report.png")
    assert shot.size[0] >= 1400 and shot.size[1] > 2000  # the whole page, not the first screen
    print("\n[report figures] " + ", ".join(f"{a}: {w:.0f} px wide, text >= {t:.1f} px" for a, w, t in sizes))


def test_protocol_report_covers_every_configuration_and_shows_alarms(runs, browser, tmp_path):
    with threadpool_limits(1):
        invoke(["report", "--protocol", "smoke", "--runs-dir", str(runs), "--out", str(tmp_path), "--photos", "1",
                "--users", "2"])
    page = _load(browser, tmp_path / "index.html")
    assert page["imgs"] and all(i["w"] > 0 for i in page["imgs"])
    _check_readable(page)
    assert "lab-stats + csrnet, seed 0" in page["text"] and "lab-stats + transfer, seed 0" in page["text"]
    assert page["gridImgs"] == 3 * (1 + 2 * 2)
    # identity ignores the preference: the page says so plainly, for seen and unseen users
    assert page["alarms"] == sum(len(json.loads(p.read_text())["metrics"].get("alarms", []))
                                 for p in runs.rglob("record.json"))
    assert page["alarms"] >= 2 and "ignores the preference" in page["text"]


def test_report_refuses_a_directory_that_is_not_a_run(tmp_path):
    res = CliRunner().invoke(cli, ["report", str(tmp_path), "--out", str(tmp_path / "out")])
    assert res.exit_code != 0 and "not a run directory" in str(res.exception)
