"""The instance table at the sizes and in the moments a user probe found rough: narrow windows,
unsaved edits, the filter, a restored selection far down the list, messages on a phone
(headless Chromium against a panel subprocess)."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Locator, Page, expect

from tests.helpers import Panel, python_server_blueprint
from tests.test_dashboard_browser import action, errors_logged, logged_in, row

MIDDLE = "document.querySelector('.aikore-grid .q-table__middle')"
# An element's colour and how opaque it is drawn (its opacity times a filter's opacity()).
LOOK = """el => { const style = getComputedStyle(el); const filter = /opacity\\(([\\d.]+)\\)/.exec(style.filter);
  return [style.color, Number(style.opacity) * (filter ? Number(filter[1]) : 1)]; }"""


def hit(page: Page, target: Locator) -> bool:
    """Whether a click at the middle of ``target`` reaches it (nothing drawn over it)."""
    box = target.bounding_box()
    assert box is not None
    x, y = box['x'] + box['width'] / 2, box['y'] + box['height'] / 2
    return bool(target.evaluate('(el, [x, y]) => el.contains(document.elementFromPoint(x, y))', [x, y]))


def test_narrow_windows_keep_the_actions_and_disabled_icons_show(browser: Browser, panel: Panel) -> None:
    panel.put_blueprint('Quick', python_server_blueprint())
    running = panel.create('running-one', blueprint='Quick')['id']
    stopped = panel.create('stopped-one')['id']
    panel.client.post(f'/instances/{running}/start')
    panel.wait_status(running, 'started')
    page = logged_in(browser, panel)
    delete = action(page, running, 'delete')
    restart = action(page, stopped, 'restart_alt')
    expect(delete).to_be_disabled()
    expect(restart).to_be_disabled()
    # A disabled Delete looks like every other disabled action (a dimmed red vanished on dark):
    # the text's colour, clearly dimmed but there.
    assert delete.evaluate(LOOK) == restart.evaluate(LOOK)
    color, alpha = delete.evaluate(LOOK)
    assert color == action(page, running, 'article').evaluate(LOOK)[0] and 0.25 <= alpha <= 0.4, (color, alpha)
    for width, height in ((1024, 768), (768, 1024)):
        page.set_viewport_size({'width': width, 'height': height})
        for instance_id in (running, stopped):
            more = row(page, instance_id).get_by_label('More actions')
            expect(more).to_be_in_viewport()
            assert hit(page, more), f'the actions are off-screen or covered at {width} px'
            assert hit(page, row(page, instance_id).get_by_label('Name'))
        page.evaluate(f'(m => m.scrollLeft = m.scrollWidth)({MIDDLE})')  # the middle columns scroll under them
        assert hit(page, row(page, running).get_by_label('More actions'))
        assert hit(page, row(page, running).get_by_label('Name'))
        page.evaluate(f'(m => m.scrollLeft = 0)({MIDDLE})')
    page.context.close()


def test_row_edits_cover_nothing_and_can_be_reverted(browser: Browser, panel: Panel) -> None:
    edited_id = panel.create('edited')['id']
    page = logged_in(browser, panel)
    edited = row(page, edited_id)
    icons = edited.locator('button.aikore-action')
    before = [box['x'] for box in (icons.nth(i).bounding_box() for i in range(icons.count())) if box]
    edited.get_by_label('Name').fill('edited-more')
    update = edited.get_by_role('button', name='Update')
    expect(update).to_be_visible()
    after = [box['x'] for box in (icons.nth(i).bounding_box() for i in range(icons.count())) if box]
    assert after == before, 'the action icons moved'
    for control in ('Restart policy', 'Access', 'Public port'):
        assert hit(page, edited.get_by_label(control)), f'{control} is covered while a row has changes'
    edited.get_by_role('button', name='Revert').click()
    expect(update).to_have_count(0)
    expect(edited.get_by_label('Name')).to_have_value('edited')
    assert panel.instance(edited_id)['name'] == 'edited'
    # GPUs on a machine without one: saved, with the same warning as the create dialog.
    edited.get_by_label('GPUs').fill('0')
    update.click()
    expect(page.get_by_text(re.compile('edited updated; no GPU is detected here'))).to_be_visible(timeout=10000)
    assert panel.instance(edited_id)['gpu_ids'] == [0]
    page.context.close()
    assert errors_logged(panel) == []


def test_the_filter_counts_and_says_when_nothing_matches(browser: Browser, panel: Panel) -> None:
    for name in ('alpha', 'alpine', 'beta'):
        panel.create(name)
    page = logged_in(browser, panel)
    count = page.locator('.aikore-count')
    expect(count).to_have_text('3 instances')
    page.get_by_label('Filter instances').fill('alp')
    expect(count).to_have_text('2 of 3 instances')
    expect(page.locator('.aikore-no-match')).to_have_count(0)
    page.get_by_label('Filter instances').fill('zzz')
    expect(count).to_have_text('0 of 3 instances')
    expect(page.get_by_text('No instance matches “zzz”')).to_be_visible()
    page.get_by_label('Filter instances').fill('')
    expect(count).to_have_text('3 instances')
    page.context.close()


def test_the_restored_row_is_scrolled_into_view(browser: Browser, panel: Panel) -> None:
    ids = [panel.create(f'inst-{n:02d}')['id'] for n in range(40)]
    page = logged_in(browser, panel)
    page.get_by_label('Filter instances').fill('inst-39')
    action(page, ids[-1], 'code').click()  # the last one, far below the first screen
    expect(page.get_by_text('Script · inst-39 · launch.sh')).to_be_visible(timeout=10000)
    page.reload()
    chosen = page.locator('.aikore-grid tr.aikore-selected')
    expect(chosen.get_by_label('Name')).to_have_value('inst-39', timeout=15000)
    expect(chosen).to_be_in_viewport()
    assert page.evaluate(f'{MIDDLE}.scrollTop') > 0
    page.context.close()


def test_a_phone_keeps_messages_off_the_dialog_buttons(browser: Browser, panel: Panel) -> None:
    goner = panel.create('goner')['id']
    page = logged_in(browser, panel, 390, 844)
    port = row(page, goner).get_by_label('Public port')  # the number shows over Activate
    expect(port).to_have_value(str(panel.instance(goner)['public_port']))
    assert hit(page, port) and hit(page, row(page, goner).get_by_role('button', name='Activate'))
    width = page.evaluate('document.scrollingElement.scrollWidth')
    assert width <= 390, f'the page is {width} px wide on a 390 px phone'
    action(page, goner, 'delete').click()
    page.get_by_role('dialog').get_by_role('button', name='Delete').last.click()
    message = page.get_by_text('goner moved to the trash')
    expect(message).to_be_visible(timeout=10000)
    page.get_by_role('button', name='New instance').click()
    create = page.get_by_role('dialog').get_by_role('button', name='Create')
    expect(create).to_be_visible()
    expect(message).to_be_visible()  # still there, and in the top corner
    box = message.bounding_box()
    assert box is not None and box['y'] < 844 / 2, box
    create.scroll_into_view_if_needed()
    assert hit(page, create), 'a message covers the Create button'
    page.context.close()


# The boxes of the monitor chart's time labels and of its legend that overlap (Plotly's SVG).
LABELS_ON_LEGEND = """() => {
  const plot = document.querySelector('.js-plotly-plot');
  const legend = plot.querySelector('.legend').getBoundingClientRect();
  return [...plot.querySelectorAll('.xtick text')].map(t => t.getBoundingClientRect())
    .filter(b => b.width && b.left < legend.right && legend.left < b.right)
    .filter(b => b.top < legend.bottom && legend.top < b.bottom)
    .length;
}"""


def test_the_monitor_labels_keep_off_the_legend(browser: Browser, panel: Panel) -> None:
    page = logged_in(browser, panel)
    for width, height in ((1280, 800), (1024, 768), (768, 1024)):
        page.set_viewport_size({'width': width, 'height': height})
        expect(page.locator('.js-plotly-plot .legend').first).to_be_visible(timeout=15000)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .xtick text').length > 1")
        assert page.evaluate(LABELS_ON_LEGEND) == 0, f'time labels over the legend at {width} px'
    page.context.close()


def test_a_tool_shown_the_first_time_on_a_slow_browser_loses_nothing(browser: Browser, panel: Panel) -> None:
    """A tab's content is made when it is first shown: the log's replay, written at once, still
    shows (the browser makes the tab before it handles the next message)."""
    panel.put_blueprint('Chatty', python_server_blueprint())
    chatty = panel.create('chatty', blueprint='Chatty')['id']
    panel.client.post(f'/instances/{chatty}/start')
    panel.wait_status(chatty, 'started')
    page = logged_in(browser, panel)
    page.get_by_role('tab', name='Script').click()  # Logs not shown yet: its terminal is not made
    expect(page.locator('.js-plotly-plot').first).to_be_visible(timeout=15000)  # the tools are built
    cdp = page.context.new_cdp_session(page)
    cdp.send('Emulation.setCPUThrottlingRate', {'rate': 8})  # a slow phone's pace
    action(page, chatty, 'article').click()
    expect(page.locator('.q-tab-panel:visible .xterm-rows')).to_contain_text('booting chatty', timeout=20000)
    page.context.close()
