"""End to end in a real headless Chromium (Debian's), driven by Playwright, against the
panel run as a subprocess: what a person does on the first day."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.helpers import Panel, python_server_blueprint

ARTIFACTS = Path(__file__).with_name('artifacts')


def console_errors(page: Page) -> list[str]:
    errors: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        if message.type == 'error':
            errors.append(message.text)

    page.on('console', keep)
    page.on('pageerror', lambda error: errors.append(str(error)))
    return errors


COUNT_REDRAWS = """
() => {
    const chart = document.querySelector('.js-plotly-plot');
    const component = getElement(chart.id.slice(1));
    window.__redraws = 0;
    const original = component.update;
    component.update = function (...args) { window.__redraws += 1; return original.apply(this, args); };
    return chart.data[0].x.length;
}
"""


def assert_charts_grow_without_redraw(page: Page) -> None:
    """The system chart gets new points, appended in place (no Plotly re-render)."""
    expect(page.locator('.js-plotly-plot').first).to_be_visible()
    before = page.evaluate(COUNT_REDRAWS)
    page.wait_for_function(f"document.querySelector('.js-plotly-plot').data[0].x.length >= {before + 2}", timeout=10000)
    assert page.evaluate('window.__redraws') == 0


def test_first_day(browser: Browser, panel: Panel) -> None:
    page = browser.new_page(viewport={'width': 1280, 'height': 800})
    errors = console_errors(page)
    page.goto(panel.login_link())
    expect(page.get_by_text('No instances yet')).to_be_visible(timeout=15000)
    page.get_by_role('button', name='Create a Demo instance').click()
    expect(page.get_by_text('Created demo')).to_be_visible()
    status = page.locator('.q-badge').first
    expect(status).to_have_text('stopped')

    page.locator('button', has_text=re.compile('^play_arrow$')).first.click()
    expect(status).to_have_text('started', timeout=20000)  # pushed: no reload

    page.locator('button', has_text=re.compile('^article$')).first.click()
    rows = page.locator('.xterm-rows')
    expect(rows).to_contain_text('Loading demo model', timeout=10000)
    expect(rows).to_contain_text('Demo listening')
    assert rows.locator('span[class*="xterm-fg-"]').count() > 0, 'the ANSI colours are rendered'
    assert_charts_grow_without_redraw(page)

    view = page.locator('button', has_text=re.compile('^preview$')).first
    expect(view).to_be_enabled(timeout=10000)
    view.click()
    expect(page.frame_locator('iframe').get_by_role('heading', name='demo')).to_be_visible(timeout=10000)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / 'dashboard-1280x800.png'))
    page.set_viewport_size({'width': 390, 'height': 844})
    expect(page.get_by_text('Instances', exact=True)).to_be_visible()
    # A phone shows name, status and actions without scrolling sideways.
    for shown in (status, page.locator('button', has_text=re.compile('^stop$')).first):
        box = shown.bounding_box()
        assert box is not None and box['x'] + box['width'] <= 390, box
    page.screenshot(path=str(ARTIFACTS / 'dashboard-390x844.png'))
    page.set_viewport_size({'width': 1280, 'height': 800})

    page.locator('button', has_text=re.compile('^stop$')).first.click()
    expect(status).to_have_text('stopped', timeout=20000)
    assert errors == []


def test_two_browsers_see_each_other(browser: Browser, panel: Panel) -> None:
    panel.put_blueprint('Quick', python_server_blueprint())
    panel.create('shared', blueprint='Quick')
    first, second = browser.new_context(), browser.new_context()
    try:
        one, two = first.new_page(), second.new_page()
        one.goto(panel.login_link())
        two.goto(f'{panel.url}/login')
        two.get_by_label('Password').fill(panel.password())
        two.get_by_role('button', name='Log in').click()
        for page in (one, two):
            expect(page.locator('.q-badge').first).to_have_text('stopped', timeout=15000)
        one.locator('button', has_text=re.compile('^play_arrow$')).first.click()
        expect(two.locator('.q-badge').first).to_have_text('started', timeout=15000)
        two.locator('button', has_text=re.compile('^stop$')).first.click()
        expect(one.locator('.q-badge').first).to_have_text('stopped', timeout=15000)
    finally:
        first.close()
        second.close()


def open_url(page: Page, row: int) -> str | None:
    """The Open button's link of a row (on the wrapper's title: a disabled button shows none)."""
    return page.locator('span:has(> button:has-text("open_in_new"))').nth(row).get_attribute('title')


def test_seed_protocol_activation_conflict_and_access(browser: Browser, panel: Panel) -> None:
    """The seed's test protocol 6.1, steps 3-5, as a person clicks through them."""
    low = int(panel.env['AIKORE_PORT_RANGE'].split('-')[0])
    panel.put_blueprint('Quick', python_server_blueprint())
    ids = [panel.create(name, blueprint='Quick', public_port=low)['id'] for name in ('first', 'second')]
    for instance_id in ids:
        panel.client.post(f'/instances/{instance_id}/start')
        panel.wait_status(instance_id, 'started')
    page = browser.new_page(viewport={'width': 1280, 'height': 800})
    errors = console_errors(page)
    page.goto(panel.login_link().replace('127.0.0.1', 'localhost'))  # a name: subdomains of an IP cannot exist
    toggles = page.locator('button', has_text=re.compile('^(Activate|Deactivate)$'))
    expect(toggles).to_have_count(2, timeout=15000)

    toggles.nth(0).click()  # step 3: Activate -> Deactivate (green)
    expect(toggles.nth(0)).to_have_text('Deactivate')
    assert 'bg-positive' in (toggles.nth(0).get_attribute('class') or '')
    expect(page.locator('span:has(> button:has-text("open_in_new"))').nth(0)).to_have_attribute(
        'title', f'http://localhost:{low}/'
    )
    assert open_url(page, 1) != f'http://localhost:{low}/'  # the second is not active
    assert httpx.get(f'http://127.0.0.1:{low}/', timeout=5).status_code == 200  # the Open link works

    toggles.nth(1).click()  # step 4: a conflict names the holder; Cancel changes nothing
    expect(page.get_by_text(f'Public port {low} is in use by first')).to_be_visible()
    page.get_by_role('button', name='Cancel').click()
    expect(toggles.nth(0)).to_have_text('Deactivate')
    expect(toggles.nth(1)).to_have_text('Activate')
    assert panel.instance(ids[0])['active'] is True

    toggles.nth(1).click()  # ... and OK takes the port over; both rows update
    page.get_by_role('button', name='Take over').click()
    expect(toggles.nth(1)).to_have_text('Deactivate')
    expect(toggles.nth(0)).to_have_text('Activate')
    assert [panel.instance(i)['active'] for i in ids] == [False, True]

    access = page.get_by_label('Access')
    access.nth(1).select_option('Subdomain')  # step 5: the Open link follows the access pattern
    expect(page.locator('span:has(> button:has-text("open_in_new"))').nth(1)).to_have_attribute(
        'title', f'http://second.localhost:{panel.port}/'
    )
    expect(access.nth(1)).to_have_value('subdomain')
    access.nth(1).select_option('Host:port')
    expect(page.locator('span:has(> button:has-text("open_in_new"))').nth(1)).to_have_attribute(
        'title', f'http://localhost:{low}/'
    )
    assert errors == []


