"""The dashboard's rough edges a first-time user hit, tried in headless Chromium against a
panel subprocess (issue 12, part 2)."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from app.services.runtime.logs import log_path
from tests.helpers import Panel, python_server_blueprint, wait_for


def logged_in(browser: Browser, panel: Panel, width: int = 1280, height: int = 800) -> Page:
    page = browser.new_context(viewport={'width': width, 'height': height}).new_page()
    page.goto(panel.login_link())
    expect(page.locator('.aikore-grid')).to_be_visible(timeout=15000)
    return page


def row(page: Page, instance_id: int):  # type: ignore[no-untyped-def]
    return page.locator(f'.aikore-grid tr[data-id="{instance_id}"]')


def action(page: Page, instance_id: int, icon: str):  # type: ignore[no-untyped-def]
    """A row's action button by its icon name (the span around it carries its title)."""
    return row(page, instance_id).locator('button.aikore-action', has_text=re.compile(f'^{icon}$'))


def errors_logged(panel: Panel) -> list[str]:
    return [line for line in panel.log_text().splitlines() if ' ERROR ' in line or 'did not respond' in line]


def test_tab_and_instance_restored_after_reload(browser: Browser, panel: Panel) -> None:
    first = panel.create('first')['id']
    second = panel.create('second')['id']
    page = logged_in(browser, panel)
    action(page, second, 'code').click()
    expect(page.get_by_text('Script · second · launch.sh')).to_be_visible(timeout=10000)
    page.reload()
    expect(page.locator('.q-tab--active')).to_have_text(re.compile('Script'), timeout=15000)
    expect(page.get_by_text('Script · second · launch.sh')).to_be_visible(timeout=10000)
    expect(row(page, second)).to_have_class(re.compile('aikore-selected'))
    expect(row(page, first)).not_to_have_class(re.compile('aikore-selected'))
    page.context.close()
    assert errors_logged(panel) == []


def test_other_tools_follow_the_selected_instance(browser: Browser, panel: Panel) -> None:
    first = panel.create('first')['id']
    second = panel.create('second')['id']
    page = logged_in(browser, panel)
    tab = page.locator('.q-tab')
    action(page, second, 'article').click()
    expect(page.get_by_text('Logs · second')).to_be_visible(timeout=10000)
    tab.filter(has_text='Script').click()  # the highlighted instance, not "Pick an instance"
    expect(page.get_by_text('Script · second · launch.sh')).to_be_visible(timeout=10000)
    tab.filter(has_text='Terminal').click()
    expect(page.get_by_text('Terminal · second')).to_be_visible(timeout=10000)
    expect(page.get_by_role('button', name='End shell')).to_be_visible(timeout=15000)
    action(page, first, 'code').click()  # Script of first: the Logs follow when shown again
    expect(page.get_by_text('Script · first · launch.sh')).to_be_visible(timeout=10000)
    tab.filter(has_text='Logs').click()
    expect(page.get_by_text('Logs · first')).to_be_visible(timeout=10000)
    tab.filter(has_text='Terminal').click()  # an open shell of another instance is kept
    expect(page.get_by_text('Terminal · second')).to_be_visible()
    expect(page.get_by_role('button', name='End shell')).to_be_visible()
    page.context.close()
    assert errors_logged(panel) == []


def test_delete_says_so_and_logs_no_error(browser: Browser, panel: Panel) -> None:
    goner = panel.create('goner')['id']
    page = logged_in(browser, panel)
    action(page, goner, 'terminal').click()
    expect(page.get_by_role('button', name='End shell')).to_be_visible(timeout=15000)  # a live shell
    action(page, goner, 'delete').click()
    page.get_by_role('dialog').get_by_role('button', name='Delete').last.click()
    expect(page.get_by_text('goner moved to the trash')).to_be_visible(timeout=10000)
    expect(row(page, goner)).to_have_count(0)
    expect(page.get_by_text('Pick an instance (its Terminal button)')).to_be_visible()  # the tool let go
    expect(page.get_by_text('Terminal · goner')).to_have_count(0)
    expect(page.get_by_role('button', name='New shell')).to_be_hidden()
    expect(page.get_by_role('button', name='End shell')).to_be_hidden()  # the shell ended
    page.context.close()
    assert errors_logged(panel) == []


