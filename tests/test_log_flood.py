"""A log that grows faster than a view can show: the view gets a bounded amount of text per
poll and a marker that says how many lines were skipped; every line is either shown or counted."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from app.services.consoles.log_stream import LIVE_BYTES, POLL_SECONDS, LogStreams, LogText
from tests.helpers import wait_until

MARKER = re.compile(r'… (\d+) lines? skipped')


def log_file(tmp_path: Path) -> Path:
    path = tmp_path / 'instances' / 'flood' / 'logs' / 'output.log'
    path.parent.mkdir(parents=True)
    path.write_text('')
    return path


async def test_a_flood_is_skipped_with_a_count(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    streams = LogStreams()
    received: list[LogText] = []
    _replay, unfollow = await streams.follow(path, received.append)
    total = 200_000
    try:
        lines = ''.join(f'line {index:06d} {"x" * 80}\n' for index in range(total))
        await asyncio.to_thread(path.write_text, lines)  # ~18 MB at once
        last = f'line {total - 1:06d}'
        await wait_until(lambda: last in ''.join(item.text for item in received[-3:]), 30, 'the last line')
    finally:
        unfollow()
        streams.shutdown()
    text = ''.join(item.text for item in received)
    skipped = sum(int(count) for count in MARKER.findall(text))
    shown = len(re.findall(r'^line \d{6} x{80}$', text, re.MULTILINE))
    assert skipped > 0, 'no marker: the view was sent the whole flood'
    assert shown + skipped == total, (shown, skipped)
    assert len(text) < 2 * 1024 * 1024, f'the view was sent {len(text)} bytes'
    biggest = max(len(item.text) for item in received)
    assert biggest <= LIVE_BYTES + 1024, biggest


async def test_a_steady_log_is_shown_whole(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    streams = LogStreams()
    received: list[LogText] = []
    _replay, unfollow = await streams.follow(path, received.append)
    try:
        with path.open('a') as handle:
            for batch in range(5):
                handle.write(''.join(f'steady {batch}-{index}\n' for index in range(200)))
                handle.flush()
                seen = f'steady {batch}-199'
                await wait_until(lambda seen=seen: seen in ''.join(item.text for item in received), 10, seen)
    finally:
        unfollow()
        streams.shutdown()
    text = ''.join(item.text for item in received)
    assert 'skipped' not in text
    assert text.count('steady ') == 1000
    assert POLL_SECONDS <= 0.2