def test_subdomain_instance_after_login(browser: Browser, panel: Panel) -> None:
    """An instance on <slug>.<host>: a browser that is not logged in lands on the login page
    and, after it, on the instance; from the dashboard, Open reaches it at once (the panel's
    cookie does not cover the subdomain: a one-time hand-off gives it its own)."""
    instance = panel.create('sub', blueprint='Demo', access_pattern='subdomain')
    panel.client.post(f'/instances/{instance["id"]}/start')
    panel.wait_status(instance['id'], 'started', timeout=30)
    wanted = f'http://sub.localhost:{panel.port}/'  # Chromium resolves *.localhost to loopback

    stranger = browser.new_context()
    page = stranger.new_page()
    page.goto(wanted)
    expect(page).to_have_url(re.compile(rf'^http://localhost:{panel.port}/login\?next='))
    page.get_by_label('Password').fill(panel.password())
    page.get_by_role('button', name='Log in').click()
    expect(page.get_by_role('heading', name='sub')).to_be_visible(timeout=10000)
    assert page.url == wanted
    stranger.close()

    user = browser.new_context(viewport={'width': 1280, 'height': 800})
    dashboard = user.new_page()
    errors = console_errors(dashboard)
    dashboard.goto(panel.login_link().replace('127.0.0.1', 'localhost'))  # a name: subdomains of an IP cannot exist
    opener = dashboard.locator('button', has_text=re.compile('^open_in_new$')).first
    expect(opener).to_be_enabled(timeout=15000)
    with dashboard.expect_popup() as popup:
        opener.click()
    opened = popup.value
    expect(opened.get_by_role('heading', name='sub')).to_be_visible(timeout=10000)
    assert opened.url == wanted
    assert errors == []
    user.close()
