"""The dashboard in a real browser, and the SFC demo held up for it to look at.

`chromium()` opens headless Chromium (Debian's ``chromium`` and
``chromium-driver``, scripts/install-deps) through selenium, with the driver
given by path so that selenium fetches nothing. `HeldDemo` runs ``pktchain
demo sfc --json --hold`` as a person does, returns its dashboard's address
once the walk-through is done and HTTP flows, and on `stop` sends SIGTERM,
which must remove everything, and hands back the exit status and the JSON.
Used by tests/netns/test_dashboard_browser.py and scripts/screenshot-dashboard.

Holds no tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from pktchain.lab import down, running_labs

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DEMO_PREFIX = "demo-sfc-"
HOLDING = re.compile(r"pktchain demo sfc: holding the demo up at (\S+)")
"""The demo's line once it holds (its walk-through done)."""
SERVING = re.compile(r"pktchain demo sfc: dashboard at (\S+)")
"""The demo's line as soon as its node serves (before the walk-through)."""

T = TypeVar("T")


def browser_missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if shutil.which(path) is None:
            return f"{path} is missing (Debian package {package}; scripts/install-deps)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium driven by selenium, closed on the way out."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console
    for argument in (
        "--headless=new",
        "--no-sandbox",  # run as root, as the netns tests are
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()


def query(driver: Any, css: str, attribute: str | None = None) -> list[str | None]:
    """The text (or `attribute`) of every element matching `css`, read in one go by the
    page's own thread: the page replaces its tables each tick, and elements found in
    one call may be gone by the next."""
    found: list[str | None] = driver.execute_script(
        "const [css, attribute] = arguments;"
        "return Array.from(document.querySelectorAll(css),"
        " (e) => attribute ? e.getAttribute(attribute) : e.textContent);",
        css,
        attribute,
    )
    return found


def console_errors(driver: Any) -> list[str]:
    """What the page wrote to its console at level SEVERE (its uncaught errors among it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """`probe()`'s first true value, polled until `timeout`; AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


class HeldDemo:
    """``pktchain demo sfc --json --hold`` in a child process."""

    def __init__(self, *, window: float = 1.0) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "pktchain",
            "demo",
            "sfc",
            "--json",
            "--hold",
            "--window",
            str(window),
        ]
        self.process: subprocess.Popen[str] | None = None
        self.err: list[str] = []
        self.out: list[str] = []
        self._held = threading.Event()
        self.url = ""
        self._readers: list[threading.Thread] = []
        self._until = HOLDING
        self.lab = ""
        """The demo's lab (its node's name, as the dashboard says it)."""

    def start(self, timeout: float = 240.0, *, until: re.Pattern[str] = HOLDING) -> str:
        """Run the demo until it holds (or prints the line `until` matches); its
        dashboard's address."""
        self._until = until
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])
        )
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        process = self.process
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_err, args=(process.stderr,), daemon=True),
            threading.Thread(target=self._read_out, args=(process.stdout,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + timeout
        while not self._held.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"the demo never said {self._until.pattern!r} "
                    f"(exit {process.returncode}):\n{self.stderr[-3000:]}"
                )
        try:
            # The node is named after the demo's lab: which lab must be gone at the end.
            snapshot = httpx.get(self.url.replace("/ui/", "/v2.0/pktchain/dashboard"), timeout=30)
            snapshot.raise_for_status()
            self.lab = str(snapshot.json()["node"])
            if not self.lab.startswith(DEMO_PREFIX):
                raise AssertionError(f"the demo's node {self.lab!r} is not named after its lab")
        except BaseException:
            self.stop()
            raise
        return self.url

    def _read_err(self, stream: Any) -> None:
        for line in stream:
            self.err.append(line)
            found = self._until.search(line)
            if found:
                self.url = found.group(1)
                self._held.set()

    def _read_out(self, stream: Any) -> None:
        for line in stream:
            self.out.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def stop(self, timeout: float = 90.0) -> tuple[int, dict[str, Any]]:
        """SIGTERM, as a person's Ctrl-C or a service manager; the exit status and the
        JSON report. A lab of the demo's left behind is removed, and reported."""
        process = self.process
        if process is None:
            return 0, {}
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in self._readers:
            reader.join(10)  # each ends with its pipe, once the demo has exited
        if self.lab and self.lab in running_labs():
            down(self.lab)
            raise AssertionError(f"the demo left its lab {self.lab} up\n{self.stderr[-3000:]}")
        text = "".join(self.out)
        try:
            report: dict[str, Any] = json.loads(text) if text else {}
        except ValueError as exc:
            raise AssertionError(f"the demo's stdout is not JSON: {text[:2000]!r}") from exc
        return process.returncode, report
