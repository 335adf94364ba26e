"""Run a notebook the way a learner does: in JupyterLab, in a real (headless) Chromium.

nbval proves that a notebook's *kernel* side works. It cannot see what the learner sees: a
notebook that JupyterLab refuses to open, a warning printed in pink under a cell, a figure that
never renders. This module drives the real user interface instead:

    notebook_copy = copy_without_outputs(path, temp_dir)    # old outputs cannot pass the test
    with JupyterLab(temp_dir, scratch_dir) as lab, Chromium(chromium_path, scratch_dir) as browser:
        run = run_in_browser(lab, browser, notebook_copy.name, screenshot_path)
    assert run.problems() == []

Everything JupyterLab and Chromium would write (settings, workspaces, runtime files, the browser
profile) goes to temporary directories, never to $HOME or the repository, and both are stopped
by process id when the `with` block ends, whatever happened inside it.

Playwright is used as a library that speaks to an already installed Chromium (Debian's
`chromium` package). We never call `playwright install`: it downloads a browser, and the course
must be testable offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from grokfl_helpers.processes import ProcessId, children_of, descendants_of, stop_processes

# Where Debian's `apt-get install chromium` puts the browser; other names are looked up on PATH.
CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_NAMES = ("chromium", "chromium-browser")

# Flags for a quiet, offline, headless Chromium. --no-sandbox because the tests may run as root
# (Chromium refuses to start its sandbox as root); --disable-dev-shm-usage because containers
# often give /dev/shm only 64 MB, which makes Chromium crash while rendering.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--no-proxy-server",  # we only ever talk to 127.0.0.1
]

# JupyterLab user settings for the test: never save the notebook behind our back; render every
# cell, also those scrolled out of view (by default JupyterLab may skip them); and no pop-ups
# or network calls for news, updates or the extension manager.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"checkForUpdates": False, "fetchNews": "false"},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
}

SERVER_START_TIMEOUT = 120  # seconds; JupyterLab usually answers within 5-10 s
PAGE_TIMEOUT = 120  # seconds for the notebook page to load and its kernel to become idle
RUN_TIMEOUT = 900  # seconds for "Run All Cells" to finish; notebook 03 takes about a minute


class BrowserTestError(RuntimeError):
    """The machinery itself failed (a server that does not start, a page that never loads)."""


def find_chromium() -> str | None:
    """The path of an installed Chromium, or None when there is none on this machine."""
    if os.access(CHROMIUM_PATH, os.X_OK):
        return CHROMIUM_PATH
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def copy_without_outputs(notebook_path: Path, destination_dir: Path) -> Path:
    """Copy a notebook into destination_dir with every output and execution count removed.

    The test must see outputs that the browser produced, not the ones stored in the file."""
    notebook_path = Path(notebook_path)
    if not notebook_path.is_file():
        raise FileNotFoundError(f"notebook to test not found: {notebook_path}")
    notebook = nbformat.read(notebook_path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    destination = Path(destination_dir) / notebook_path.name
    nbformat.write(notebook, destination)
    return destination


# --------------------------------------------------------------------------------------------
# Processes. We stop only what we started, by process id and start time (a pid is reused once its
# process has ended, and several people share this machine): grokfl_helpers.processes, which the
# Flower deployment uses too.

_children_of = children_of
_descendants_of = descendants_of
_stop_processes = stop_processes


# An HTTP_PROXY in the environment must not catch our requests to 127.0.0.1.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 serving root_dir, with everything it writes in scratch_dir.

    The environment is the test run's own (so GROKFL_DATA and the virtualenv carry over), with
    Jupyter's config, data, runtime, settings and workspace directories moved to scratch_dir."""

    def __init__(self, root_dir: Path, scratch_dir: Path):
        self.root_dir = Path(root_dir)
        self.scratch_dir = Path(scratch_dir) / "jupyter"
        self.port = _free_port()
        self.token = uuid.uuid4().hex
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.scratch_dir / "jupyterlab.log"
        self.process: subprocess.Popen | None = None
        self.log_file = None
        self._kernels: set[ProcessId] = set()

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for variable, name in [
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
            ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
            ("IPYTHONDIR", "ipython"),
            ("MPLCONFIGDIR", "matplotlib"),
        ]:
            env[variable] = str(self.scratch_dir / name)
        env["JUPYTER_PLATFORM_DIRS"] = "1"  # no warning about the old directory layout
        return env

    def _write_settings(self, settings_dir: Path) -> None:
        for plugin, values in LAB_SETTINGS.items():
            path = settings_dir / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values, indent=2))

    def start(self) -> "JupyterLab":
        env = self.environment()
        for variable in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                         "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR", "MPLCONFIGDIR"):
            Path(env[variable]).mkdir(parents=True, exist_ok=True)
        self._write_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
        # A matplotlib that builds its font cache for more than 5 s says so on stderr, and the
        # first plot in the notebook would show that warning: build the cache now, quietly.
        warm_up = subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"],
                                 env=env, capture_output=True, text=True, timeout=300)
        if warm_up.returncode != 0:
            raise BrowserTestError(f"could not import matplotlib to build its font cache:\n"
                                   f"{warm_up.stderr[-2000:]}")
        command = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.open_browser=False",
        ]
        if os.geteuid() == 0:
            command.append("--allow-root")  # JupyterLab refuses to run as root without it
        self.log_file = open(self.log_path, "w")
        self.process = subprocess.Popen(
            command, cwd=self.root_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise BrowserTestError(
                    f"JupyterLab exited with code {self.process.returncode} before it answered."
                    f"\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                self._check_settings()
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise BrowserTestError(
                    f"JupyterLab did not answer on {self.base_url} within {SERVER_START_TIMEOUT} s."
                    f"\n{self.log_tail()}")
            time.sleep(0.25)

    def _check_settings(self) -> None:
        """Fail loudly if JupyterLab ignored our settings (e.g. a new settings layout): with
        autosave on, the test could rewrite the notebook it tests."""
        for plugin, expected in LAB_SETTINGS.items():
            plugin_id = plugin.replace("/", ":").replace(":", "/", 1)  # "@a/b-extension:plugin"
            actual = self.api("GET", f"/lab/api/settings/{plugin_id}").get("settings", {})
            wrong = {key: actual.get(key) for key, value in expected.items()
                     if actual.get(key) != value}
            if wrong:
                raise BrowserTestError(f"JupyterLab did not take the test settings for {plugin_id}:"
                                       f" wanted {expected}, it has {wrong}")

    def api(self, method: str, path: str, timeout: float = 10) -> object:
        """Call the server's REST API with our token; returns the decoded JSON (or None)."""
        request = urllib.request.Request(
            self.base_url + path, method=method,
            headers={"Authorization": f"token {self.token}"})
        with _NO_PROXY.open(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def notebook_url(self, notebook_name: str) -> str:
        # `reset` starts from an empty workspace instead of restoring a previous layout.
        return f"{self.base_url}/lab/tree/{notebook_name}?reset&token={self.token}"

    def remember_kernels(self) -> None:
        """Note the kernels' process ids now; kernels run in their own session, so stopping
        the server's process alone would not stop them."""
        if self.process is not None:
            self._kernels.update(_descendants_of(self.process.pid))

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no JupyterLab log)"
        return "JupyterLab log (last lines):\n" + "\n".join(text)

    def stop(self) -> None:
        if self.process is None:
            return
        self.remember_kernels()
        if self.process.poll() is None:
            try:  # the polite way: the server shuts its kernels down, then itself
                self.api("POST", "/api/shutdown", timeout=5)
                self.process.wait(timeout=15)
            except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:  # not reaped yet, so the id is still our server's
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        _stop_processes(sorted(self._kernels, key=lambda process: process.pid))
        self.log_file.close()
        self.process = None

    def __enter__(self) -> "JupyterLab":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()


class _PlaywrightDriver:
    """Playwright's driver (a Node.js process, child of this one) shared by every Chromium.

    Playwright's sync API allows one driver at a time per thread, so a second Chromium (say, in
    a test while a module-wide one runs) must borrow the running driver. The last user stops it."""

    playwright = None
    processes: list[ProcessId] = []
    users = 0

    @classmethod
    def acquire(cls):
        if cls.playwright is None:
            from playwright.sync_api import sync_playwright

            children_before = set(_children_of(os.getpid()))
            cls.playwright = sync_playwright().start()
            cls.processes = [child for child in _children_of(os.getpid())
                             if child not in children_before]
        cls.users += 1
        return cls.playwright

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        if cls.users > 0 or cls.playwright is None:
            return
        try:
            cls.playwright.stop()
        except Exception:  # noqa: BLE001 - a dead driver cannot be stopped; we kill it below
            pass
        _stop_processes(cls.processes)
        cls.playwright, cls.processes = None, []


class Chromium:
    """Headless Chromium driven by Playwright, with its profile and $HOME in scratch_dir."""

    def __init__(self, executable: str, scratch_dir: Path):
        self.executable = executable
        self.scratch_dir = Path(scratch_dir) / "chromium"
        self.browser = None
        self.processes: list[ProcessId] = []  # Chromium and its helper processes
        self._driver_acquired = False

    def start(self) -> "Chromium":
        home = self.scratch_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                   XDG_CACHE_HOME=str(home / ".cache"))
        playwright = _PlaywrightDriver.acquire()
        self._driver_acquired = True
        # Chromium is a child of Playwright's driver: note which children are new, so that
        # stop() can end exactly this browser's processes, by id, whatever happened.
        driver_ids = [process.pid for process in _PlaywrightDriver.processes]
        before = {child for pid in driver_ids for child in _children_of(pid)}
        try:
            self.browser = playwright.chromium.launch(
                executable_path=self.executable, args=CHROMIUM_ARGS, env=env, headless=True,
                timeout=60_000)
        finally:
            new = [child for pid in driver_ids for child in _children_of(pid)
                   if child not in before]
            self.processes = new + [process for child in new
                                    for process in _descendants_of(child.pid)]
        return self

    def stop(self) -> None:
        # Pages opened since start() have their own renderer processes: note those too.
        self.processes += [process for main in self.processes if main.is_alive()
                           for process in _descendants_of(main.pid)
                           if process not in self.processes]
        try:
            if self.browser is not None:
                self.browser.close()
        except Exception:  # noqa: BLE001 - a crashed browser cannot be closed; we kill it below
            pass
        _stop_processes(self.processes)
        self.browser, self.processes = None, []
        if self._driver_acquired:
            self._driver_acquired = False
            _PlaywrightDriver.release()

    def __enter__(self) -> "Chromium":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# What the page shows, cell by cell.

# Runs in the page: one record per notebook cell, in order.
_READ_CELLS_JS = """
() => Array.from(document.querySelectorAll(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell'
)).map(cell => ({
  kind: cell.classList.contains('jp-CodeCell') ? 'code'
      : cell.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw',
  prompt: (cell.querySelector('.jp-InputArea-prompt') || {}).innerText || '',
  outputs: Array.from(cell.querySelectorAll('.jp-OutputArea-output')).map(output => ({
    mime: output.getAttribute('data-mime-type') || '',
    text: (output.innerText || '').slice(-4000),  // a traceback ends with the error
    images: Array.from(output.querySelectorAll('img')).map(img => ({
      loaded: img.complete && img.naturalWidth > 0,
      width: img.naturalWidth, height: img.naturalHeight,
    })),
  })),
}))
"""

STDERR_MIME = "application/vnd.jupyter.stderr"  # JupyterLab's type for tracebacks *and* stderr
_PROMPT_NUMBER = re.compile(r"\[\s*(\d+)\s*\]")


@dataclass
class CellReport:
    """One cell as the browser shows it after the run."""

    index: int  # position in the notebook, counting every cell from 0
    kind: str  # "code", "markdown" or "raw"
    source: str  # from the notebook file (the page may show only part of a long cell)
    prompt: str  # "[3]:", "[*]:" (still running) or "[ ]:" (never ran)
    stderr_texts: list[str] = field(default_factory=list)
    image_count: int = 0  # images that actually loaded in the page

    @property
    def execution_count(self) -> int | None:
        match = _PROMPT_NUMBER.search(self.prompt)
        return int(match.group(1)) if match else None

    def describe(self) -> str:
        source = self.source if len(self.source) < 800 else self.source[:800] + "\n[...]"
        return (f"cell {self.index} (counting every cell from 0; prompt "
                f"{self.prompt.strip() or 'none'}):\n" + _indent(source))


@dataclass
class NotebookRun:
    """The outcome of running one notebook in the browser."""

    notebook: str
    cells: list[CellReport]
    screenshot: Path | None
    seconds: float  # from "Run All Cells" until the kernel was idle again
    file_changed: bool  # the served copy was written to during the run (autosave must be off)

    @property
    def code_cells(self) -> list[CellReport]:
        return [cell for cell in self.cells if cell.kind == "code"]

    @property
    def image_count(self) -> int:
        return sum(cell.image_count for cell in self.cells)

    def figure_cell(self, containing: str) -> CellReport | None:
        """The first code cell whose source contains the text (ignoring case) and shows a figure."""
        for cell in self.code_cells:
            if containing.lower() in cell.source.lower() and cell.image_count:
                return cell
        return None

    def problems(self, figure_cells_containing: tuple[str, ...] = ()) -> list[str]:
        """Everything a learner would see go wrong, as readable messages ([] when all is well).

        figure_cells_containing: for each text, some cell whose source contains it (ignoring
        case) must show a figure -- e.g. the title of the figure the lesson is about."""
        found = []
        for cell in self.code_cells:
            for text in cell.stderr_texts:
                found.append(f"{cell.describe()}\n  shows an error or stderr output:\n"
                             + _indent(text[-2000:]))
        not_run = [cell for cell in self.code_cells if cell.execution_count is None]
        if not_run:
            found.append(f"{len(not_run)} of {len(self.code_cells)} code cells have no execution "
                         f"count after the run; the first is {not_run[0].describe()}")
        for text in figure_cells_containing:
            if self.figure_cell(text) is None:
                found.append(f"no cell whose source contains {text!r} shows a figure "
                             f"({self.image_count} figures in the whole notebook)")
        if self.file_changed:
            found.append(f"{self.notebook} was saved during the run: autosave should be off")
        return found


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _read_cells(page, notebook_file: Path) -> list[CellReport]:
    sources = [cell.source for cell in nbformat.read(notebook_file, as_version=4).cells]
    shown = page.evaluate(_READ_CELLS_JS)
    if len(shown) != len(sources):
        raise BrowserTestError(f"the page shows {len(shown)} cells but {notebook_file.name} "
                               f"has {len(sources)}")
    return [
        CellReport(
            index=index, kind=cell["kind"], source=source, prompt=cell["prompt"],
            stderr_texts=[o["text"] for o in cell["outputs"] if o["mime"] == STDERR_MIME],
            image_count=sum(image["loaded"] for o in cell["outputs"] for image in o["images"]),
        )
        for index, (cell, source) in enumerate(zip(shown, sources))
    ]


_KERNEL_STATES = ("Idle", "Busy", "Starting", "Restarting", "Autorestarting", "Connecting",
                  "Initializing", "Disconnected", "Terminating", "Dead", "Unknown")


def _kernel_status(page) -> str:
    """The kernel state as the status bar at the bottom says it ("Python 3 (ipykernel) | Idle")."""
    text = page.evaluate(
        "() => (document.querySelector('#jp-main-statusbar') || {}).innerText || ''")
    match = re.search(r"\|\s*(" + "|".join(_KERNEL_STATES) + ")", text)
    return match.group(1) if match else ""


def _page_state(page) -> str:
    """What the page shows right now, for timeout messages: kernel status and any dialog."""
    try:
        state = f"status bar says {_kernel_status(page) or 'no kernel status'!r}"
        dialog = page.evaluate(
            "() => (document.querySelector('.jp-Dialog') || {}).innerText || ''").strip()
        if dialog:
            state += f"; a dialog is open: {' '.join(dialog.split())[:300]!r}"
        return state
    except Exception as error:  # noqa: BLE001 - the page itself may be what broke
        return f"the page could not be read: {error}"


def _wait_until(condition, timeout: float, what: str, page, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BrowserTestError(
                f"timed out after {timeout:.0f} s waiting for {what} ({_page_state(page)})")
        time.sleep(interval)


_PROMPTS_JS = """
() => Array.from(document.querySelectorAll(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt'
)).map(prompt => prompt.innerText)
"""


def _run_finished(page) -> bool:
    """True once the run began, no cell waits or runs ("[*]") and the kernel is idle."""
    prompts = page.evaluate(_PROMPTS_JS)
    began = any(_PROMPT_NUMBER.search(prompt) or "*" in prompt for prompt in prompts)
    return began and not any("*" in prompt for prompt in prompts) and \
        _kernel_status(page) == "Idle"


def run_in_browser(lab: JupyterLab, chromium: Chromium, notebook_name: str,
                   screenshot_path: Path | None = None, screenshot_cell_containing: str = "",
                   run_timeout: float = RUN_TIMEOUT) -> NotebookRun:
    """Open notebook_name (a file in lab.root_dir) in the browser, run all cells through the
    menu (Run > Run All Cells), wait for the kernel to finish, and report what each cell shows.

    The screenshot shows the first cell with an error if there is one, else the figure of the
    cell whose source contains screenshot_cell_containing, else the last figure.
    Returns a NotebookRun whatever the notebook does; raises BrowserTestError only when the
    machinery fails (a page or kernel that is never ready, a run that never finishes)."""
    notebook_file = lab.root_dir / notebook_name
    if not notebook_file.is_file():
        raise FileNotFoundError(f"{notebook_name} is not in the served directory {lab.root_dir}")
    served_bytes = notebook_file.read_bytes()
    context = chromium.browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT * 1000)
    try:
        page.goto(lab.notebook_url(notebook_name), wait_until="domcontentloaded")
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(state="visible")
        # The notebook's toolbar says "idle" before a kernel even exists; the status bar only
        # says "Idle" once the kernel has started and answered.
        _wait_until(lambda: _kernel_status(page) == "Idle", PAGE_TIMEOUT,
                    f"the kernel of {notebook_name} to start (status bar 'Idle')", page)
        lab.remember_kernels()

        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        started = time.monotonic()
        # Finished twice, half a second apart: the kernel is idle for an instant between cells.
        _wait_until(lambda: _run_finished(page) and (time.sleep(0.5) or _run_finished(page)),
                    run_timeout, f"'Run All Cells' to finish in {notebook_name}", page,
                    interval=0.5)
        seconds = time.monotonic() - started
        cells = _read_cells(page, notebook_file)
        run = NotebookRun(notebook_name, cells, None, seconds,
                          file_changed=notebook_file.read_bytes() != served_bytes)
        if screenshot_path is not None:
            run.screenshot = _take_screenshot(page, run, Path(screenshot_path),
                                              screenshot_cell_containing)
        return run
    except Exception as error:
        if screenshot_path is None:
            raise
        try:  # show what the page looked like when the machinery gave up
            Path(screenshot_path).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot_path))
        except Exception:  # noqa: BLE001 - the original error matters more
            raise error from None
        raise BrowserTestError(f"{error}\nscreenshot of the page: {screenshot_path}") from error
    finally:
        context.close()
        _shut_down_kernels_of(lab, notebook_name)