def test_refused_actions_are_disabled_with_the_reason(browser: Browser, panel: Panel) -> None:
    panel.put_blueprint('Quick', python_server_blueprint())
    busy = panel.create('busy', blueprint='Quick')['id']
    panel.client.post(f'/instances/{busy}/start')
    panel.wait_status(busy, 'started')
    page = logged_in(browser, panel)
    delete = action(page, busy, 'delete')
    expect(delete).to_be_disabled()
    expect(delete.locator('xpath=..')).to_have_attribute('title', re.compile('Stop busy before deleting it'))
    name = row(page, busy).get_by_label('Name')
    expect(name).to_be_disabled()
    expect(name).to_have_attribute('title', 'Stop busy to rename it')
    action(page, busy, 'stop').click()
    expect(delete).to_be_enabled(timeout=15000)  # pushed: the row follows the status
    expect(name).to_be_enabled()
    page.context.close()


def test_filter_and_sort(browser: Browser, panel: Panel) -> None:
    for name in ('beta', 'alpha', 'gamma'):
        panel.create(name)
    page = logged_in(browser, panel)
    names = page.locator('.aikore-grid tbody input[aria-label="Name"]')
    expect(names).to_have_count(3)
    assert [names.nth(i).input_value() for i in range(3)] == ['alpha', 'beta', 'gamma']  # sorted by name
    page.get_by_label('Filter instances').fill('gam')
    expect(names).to_have_count(1)
    expect(names.first).to_have_value('gamma')
    page.context.close()


def test_token_link_gives_a_session(browser: Browser, panel: Panel) -> None:
    instance = panel.create('linked')['id']
    page = browser.new_context().new_page()
    page.goto(f'{panel.url}/?token={panel.token}')
    expect(page).to_have_url(f'{panel.url}/')  # the token leaves the address bar
    expect(row(page, instance).locator('.q-badge')).to_have_text('stopped', timeout=15000)
    panel.put_blueprint('Quick', python_server_blueprint())
    other = panel.create('other', blueprint='Quick')['id']
    expect(row(page, other)).to_have_count(1, timeout=15000)  # the websocket works: rows are pushed
    page.goto(f'{panel.url}/?token={panel.token}')  # the same link again, now logged in
    expect(page).to_have_url(f'{panel.url}/')
    expect(row(page, instance)).to_have_count(1, timeout=15000)
    page.goto(f'{panel.url}/blueprints?token=wrong')  # a wrong token, logged in: gone from the address too
    expect(page).to_have_url(f'{panel.url}/blueprints')
    page.context.close()
    fresh = browser.new_context().new_page()
    fresh.goto(f'{panel.url}/?token=wrong')  # not logged in: the login page, the token not kept
    expect(fresh).to_have_url(f'{panel.url}/login?next=/&refused=link')
    expect(fresh.get_by_role('alert')).to_have_text(re.compile('The token in that link is not valid'))
    fresh.get_by_label('Password').fill(panel.password())
    fresh.get_by_role('button', name='Log in').click()
    expect(row(fresh, instance)).to_have_count(1, timeout=15000)
    fresh.context.close()


def page_height(page: Page) -> list[int]:
    return list(page.evaluate('[document.scrollingElement.scrollHeight, window.innerHeight]'))


def test_page_fits_the_window_and_the_phone_can_activate_and_monitor(browser: Browser, panel: Panel) -> None:
    panel.put_blueprint('Quick', python_server_blueprint())
    served = panel.create('served', blueprint='Quick')['id']
    panel.client.post(f'/instances/{served}/start')
    panel.wait_status(served, 'started')
    page = logged_in(browser, panel)
    expect(page.locator('.js-plotly-plot').first).to_be_visible(timeout=15000)
    height, window = page_height(page)
    assert height == window, f'the page is {height - window} px taller than the window'
    page.get_by_role('tab', name='Script').click()
    page.locator('.cm-content').first.click()  # the editor takes focus: nothing jumps
    assert page.evaluate('document.scrollingElement.scrollTop') == 0
    page.set_viewport_size({'width': 390, 'height': 844})
    activate = row(page, served).get_by_role('button', name='Activate')
    expect(activate).to_be_visible()
    expect(activate).to_have_class(re.compile('bg-primary'))  # can be pressed: not in the disabled grey
    box = activate.bounding_box()
    assert box is not None and box['x'] + box['width'] <= 390, box
    activate.click()
    expect(row(page, served).get_by_role('button', name='Deactivate')).to_be_visible(timeout=10000)
    monitor = page.locator('.js-plotly-plot').first
    monitor.scroll_into_view_if_needed()
    expect(monitor).to_be_in_viewport()
    width = page.evaluate('document.scrollingElement.scrollWidth')
    assert width <= 390, f'the page is {width} px wide on a 390 px phone'
    page.context.close()


