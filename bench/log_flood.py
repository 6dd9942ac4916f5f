"""A log flood with a viewer: an instance writes 1 GB of lines as fast as it can while a
browser follows its Logs tab. The panel's memory must stay within 50 MB of what it used
before the flood (the view gets a bounded share and a "… N lines skipped …" marker), its
/api/health must keep answering within 100 ms, and it must come back to idle once the
viewer has left."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import psutil
from playwright.sync_api import sync_playwright

from tests.helpers import CHROMIUM, CHROMIUM_ARGS

from .core import PYTHON, Context, HealthSampler, Result, create, median, poll, post, put_blueprint

FLOOD_APP = """
import sys
total = int(sys.argv[1])
line = b'flood ' + b'x' * 93 + b'\\n'   # 100 bytes
block = line * 10_000                   # 1 MB per write
out = sys.stdout.buffer
for _ in range(total // len(block)):
    out.write(block)
out.write(b'flood done\\n')
out.flush()
"""


# Whether the terminal's whole buffer (not only the rows on screen) holds a skip marker.
HAS_SKIP_MARKER = """
() => {
    const host = document.querySelector('.xterm').closest('[id^=c]');
    const buffer = getElement(host.id.slice(1)).terminal.buffer.active;
    for (let row = 0; row < buffer.length; row++) {
        if ((buffer.getLine(row)?.translateToString(true) ?? '').includes('lines skipped')) return true;
    }
    return false;
}
"""


class RssSampler(threading.Thread):
    """The panel process's resident memory, every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(self.process.memory_info().rss)
            self._stop_event.wait(self.interval)

    def finish(self) -> list[int]:
        self._stop_event.set()
        self.join(10)
        return self.samples


def log_flood(ctx: Context) -> list[Result]:
    total = (200 if ctx.quick else 1000) * 1024 * 1024
    app = ctx.write_app('flood_app.py', FLOOD_APP)
    panel = ctx.panel('flood')
    assert panel.process is not None
    put_blueprint(panel, 'BenchFlood', f'exec {PYTHON} -u {app} {total}', ready='none')
    instance_id = create(panel, 'flood', 'BenchFlood')
    log_file = panel.data_dir / 'instances' / 'flood' / 'logs' / 'output.log'
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={'width': 1280, 'height': 800})
        page.goto(panel.login_link())
        page.locator('button', has_text=re.compile('^article$')).first.click()  # the row's Logs
        page.locator('.xterm-rows').wait_for(timeout=30_000)
        idle_health = HealthSampler(panel.url)
        idle_health.start()
        idle_rss = RssSampler(panel.process.pid)
        idle_rss.start()
        time.sleep(2.0)
        idle_latencies, idle_memory = idle_health.finish(), idle_rss.finish()
        health, rss = HealthSampler(panel.url), RssSampler(panel.process.pid)
        health.start()
        rss.start()
        began = time.perf_counter()
        post(panel, f'/instances/{instance_id}/start')
        poll(lambda: _ends_with(log_file, b'flood done'), 600, 0.05, 'the flood to end')
        flood_s = time.perf_counter() - began
        page.wait_for_function(
            "document.querySelector('.xterm-rows').textContent.includes('flood done')", timeout=60_000
        )
        shown_skip = page.evaluate(HAS_SKIP_MARKER)
        latencies, memory = health.finish(), rss.finish()
        browser.close()
    after = RssSampler(panel.process.pid)
    after.start()
    time.sleep(3.0)
    left = after.finish()
    ctx.stop_panel(panel)
    base = median([float(value) for value in idle_memory])
    rise_mb = (max(memory) - base) / 2**20
    after_mb = (median([float(value) for value in left]) - base) / 2**20
    note = f'{total / 2**30:.2f} GB in {flood_s:.1f} s; idle {base / 2**20:.0f} MB'
    note += f'; {after_mb:+.0f} MB after the viewer left'
    return [
        Result('log_flood_rss', 'log flood with a viewer: panel RSS above idle', 'MB', rise_mb, 50, '<= +50 MB',
               '+797 MB',
               note=note + ('; the view showed a skip marker' if shown_skip else '; NO skip marker'),
               checks_ok=bool(shown_skip), samples=[value / 2**20 for value in memory]),
        Result('log_flood_health', 'log flood with a viewer: max /api/health', 's', max(latencies), 0.1,
               '<= 100 ms', '633 ms', baseline=max(idle_latencies), baseline_label='idle max',
               note=f'{len(latencies)} samples, {health.failures} failed', checks_ok=health.failures == 0,
               samples=latencies),
    ]  # fmt: skip


def _ends_with(path: Path, marker: bytes) -> bool:
    try:
        with path.open('rb') as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 64))
            return marker in handle.read()
    except OSError:
        return False
