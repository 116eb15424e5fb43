"""The web page in real headless Chromium: type, click, read the translation, see the heatmap."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_page_translates_and_draws_the_heatmap(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: run setup.sh"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(server + "/")
        page.fill("#source", "twenty-one thousand four")
        page.click("#translate")
        page.wait_for_selector("#heatmap[data-drawn]", timeout=30_000)
        translation = page.inner_text("#translation")
        assert translation and translation != "…"
        shape = page.get_attribute("#heatmap", "data-drawn")
        rows, cols = map(int, shape.split("x"))
        assert rows >= 2 and cols >= 2
        coloured = page.evaluate("""() => {
            const c = document.getElementById('heatmap'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
                const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
                if (hi - lo > 60) n++;  // coloured, unlike the white background and grey labels
            }
            return n; }""")
        assert coloured > rows * cols * 400  # every cell painted (28 x 28 pixels each)
        assert "parameters" in page.inner_text("#model")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000
