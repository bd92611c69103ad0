"""HTML reports: a tiny run's index.html parses, every picture has alt text, every relative link
resolves, the numbers are the run's, config text is escaped; `minigen report` puts runs side by side;
and (where Chromium and chromedriver exist) a real headless browser loads every picture."""
import functools
import html.parser
import http.server
import json
import os
import shutil
import threading
import urllib.parse
import urllib.request

import pytest

from minigen.cli import main
from minigen.tools.report import REPORT, write_comparison, write_run_report
from minigen.train import TrainOptions, train

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(html.parser.HTMLParser):
    """Collects links, images and table cells, and checks that every element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.links, self.images, self.problems, self.cells = [], [], [], [], []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs.get("href"))
        if tag == "img":
            self.images.append(attrs)
        if tag in ("td", "th"):
            self.cells.append("")
            self._in_cell = True
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


def parse(path) -> Page:
    page = Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    page.close()
    assert not page.problems and not page.stack, (page.problems, page.stack)
    return page


def check_links(path, page: Page) -> None:
    """Every image has alt text; every relative src/href names a file that exists."""
    folder = os.path.dirname(path)
    for img in page.images:
        assert img.get("alt"), f"image without alt text: {img}"
    targets = [img["src"] for img in page.images] + page.links
    assert targets
    for target in targets:
        assert not urllib.parse.urlparse(target).scheme, f"not a relative link: {target}"
        assert os.path.exists(os.path.join(folder, urllib.parse.unquote(target))), f"{path}: {target} missing"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A conditional VAE trained for a few steps: samples, its figures, generation.gif and curves."""
    out = str(tmp_path_factory.mktemp("runs") / 'vae <b>&"run"')      # a path that needs escaping
    opts = TrainOptions(model="vae", out=out, dataset="mnist-5k", epochs=1, train_n=128, max_steps=6, eval_n=30,
                        n_samples=20, log_every=2, progress=False, conditional=True,
                        model_config={"hidden_dim": 16, "iw_samples": 2, "batch_size": 16, "variant": "mlp"})
    _, summary = train(opts)
    write_run_report(out)                # what `minigen train` does after training
    return out, summary


def test_a_run_report_is_well_formed_and_complete(tiny_run):
    run_dir, summary = tiny_run
    path = os.path.join(run_dir, REPORT)
    page = parse(path)
    check_links(path, page)
    srcs = {img["src"] for img in page.images}
    assert {"samples.png", "generation.gif", "loss.png", "curves.png", "interpolation.png"} <= srcs
    assert "config.json" in page.links and "metrics.jsonl" in page.links
    for name, value in summary["test"].items():           # the metrics table holds the run's numbers
        assert name in page.cells and f"{value:.4g}" in page.cells
    text = open(path, encoding="utf-8").read()
    assert '<meta name="viewport"' in text
    assert "<b>" not in text and "&lt;b&gt;" in text       # the path in the title is escaped, not markup


def test_eval_adds_its_numbers_to_the_report(tiny_run, capsys):
    run_dir, _ = tiny_run
    assert main(["eval", run_dir, "--n", "20"]) == 0
    evaluated = json.load(open(os.path.join(run_dir, "eval.json")))
    page = parse(os.path.join(run_dir, REPORT))
    assert "eval.json" in page.links and f"{evaluated['neg_elbo']:.4g}" in page.cells


def test_minigen_report_puts_runs_side_by_side(tiny_run, tmp_path, capsys):
    run_dir, summary = tiny_run
    out = tmp_path / "compare"
    assert main(["report", run_dir, run_dir, "--out", str(out)]) == 0
    path = str(out / REPORT)
    page = parse(path)
    check_links(path, page)
    assert f"{summary['test']['nll_nats']:.4g}" in page.cells
    assert main(["report", str(tmp_path), "--out", str(out)]) == 2        # not a run directory: one line
    assert "is not a minigen run directory" in capsys.readouterr().err


def test_a_report_of_a_directory_without_a_run_is_an_error(tmp_path):
    from minigen.errors import MinigenError
    with pytest.raises(MinigenError, match="not a minigen run directory"):
        write_run_report(str(tmp_path))
    with pytest.raises(MinigenError, match="at least one"):
        write_comparison([], str(tmp_path))


# --- in a real browser ---------------------------------------------------------------------------------
def _browser():
    """(chromium, chromedriver) paths, or a pytest skip saying what is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("the browser test needs Chromium and chromedriver (Debian: apt-get install chromium "
                    "chromium-driver); CI installs them")
    return chromium, driver


@pytest.fixture
def local_server(tiny_run):
    """The run's parent folder over http on 127.0.0.1 (an ephemeral port), for the browser."""
    root = os.path.dirname(tiny_run[0])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_the_report_in_headless_chromium(tiny_run, local_server, tmp_path):
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=480,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        run_dir, summary = tiny_run
        url = local_server + urllib.parse.quote(os.path.basename(run_dir)) + "/" + REPORT
        browser.set_page_load_timeout(60)
        browser.get(url)
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert len(images) >= 5
        for src, complete, width in images:
            assert complete and width > 0, f"{src} did not load in the browser"
        assert any(src == "generation.gif" for src, _, _ in images)
        links = browser.execute_script("return Array.from(document.links).map(a => a.href)")
        for link in links:
            with urllib.request.urlopen(link, timeout=30) as response:      # 127.0.0.1 only
                assert response.status == 200, link
        table = browser.find_element(By.ID, "metrics").text
        for name, value in summary["test"].items():
            assert name in table and f"{value:.4g}" in table
        # readable on a narrow screen: nothing wider than the 480 px window but scrollable tables/pre
        assert browser.execute_script("return document.documentElement.scrollWidth") <= \
            browser.execute_script("return window.innerWidth")
    finally:
        browser.quit()
