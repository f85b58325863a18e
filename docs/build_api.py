"""Write docs/api.md from the public docstrings: ``python docs/build_api.py``.

``tests/test_docs.py`` checks that the committed page is up to date.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import skbert

PAGE = Path(__file__).with_name("api.md")


def render() -> str:
    parts = [
        "# API reference\n",
        "Generated from the docstrings by `docs/build_api.py`.\n",
    ]
    for name in skbert.__all__:
        obj = getattr(skbert, name)
        if not inspect.isclass(obj):
            continue
        parts.append(f"## `skbert.{name}`\n")
        parts.append("```text\n" + inspect.getdoc(obj) + "\n```\n")
        for method_name, method in inspect.getmembers(obj, inspect.isfunction):
            if method_name.startswith("_") or not method.__module__.startswith(
                "skbert"
            ):
                continue
            doc = inspect.getdoc(method)
            if doc:
                signature = inspect.signature(method)
                parts.append(f"### `{name}.{method_name}{signature}`\n")
                parts.append("```text\n" + doc + "\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
