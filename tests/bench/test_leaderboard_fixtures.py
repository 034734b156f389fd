"""The leaderboards of committed sweep and run folders (``fixtures/leaderboards``: trial records and run
metrics of real runs) stay byte for byte what they were: markdown and CSV, from the sweep's records and
from the runs' own metrics. ``python tests/bench/test_leaderboard_fixtures.py`` rewrites the expected files
(after a change that is meant to change them)."""

from pathlib import Path

import pytest

from mrfbench.aggregation import build_leaderboard, csv_columns

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboards"
FOLDERS = ("copula-sweep", "copula-runs", "mnist3-runs")


def rendered(folder: str) -> dict[str, str]:
    board = build_leaderboard(FIXTURES / folder)
    return {"leaderboard.md": board.markdown, "leaderboard.csv": csv_columns(board.board, board.spec).to_csv(index=False)}


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_committed_folder_renders_its_committed_leaderboard(folder):
    for name, text in rendered(folder).items():
        assert text == (FIXTURES / "expected" / folder / name).read_text(), f"{folder}/{name} changed"


if __name__ == "__main__":
    for folder in FOLDERS:
        for name, text in rendered(folder).items():
            (FIXTURES / "expected" / folder).mkdir(parents=True, exist_ok=True)
            (FIXTURES / "expected" / folder / name).write_text(text)
