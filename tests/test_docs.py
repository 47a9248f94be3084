"""The documentation runs: the README's "Bring your own pieces" examples and the docstring examples.

The README's python blocks of that section run in order in one namespace; each
``print(...)  # expected`` line's printed value must equal the comment. The
``>>>`` examples in the docstrings of the functions users call first run with
``doctest``.
"""
import contextlib
import doctest
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _section_blocks(title: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_readme_bring_your_own_pieces_examples_run_and_print_what_they_say():
    blocks = _section_blocks("Bring your own pieces")
    assert len(blocks) >= 4
    namespace: dict = {}
    checked = 0
    for block in blocks:
        pending: list[str] = []
        for line in block.splitlines():
            m = re.match(r"print\((.*)\)\s+# (.*)$", line)
            if not m:
                pending.append(line)
                continue
            exec(compile("\n".join(pending), "README.md", "exec"), namespace)
            pending = []
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(line, "README.md", "exec"), namespace)
            assert out.getvalue().strip() == m.group(2).strip(), line
            checked += 1
        exec(compile("\n".join(pending), "README.md", "exec"), namespace)
    assert checked == 4


@pytest.mark.parametrize("module", ["funcnn.mlp", "funcnn.network", "funcnn.gradcheck", "funcnn.optim.aliases", "funcnn.train"])
def test_docstring_examples(module):
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
