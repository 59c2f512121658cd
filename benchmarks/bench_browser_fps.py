"""Frames per second of the live toolbox with the browser's (fake) webcam, as a user sees it.

    python benchmarks/bench_browser_fps.py [--seconds 20] [--layer blocks.5] [--repo PATH]

Starts ``python -m deepvis serve`` (of this checkout, or of ``--repo``'s ``src``, to compare two versions) on a free
loopback port, opens it in headless Debian Chromium with a fake webcam (``--use-fake-device-for-media-stream``),
switches to the camera (key ``c``), enters the unit grid of a layer with the backward pane on, and reads the FPS
the page itself shows in its status line, averaged over the last ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repo", default=str(ROOT), help="the checkout whose src/ is served (default this one)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(args.repo) / "src")}
    server = subprocess.Popen([sys.executable, "-m", "deepvis", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        if "open http" not in line:
            raise RuntimeError(f"deepvis serve did not start: {line}")
        time.sleep(1.0)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("body[data-busy='0']", state="attached", timeout=120_000)
            page.keyboard.press("k")  # into the unit grid of the first layer: the backward pane shows
            page.keyboard.press("c")  # the camera
            time.sleep(5.0)  # warm up
            readings = []
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                match = re.search(r"FPS: ([0-9.]+)", page.inner_text("#status-text"))
                if match:
                    readings.append(float(match.group(1)))
                time.sleep(1.0)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    if not readings:
        print("no FPS reading: the camera did not start")
        return 1
    print(f"{args.repo}: {sum(readings) / len(readings):.2f} frames per second (mean of {len(readings)} readings, "
          f"min {min(readings):.2f}, max {max(readings):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
