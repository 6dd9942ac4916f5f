"""Dashboard benchmarks in Debian's headless Chromium (Playwright): first render of the instance
table at 50, 200 and 1,000 instances, bytes on the websocket per status change, and status
change -> visible, each at every size.

The first-render rows have a baseline measured in the same run, each load of it alternating with
a dashboard load: a bare page of the same framework with the same flags (a header and a badge).
Its time is what NiceGUI, Vue and Quasar cost before any of ours, and moves with the machine's
speed (on these shared 2-core machines by ~30 % from one day to the next); the ratio moves less.

Each first-render load starts in a new page once what the bench started is quiet: opening a
page opens a browser window, whose own interface pages (Chromium's WebUI renderers) take a few
hundred ms of CPU after ``new_page()`` returns. On a 2-core machine that work ran beside the load
being measured and added ~150 ms to the dashboard's first render and ~100 ms to the bare page's
(traced per thread); a person opens a tab before typing the panel's address. The servers are
watched too: the panel still builds the tools of a dashboard closed as its rows showed."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psutil
from playwright.sync_api import BrowserContext, Page, sync_playwright

from tests.helpers import CHROMIUM, CHROMIUM_ARGS, Panel, end_group, free_port

from .core import PYTHON, BenchError, Context, Result, create, median, poll, post, put_blueprint, wait_status

SIZES = (50, 200, 1000)
TARGETS = {50: 0.5, 200: 1.0, 1000: 3.0}
# The table says how many rows it holds (data-count) and renders those on screen.
SHOWN = 'document.querySelector(\'.aikore-grid[data-count="{count}"] .q-badge\') !== null'
# The monitor's chart has its first point: the last part of the page built after the table.
CHARTED = "document.querySelector('.js-plotly-plot')?.data?.[0]?.x?.length > 0"
BARE_PAGE_APP = """\
import sys
from nicegui import ui

@ui.page('/')
def index() -> None:
    with ui.header():
        ui.label('AiKore')
    ui.badge('started')

ui.run(port=int(sys.argv[1]), reload=False, show=False, show_welcome_message=False, dark=True,
       uvicorn_logging_level='warning', unocss=None, tailwind=False)
