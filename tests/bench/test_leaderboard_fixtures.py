"""The leaderboards of committed sweep and run folders (``fixtures/leaderboards``: trial records and run
metrics of real runs) stay what they were: the markdown byte for byte, the CSV cell for cell (its numbers
to 1e-9 relative: the t intervals and Welch's tests behind them differ in their last digits between
SciPy releases), from the sweep's records and from the runs' own metrics.
``python tests/bench/test_leaderboard_fixtures.py`` rewrites the expected files (after a change that is meant
to change them)."""

import io
from pathlib import Path

import pandas as pd
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
        expected = (FIXTURES / "expected" / folder / name).read_text()
        if name.endswith(".md"):
            assert text == expected, f"{folder}/{name} changed"
        else:
            pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(text)), pd.read_csv(io.StringIO(expected)),
                                          check_exact=False, rtol=1e-9, obj=f"{folder}/{name}")


if __name__ == "__main__":
    for folder in FOLDERS:
        for name, text in rendered(folder).items():
            (FIXTURES / "expected" / folder).mkdir(parents=True, exist_ok=True)
            (FIXTURES / "expected" / folder / name).write_text(text)
