"""The row menu in headless Chromium: it opens, a satellite's environment items are off, and a
clone made from it appears in the table; a satellite row says whose it is."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, expect

from tests.helpers import Panel
from tests.test_dashboard_browser import action, errors_logged, logged_in, row


def test_row_menu_clones_and_shows_satellites(browser: Browser, panel: Panel) -> None:
    base = panel.create('base')['id']
    response = panel.client.post(f'/instances/{base}/satellites', json={'name': 'moon'})
    assert response.status_code == 201, response.text
    moon = response.json()['id']
    page = logged_in(browser, panel)
    expect(row(page, moon)).to_contain_text('satellite of base')

    action(page, moon, 'more_vert').click()
    expect(page.locator('.q-menu .q-item', has_text='Pins…')).to_have_class(re.compile('disabled'))
    page.keyboard.press('Escape')
    expect(page.locator('.q-menu')).to_have_count(0, timeout=10000)

    action(page, base, 'more_vert').click()
    page.locator('.q-menu .q-item', has_text='Clone…').click()
    dialog = page.get_by_role('dialog')
    expect(dialog.get_by_label('Name')).to_have_value('base-copy', timeout=15000)  # the suggested name
    dialog.get_by_role('button', name='Clone').click()
    copy = page.locator('.aikore-grid tr').filter(has=page.locator('input[aria-label="Name"][value="base-copy"]'))
    expect(copy).to_have_count(1, timeout=20000)
    expect(copy).to_contain_text('stopped', timeout=20000)
    page.context.close()
    assert errors_logged(panel) == []