"""
BARE_SHOWN = "document.querySelector('.q-badge') !== null"
BARE_LABEL = 'bare NiceGUI page'
# Quiet: the processes the bench started (Chromium, the panel, the bare app) use at most one
# 10 ms tick of CPU together in a window (CPU times count in ticks).
QUIET_CPU = 0.015
QUIET_WINDOW = 0.1
QUIET_WINDOWS = 2  # in a row
QUIET_TIMEOUT = 10.0
# Records each status change of one row with the browser's clock (same machine: same clock as ours).
WATCH_ROW = """
window.__changes = [];
let last = null;
new MutationObserver(() => {
    const text = document.querySelector('tr[data-id="%d"] .q-badge')?.textContent;
    if (text !== last) { last = text; window.__changes.push([text, Date.now()]); }
}).observe(document, {childList: true, characterData: true, subtree: true});
"""


def dashboard(ctx: Context) -> list[Result]:
    panel = ctx.panel('dashboard')
    put_blueprint(panel, 'Serve', f'exec {PYTHON} -m http.server --bind 127.0.0.1 "$WEBUI_PORT"', ready='tcp')
    ids: list[int] = []
    results: list[Result] = []
    runs = 3 if ctx.quick else 5
    with _bare_page(ctx) as bare_url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={'width': 1280, 'height': 800})
        login = context.new_page()
        login.goto(panel.login_link())
        login.close()  # no dashboard open while the instances are created
        measured = 0
        for count in SIZES:
            try:
                with ThreadPoolExecutor(2) as pool:
                    ids += pool.map(lambda n: create(panel, f'inst-{n:04d}', 'Serve'), range(len(ids), count))
                ids.sort()
                results += _measure(context, panel, ids, count, runs, bare_url)
                measured += 1
            except Exception as exc:
                print(f'[bench] dashboard at {count} instances failed: {exc}', flush=True)
                break
        browser.close()
    results.append(_log_errors(panel, measured))
    ctx.stop_panel(panel)
    return results


def _log_errors(panel: Panel, measured: int) -> Result:
    """The panel's ERROR lines and NiceGUI's "did not respond" warnings over the whole run (every
    size's loads, closed pages and status changes): a user's normal navigation logs none.
    ``measured``: how many sizes were measured."""
    lines = [line for line in panel.log_text().splitlines() if ' ERROR ' in line or 'did not respond' in line]
    sizes = 'all sizes' if measured == len(SIZES) else f'{measured} of {len(SIZES)} sizes'
    note = f'first: {lines[0][:120]}' if lines else sizes
    return Result('dashboard_errors', 'panel log: ERROR / "did not respond" lines', 'lines', len(lines), 0, '= 0',
                  '-', note=note)  # fmt: skip


@contextlib.contextmanager
def _bare_page(ctx: Context) -> Iterator[str]:
    """The baseline's app, running (its own session: ended with its group) while the block runs;
    on the panel's interpreter (the venv's, with NiceGUI), not the instance apps' ``PYTHON``."""
    app, port = ctx.write_app('bare_page.py', BARE_PAGE_APP), free_port()
    url = f'http://127.0.0.1:{port}'
    quiet = subprocess.DEVNULL
    command = [sys.executable, str(app), str(port)]
    process = subprocess.Popen(command, stdout=quiet, stderr=quiet, start_new_session=True)
    try:
        poll(lambda: _answers(url) or process.poll() is not None, 60, 0.05, 'the bare page to answer')
        if process.poll() is not None:
            raise RuntimeError(f'the bare page app exited with {process.returncode}')
        yield url
    finally:
        end_group(process)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _measure(
    context: BrowserContext, panel: Panel, ids: list[int], count: int, runs: int, bare_url: str
) -> list[Result]:
    render: list[float] = []
    bare: list[float] = []
    loads = [(render, panel.url, SHOWN.format(count=count)), (bare, bare_url, BARE_SHOWN)]
    for _times, url, shown in loads:  # unmeasured: each page's files cached (the dashboard's table, icons too)
        _first_render(_quiet_page(context), url, shown)
    for run in range(runs):  # alternating, each first in turn: both see the machine as it is then
        for times, url, shown in loads[run % 2 :] + loads[: run % 2]:
            times.append(_first_render(_quiet_page(context), url, shown))
    page: Page = context.new_page()
    page.add_init_script(WATCH_ROW % ids[0])  # on every load: a reload during the run is survived, and counted
    frames: list[int] = []
    page.on('websocket', lambda ws: ws.on('framereceived', lambda payload: frames.append(len(payload))))
    page.goto(f'{panel.url}/')
    page.wait_for_function(SHOWN.format(count=count))
    page.wait_for_function(CHARTED)  # the tools and charts follow the table: not part of a status change
    reloads: list[int] = []
    page.on('load', lambda _: reloads.append(1))
    latencies, bytes_per_change = [], []
    for _ in range(runs * 2):
        latency, sent = _status_change(page, panel, ids[0], frames)
        latencies.append(latency)
        bytes_per_change.append(sent)
    if panel.instance(ids[0])['status'] != 'stopped':
        post(panel, f'/instances/{ids[0]}/stop')
        wait_status(panel, ids[0], 'stopped')
    page.close()
    suffix = '' if count == SIZES[0] else f'_{count}'
    return [
        Result(f'dashboard_render{suffix}', f'dashboard first render, {count} instances (median)', 's',
               median(render), TARGETS[count], f'<= {TARGETS[count]:g} s', '-', baseline=median(bare),
               baseline_label=BARE_LABEL, note=f'max {max(render):.2f} s, n={runs}', samples=render,
               extra={'baseline_samples': bare}),
        Result(f'status_bytes{suffix}', f'websocket bytes per status change, {count} instances (median)', 'B',
               median(bytes_per_change), 2048, '< 2 KB', '-', note=f'max {max(bytes_per_change):.0f} B',
               samples=bytes_per_change),
        Result(f'status_visible{suffix}', f'status change -> visible, {count} instances (median)', 's',
               median(latencies), 0.3, '<= 300 ms', '-',
               note=f'max {max(latencies) * 1000:.0f} ms, n={len(latencies)}, reloads {len(reloads)}',
               samples=latencies),
    ]  # fmt: skip