def _take_screenshot(page, run: NotebookRun, path: Path, cell_containing: str) -> Path:
    """Save what the learner sees, scrolled to the cell that matters most."""
    with_error = [cell for cell in run.code_cells if cell.stderr_texts]
    figure = run.figure_cell(cell_containing) if cell_containing else None
    with_figure = [cell for cell in run.code_cells if cell.image_count]
    target = (with_error[0] if with_error else figure if figure
              else with_figure[-1] if with_figure else None)
    page.keyboard.press("Control+b")  # fold the file browser away: more room for the notebook
    page.wait_for_timeout(300)
    if target is not None:
        page.evaluate(
            """index => {
              const cell = document.querySelectorAll(
                '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')[index];
              const output = cell.querySelector('.jp-OutputArea-output img')
                || cell.querySelector('.jp-OutputArea') || cell;
              output.scrollIntoView({block: 'center'});
            }""", target.index)
        page.wait_for_timeout(300)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path


def _shut_down_kernels_of(lab: JupyterLab, notebook_name: str) -> None:
    """End the notebook's kernel session, so that several tests can share one server."""
    try:
        for session in lab.api("GET", "/api/sessions") or []:
            if session.get("path") == notebook_name:
                lab.api("DELETE", f"/api/sessions/{session['id']}")
    except (OSError, urllib.error.URLError):
        pass  # the server is gone; JupyterLab.stop() ends the kernels by process id
