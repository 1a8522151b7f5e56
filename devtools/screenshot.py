"""Make the README's screenshots of the web console from a real demo run.

    python3 devtools/screenshot.py            # writes docs/images/console-run.png and console-runs.png

It runs `manage-runs demo`'s embedded system (database, ingest app with the console, worker,
dispatcher), waits for the run to reach review, signs in to the console with the demo's operator
token in Debian's Chromium (through Playwright) and saves the pages. Nothing is staged: what the
picture shows is what the demo run produced.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.browser import chromium  # noqa: E402
from ops.demo import run_demo  # noqa: E402
from orchestrator.settings import Settings  # noqa: E402

OUT = ROOT / "docs" / "images"


def _shoot(settings: Settings, run_id: str, token: str | None) -> None:
    assert token is not None, "the demo makes its console's operator token when OPERATOR_TOKEN is unset"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        page.goto(f"{settings.ingest_url}/signin?next=/runs/{run_id}")
        page.fill("#token", token)
        page.click("button:has-text('Sign in')")
        page.wait_for_selector("#part-charts svg polyline")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(OUT / "console-run.png"), full_page=False)
        page.goto(f"{settings.ingest_url}/")
        page.screenshot(path=str(OUT / "console-runs.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 420})


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("MONGODB_URL", "INGEST_URL", "MINIO_ENDPOINT", "OPERATOR_TOKEN"):
        os.environ.pop(name, None)  # the embedded system, whatever this shell has configured
    with tempfile.TemporaryDirectory() as tmp:
        run, _ = run_demo(title=None, idea=None, seed=0, timeout=300, output=tmp, as_json=False,
                          console=Console(stderr=True), serve=_shoot)
    print(f"{run['status']}: wrote {OUT / 'console-run.png'} and {OUT / 'console-runs.png'}")


if __name__ == "__main__":
    main()