def _quiet_page(context: BrowserContext) -> Page:
    """A new page, once Chromium has finished opening its window and the servers are idle (see
    the module's docstring); after ``QUIET_TIMEOUT`` s the load starts anyway (a busy machine)."""
    page = context.new_page()
    last: dict[int, float] | None = None  # the first reading (poll's first call) opens the first window
    quiet = 0

    def settled() -> bool:
        nonlocal last, quiet
        now = _started_cpu()
        if last is not None:
            used = sum(seconds - last.get(pid, 0.0) for pid, seconds in now.items())  # a new process: all of its
            quiet = quiet + 1 if used < QUIET_CPU else 0
        last = now
        return quiet >= QUIET_WINDOWS

    try:
        poll(settled, QUIET_TIMEOUT, QUIET_WINDOW, 'Chromium to be quiet')
    except BenchError:
        print(f'[bench] browser or servers still busy after {QUIET_TIMEOUT:g} s: measuring anyway', flush=True)
    return page


def _started_cpu() -> dict[int, float]:
    """CPU seconds so far of each process below this one: Chromium and Playwright's driver, the
    panel with its instances, the bare page's app."""
    used: dict[int, float] = {}
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            used[process.pid] = times.user + times.system
    return used


def _first_render(page: Page, url: str, shown: str) -> float:
    began = time.perf_counter()
    page.goto(f'{url}/')
    page.wait_for_function(shown)
    elapsed = time.perf_counter() - began
    page.close()
    return elapsed


def _status_change(page: Page, panel: Panel, instance_id: int, frames: list[int]) -> tuple[float, float]:
    """Start (or stop) one instance through the API; the time until the browser shows the
    first new status, and the websocket bytes per status change it took."""
    running = panel.instance(instance_id)['status'] == 'started'
    page.evaluate('window.__changes = []')
    del frames[:]
    began = time.time() * 1000
    post(panel, f'/instances/{instance_id}/{"stop" if running else "start"}')
    wanted = 'stopped' if running else 'started'
    wait_status(panel, instance_id, wanted)
    page.wait_for_function(f"window.__changes.some(c => c[0] === '{wanted}')")
    changes = page.evaluate('window.__changes')
    first_seen = min(when for _text, when in changes)
    statuses = {text for text, _when in changes}
    return (first_seen - began) / 1000, sum(frames) / max(1, len(statuses))


def dashboards_open(ctx: Context) -> list[Result]:
    """Three dashboards open, the monitor at 1 s: the panel's CPU, and the websocket bytes each
    page receives per chart tick."""
    panel = ctx.panel('dashboards-open')
    link = panel.login_link()
    assert panel.process is not None
    seconds = 10 if ctx.quick else 30
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={'width': 1280, 'height': 800})
        context.new_page().goto(link)
        frames: list[int] = []
        pages = []
        for index in range(3):
            page = context.new_page()
            if index == 0:
                page.on('websocket', lambda ws: ws.on('framereceived', lambda payload: frames.append(len(payload))))
            page.goto(f'{panel.url}/')
            page.wait_for_function(CHARTED)
            pages.append(page)
        process = psutil.Process(panel.process.pid)
        pages[0].wait_for_timeout(2000)  # let the pages settle before measuring
        del frames[:]
        before, began = process.cpu_times(), time.perf_counter()
        pages[0].wait_for_timeout(seconds * 1000)
        after, elapsed = process.cpu_times(), time.perf_counter() - began
        browser.close()
    ctx.stop_panel(panel)
    cpu = 100 * ((after.user + after.system) - (before.user + before.system)) / elapsed
    ticks = max(1, round(elapsed))  # one sample a second
    per_tick = sum(frames) / ticks
    return [
        Result('dashboards_cpu', f'panel CPU, 3 dashboards open, {seconds} s', '%', cpu, 3.0, '< 3 % core', '-',
               note='monitor every 1 s, no instance'),
        Result('chart_bytes', 'websocket bytes per chart tick (one page)', 'B', per_tick, 1024, '< 1 KB', '-',
               note=f'{len(frames)} frames in {elapsed:.0f} s'),
    ]  # fmt: skip