def test_ports_and_urls_are_visible(browser: Browser, panel: Panel) -> None:
    """Shared public ports are marked; the Open URL is a link with a copy button; a takeover
    says who was deactivated."""
    low = int(panel.env['AIKORE_PORT_RANGE'].split('-')[0])
    panel.put_blueprint('Quick', python_server_blueprint())
    ids = [panel.create(name, blueprint='Quick', public_port=low)['id'] for name in ('one', 'two')]
    alone = panel.create('alone', blueprint='Quick', public_port=low + 1)['id']
    for instance_id in ids:
        panel.client.post(f'/instances/{instance_id}/start')
        panel.wait_status(instance_id, 'started')
    page = logged_in(browser, panel)
    shared = row(page, ids[0]).get_by_label('Shared port')
    expect(shared).to_have_attribute('title', re.compile('shared with two'))
    expect(row(page, alone).get_by_label('Shared port')).to_have_count(0)
    row(page, ids[0]).get_by_role('button', name='Activate').click()
    link = row(page, ids[0]).locator('.aikore-url a')
    expect(link).to_have_attribute('href', re.compile(f':{low}/$'), timeout=10000)
    expect(row(page, ids[0]).get_by_role('button', name='Copy the link')).to_be_visible()
    row(page, ids[1]).get_by_role('button', name='Activate').click()
    page.get_by_role('button', name='Take over').click()
    expect(page.get_by_text(f'two is on public port {low}; one was deactivated')).to_be_visible(timeout=10000)
    page.context.close()


def test_logs_show_a_separator_between_runs(browser: Browser, panel: Panel) -> None:
    """A restart keeps the previous run's text in the Logs view, under a line that says which
    run began and when; the log API's text of the new run starts with the same line."""
    panel.put_blueprint('Quick', python_server_blueprint())
    served = panel.create('twice', blueprint='Quick')['id']
    panel.client.post(f'/instances/{served}/start')
    panel.wait_status(served, 'started')
    page = logged_in(browser, panel)
    action(page, served, 'article').click()
    rows = page.locator('.xterm-rows')
    expect(rows).to_contain_text('run 1 started', timeout=10000)
    expect(rows).to_contain_text('serving')
    panel.client.post(f'/instances/{served}/restart')
    expect(rows).to_contain_text(re.compile(r'──── run 2 started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ────'), timeout=20000)
    expect(rows).to_contain_text('run 1 started')  # the first run's text stays above the separator
    panel.wait_status(served, 'started')
    text = panel.client.get(f'/instances/{served}/logs').json()['text']
    assert text.startswith('──── run 2 started ') and 'booting twice' in text, text
    page.context.close()
    assert errors_logged(panel) == []


# Elements of the table cut short: text wider than the box that shows it, a select narrower
# than its widest option and its arrow. The Open URL
# is elided on purpose (its title and the copy button give it whole).
CUT = """() => {
  const cut = [];
  for (const el of document.querySelectorAll('.aikore-grid th, .aikore-grid td, .aikore-grid td *')) {
    if (!el.offsetParent || el.closest('.aikore-url')) continue;  // hidden; the Open URL is elided on purpose
    if (el.tagName === 'OPTION') continue;
    if (el.tagName === 'SELECT') {
      const style = getComputedStyle(el);
      const pen = (window.__pen = window.__pen || document.createElement('canvas').getContext('2d'));
      pen.font = style.font;
      const widest = Math.max(...[...el.options].map((option) => pen.measureText(option.text).width));
      const needed = widest + parseFloat(style.paddingLeft) + parseFloat(style.paddingRight) + 14;  // + the arrow
      if (el.clientWidth < needed) cut.push(`${el.ariaLabel} select ${el.clientWidth} < ${Math.ceil(needed)}`);
    } else if (el.scrollWidth > el.clientWidth + 1) {
      const what = el.ariaLabel || el.textContent.trim().slice(0, 30);
      cut.push(`${el.tagName} ${what} ${el.scrollWidth} > ${el.clientWidth}`);
    }
  }
  const middle = document.querySelector('.aikore-grid .q-table__middle');
  if (middle.scrollWidth > middle.clientWidth) cut.push(`table ${middle.scrollWidth} > ${middle.clientWidth}`);
  return cut;
}"""


