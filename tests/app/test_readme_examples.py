"""Every Python example of the README and of docs/library.md runs as written, with the library's
defaults, and trains above chance (#24: a README snippet once stayed at chance without a warning).

Each ```python block is a complete program; it must leave its test metric in ``accuracy`` (the
examples use scikit-learn's digits: 10 classes, chance .10).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "README.md", ROOT / "docs" / "library.md")
CHANCE = 0.1
SD = 0.0173  # of a guessing classifier's accuracy on 300 test images: sqrt(.1 * .9 / 300)


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


EXAMPLES = [(path, i) for path in DOCS for i in range(len(python_blocks(path)))]


def test_the_readme_shows_a_complete_example() -> None:
    assert python_blocks(ROOT / "README.md")


@pytest.mark.parametrize(("path", "index"), EXAMPLES, ids=[f"{p.name}[{i}]" for p, i in EXAMPLES])
def test_every_example_runs_and_trains_above_chance(path: Path, index: int) -> None:
    code = python_blocks(path)[index]
    namespace: dict[str, object] = {"__name__": f"example_{index}"}
    exec(compile(code, f"{path.name}[{index}]", "exec"), namespace)  # noqa: S102 - our own documentation
    accuracy = namespace["accuracy"]
    assert isinstance(accuracy, float) and accuracy > CHANCE + 3 * SD, accuracy


def test_docs_app_lists_every_run_config_key_with_the_apps_default() -> None:
    import tomllib

    from flwr_ppcdl.app.settings import app_run_config

    rows = re.findall(r"^\| `([a-z-]+)` \| `([^`]*)` \|", (ROOT / "docs" / "app.md").read_text(), flags=re.M)
    documented = dict(rows)
    expected = app_run_config()
    assert set(documented) == set(expected)
    for key, value in expected.items():
        shown = documented[key] if isinstance(value, str) else tomllib.loads(f"v = {documented[key]}")["v"]
        assert shown == value, key
