"""Makes ``app/pages/utilities.css``: ``python -m tests.utility_css`` (after adding a utility class).

UnoCSS's own generator and its wind3 preset, as NiceGUI ships them, run in Chromium over the
panel's source (``app/``) and NiceGUI's elements; every token that names a utility class becomes
a rule, in the page's ``base`` (preflight) and ``utilities`` layers, as NiceGUI's runtime set it up.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nicegui
from playwright.sync_api import sync_playwright

from app.pages.utility_css import CSS_FILE
from tests.helpers import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
NICEGUI = Path(nicegui.__file__).parent
SOURCES = [(ROOT / 'app', ('*.py', '*.js')), (NICEGUI, ('*.py', '*.js', '*.vue'))]
BUNDLED = {'dist', 'node_modules', 'static'}  # libraries (Quasar, Vue, Plotly...): none of their classes are ours
# NiceGUI's settings for the runtime (its templates/index.html with unocss='wind3').
PAGE = """<!doctype html><html><head>
<script src="{static}/preset-wind3.global.js"></script>
<script>
window.__unocss = {{
  presets: [() => window.__unocss_runtime.presets.presetWind3({{
    dark: {{light: 'body.body--light', dark: 'body.body--dark'}},
  }})],
  runtime: {{ ready: () => false }},
  outputToCssLayers: {{
    cssLayerName: (layer) => layer === 'default' ? 'utilities' : layer === 'preflights' ? 'base' : undefined,
  }},
}};
</script>
<script src="{static}/core.global.js"></script>
</head><body></body></html>"""
HEADER = '/* Made by `python -m tests.utility_css` from the source: do not edit. */\n'


def source_text() -> str:
    files = sorted(
        path
        for folder, patterns in SOURCES
        for pattern in patterns
        for path in folder.rglob(pattern)
        if not BUNDLED & set(path.parts)
    )
    return '\n'.join(path.read_text(encoding='utf-8', errors='replace') for path in files)


def generate() -> str:
    with tempfile.TemporaryDirectory() as folder:
        page_file = Path(folder) / 'generate.html'
        page_file.write_text(PAGE.format(static=(NICEGUI / 'static' / 'unocss').as_uri()), encoding='utf-8')
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(page_file.as_uri())
                css = page.evaluate(
                    'async (text) => (await window.__unocss_runtime.uno.generate(text, {preflights: true})).css',
                    source_text(),
                )
            finally:
                browser.close()
    return HEADER + str(css).strip() + '\n'


def main() -> int:
    CSS_FILE.write_text(generate(), encoding='utf-8')
    print(f'wrote {CSS_FILE} ({CSS_FILE.stat().st_size} bytes)')  # noqa: T201 - the command's output
    return 0


if __name__ == '__main__':
    sys.exit(main())