def test_access_and_names_are_shown_whole(browser: Browser, panel: Panel) -> None:
    """At a desktop's 1280 px the Access choice ("Subdomain"), the names and every cell show
    their whole text, and the table needs no sideways scrolling; on a phone neither."""
    panel.put_blueprint('Quick', python_server_blueprint())
    ids = [
        panel.create('sub-app', blueprint='Quick', access_pattern='subdomain')['id'],
        panel.create('a-rather-long-instance-name', blueprint='Quick', access_pattern='path')['id'],
        panel.create('plain', blueprint='Quick')['id'],
    ]
    for instance_id in ids:
        panel.client.post(f'/instances/{instance_id}/start')
    for instance_id in ids:
        panel.wait_status(instance_id, 'started')
    page = logged_in(browser, panel)
    access = row(page, ids[0]).get_by_label('Access')
    expect(access).to_have_value('subdomain')
    expect(row(page, ids[0]).locator('.aikore-url a')).to_be_visible()
    assert page.evaluate(CUT) == []
    assert row(page, ids[1]).get_by_label('Name').input_value() == 'a-rather-long-instance-name'
    page.set_viewport_size({'width': 390, 'height': 844})
    expect(access).to_be_hidden()  # a phone shows name, status, port and actions
    cut = page.evaluate(CUT)
    assert all(text.startswith('INPUT Name') for text in cut), cut  # names shorten there, nothing else
    page.context.close()


def test_inline_edits_in_the_browser(browser: Browser, panel: Panel) -> None:
    """Typing in a row's fields, ticking a box and choosing a policy make a draft with an Update
    button; Update saves them all; a click on a field picks the row (one listener each on the
    table, not one per control)."""
    first = panel.create('first')['id']
    second = panel.create('second')['id']
    page = logged_in(browser, panel)
    edited = row(page, second)
    edited.get_by_label('Name').fill('renamed')
    edited.get_by_label('GPUs').fill('1')
    edited.get_by_label('Start with the panel').check()
    edited.get_by_label('Restart policy').select_option('on-failure')
    expect(edited).to_have_class(re.compile('aikore-selected'))  # the click on a field picked the row
    expect(row(page, first).get_by_role('button', name='Update')).to_have_count(0)
    edited.get_by_role('button', name='Update').click()
    expect(page.get_by_text('renamed updated')).to_be_visible(timeout=10000)
    expect(edited.get_by_role('button', name='Update')).to_have_count(0)
    saved = panel.instance(second)
    assert (saved['name'], saved['gpu_ids'], saved['autostart'], saved['restart_policy']) == (
        'renamed',
        [1],
        True,
        'on-failure',
    )
    edited.get_by_label('Name').fill('renamed')  # back to the stored value: no draft left
    expect(edited.get_by_role('button', name='Update')).to_have_count(0)
    port, stored = edited.get_by_label('Public port'), saved['public_port']
    port.fill(str(stored + 2))
    expect(edited.get_by_role('button', name='Update')).to_be_visible()
    port.press('Escape')  # drops the draft, as Revert: the stored port is back
    expect(edited.get_by_role('button', name='Update')).to_have_count(0)
    expect(port).to_have_value(str(stored))
    port.fill(str(stored + 1))
    port.press('Enter')  # saves, as Update
    expect(edited.get_by_role('button', name='Update')).to_have_count(0, timeout=10000)
    wait_for(lambda: panel.instance(second)['public_port'] == stored + 1, what='the port saved by Enter')
    page.context.close()
    assert errors_logged(panel) == []


