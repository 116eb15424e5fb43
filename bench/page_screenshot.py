"""Screenshot of the web page (`aiayn serve`) in headless Chromium, for the README.

    .venv/bin/python bench/page_screenshot.py --checkpoint bench/out/m30k_small --out docs/page.png
"""
from __future__ import annotations

import argparse
import shutil

from playwright.sync_api import sync_playwright

from aiayn.serving.launch import start_server

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--sentence", default="Ein Mann schläft in einem grünen Raum auf einem Sofa.")
    ap.add_argument("--out", default="docs/page.png")
    a = ap.parse_args()
    server, url = start_server(a.checkpoint)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 900, "height": 800})
            page.goto(url + "/")
            page.fill("#source", a.sentence)
            page.click("#translate")
            page.wait_for_selector("#heatmap[data-drawn]", timeout=60_000)
            page.screenshot(path=a.out, full_page=True)
            print(f"{a.sentence} -> {page.inner_text('#translation')}\nwrote {a.out}")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
