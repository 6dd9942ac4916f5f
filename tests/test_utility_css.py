"""The pages' utility stylesheet is made from the source as it is now (``python -m tests.utility_css``)."""

from __future__ import annotations

from app.pages.utility_css import CSS_FILE
from tests.utility_css import generate


def test_the_utility_stylesheet_is_up_to_date() -> None:
    assert CSS_FILE.read_text(encoding='utf-8') == generate(), (
        'app/pages/utilities.css is out of date (a utility class was added or removed): '
        'run `python -m tests.utility_css` and commit the file'
    )