def test_many_rows_render_on_scroll(browser: Browser, panel: Panel) -> None:
    """With more instances than fit, the first screen renders only some rows (virtual scrolling);
    scrolled to the end, the last rows appear and answer clicks like the first."""
    ids = [panel.create(f'inst-{n:02d}')['id'] for n in range(40)]
    page = logged_in(browser, panel)
    expect(page.locator('.aikore-grid[data-count="40"]')).to_be_visible()
    expect(row(page, ids[0]).locator('.q-badge')).to_have_text('stopped')
    assert 0 < page.locator('.aikore-grid tr[data-id]').count() < 40
    assert page.evaluate("document.querySelector('.aikore-grid .q-table__middle').scrollTop") == 0
    page.evaluate("(m => m.scrollTop = m.scrollHeight)(document.querySelector('.aikore-grid .q-table__middle'))")
    last = row(page, ids[-1])
    expect(last.get_by_label('Name')).to_have_value('inst-39', timeout=10000)
    action(page, ids[-1], 'code').click()
    expect(page.get_by_text('Script · inst-39 · launch.sh')).to_be_visible(timeout=10000)
    expect(last).to_have_class(re.compile('aikore-selected'))
    page.context.close()
    assert errors_logged(panel) == []


def test_row_menu_opens_once_and_stays_closed(browser: Browser, panel: Panel) -> None:
    """A row's "More actions" menu: another row's opens right after it closed; a menu whose row scrolled
    away does not open again by itself when the row comes back."""
    ids = [panel.create(f'menu-{n:02d}')['id'] for n in range(40)]
    page = logged_in(browser, panel)
    expect(page.locator('.aikore-grid[data-count="40"]')).to_be_visible()
    menu = page.locator('.q-menu')
    row(page, ids[0]).get_by_label('More actions').click()
    expect(menu.get_by_text('Clone…')).to_be_visible()
    page.keyboard.press('Escape')  # the first closes (its hide comes after its animation) ...
    row(page, ids[1]).get_by_label('More actions').click()  # ... and does not close the second
    expect(menu).to_have_count(1, timeout=10000)
    expect(menu.get_by_text('Clone…')).to_be_visible()
    middle = "document.querySelector('.aikore-grid .q-table__middle')"
    page.evaluate(f'(m => m.scrollTop = m.scrollHeight)({middle})')
    expect(row(page, ids[-1]).get_by_label('Name')).to_have_value('menu-39', timeout=10000)
    expect(row(page, ids[1])).to_have_count(0)
    page.evaluate(f'(m => m.scrollTop = 0)({middle})')
    expect(row(page, ids[1]).get_by_label('Name')).to_have_value('menu-01', timeout=10000)
    expect(menu).to_have_count(0)
    page.context.close()
    assert errors_logged(panel) == []


FIT_JS = """() => [...document.querySelectorAll('.xterm')].filter(x => x.offsetWidth > 0).map(x => {
    const screen = x.querySelector('.xterm-screen').getBoundingClientRect().width;
    let panel = x.closest('.q-tab-panel');
    return {xterm: x.getBoundingClientRect().width, screen, panelScroll: panel.scrollWidth - panel.clientWidth};
})"""


def fits(page: Page) -> dict[str, float]:
    """The shown xterm's box, its drawn screen, and how far its tab panel scrolls sideways."""
    (shown,) = page.evaluate(FIT_JS)
    return dict(shown)


def test_terminals_fit_a_phone_and_follow_the_window(browser: Browser, panel: Panel) -> None:
    instance = panel.create('wide')
    log = log_path(panel.data_dir / 'instances' / 'wide')
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(''.join(f'line {n} ' + 'x' * 150 + f' end-{n}\n' for n in range(30)))
    page = logged_in(browser, panel, 390, 844)
    action(page, instance['id'], 'article').click()
    expect(page.get_by_text('Logs · wide')).to_be_visible(timeout=10000)
    expect(page.locator('.xterm-rows').first).to_contain_text('end-29', timeout=10000)  # wrapped, not cut off

    def fitted(width: int) -> None:
        wait_for(lambda: 0 <= fits(page)['xterm'] - fits(page)['screen'] < 40, what=f'the xterm fitted at {width} px')
        assert fits(page)['panelScroll'] == 0, fits(page)
        assert page.evaluate('document.scrollingElement.scrollWidth') <= width

    fitted(390)
    page.set_viewport_size({'width': 1280, 'height': 800})  # the window grows: the columns follow
    fitted(1280)
    page.set_viewport_size({'width': 390, 'height': 844})
    fitted(390)
    action(page, instance['id'], 'terminal').click()
    expect(page.get_by_text('Terminal · wide')).to_be_visible(timeout=10000)
    fitted(390)
    page.context.close()
    assert errors_logged(panel) == []
