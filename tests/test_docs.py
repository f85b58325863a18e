import doctest
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import skbert

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
ESTIMATORS = [getattr(skbert, name) for name in skbert.__all__ if name[0].isupper()]


def test_readme_opens_with_the_two_commands():
    head = "\n".join(README.splitlines()[:10])
    assert "make demo" in head and "make test" in head


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_blocks_run(index):
    exec(compile(PYTHON_BLOCKS[index], f"README.md block {index}", "exec"), {})


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_every_init_parameter_is_documented(estimator):
    doc = inspect.getdoc(estimator)
    section = doc.split("Parameters\n----------")[1].split("Attributes\n----------")[0]
    documented = set(re.findall(r"^(\w+) :", section, flags=re.M))
    parameters = set(inspect.signature(estimator.__init__).parameters) - {"self"}
    assert parameters == documented


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_docstring_examples_run(estimator):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(estimator, estimator.__name__, globs={})
    assert any(test.examples for test in tests), "no Examples section"
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_api_page_is_up_to_date():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_api", ROOT / "docs/build_api.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs/api.md").read_text() == module.render(), (
        "docs/api.md is stale; run python docs/build_api.py"
    )


def test_word_vectors_bank_example_prints_what_the_page_shows(capsys):
    # docs/word_vectors.md shows the first python block's output in the next block
    page = (ROOT / "docs/word_vectors.md").read_text()
    code, shown = re.findall(r"```python\n(.*?)```\n.*?```\n(.*?)```", page, re.S)[0]
    exec(compile(code, "docs/word_vectors.md block 0", "exec"), {})
    assert capsys.readouterr().out == shown


def _guide_section_blocks(title: str) -> list[str]:
    guide = (ROOT / "docs/user_guide.md").read_text()
    section = guide.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_guides_recipes_for_other_libraries_run_and_match_encode():
    from sentence_transformers import SentenceTransformer

    from skbert._model import bundled_model_path

    (block,) = _guide_section_blocks("Coming from another library")
    namespace: dict = {}
    exec(compile(block, "user_guide.md, other libraries", "exec"), namespace)
    st = SentenceTransformer(str(bundled_model_path()), device="cpu")
    reference = st.encode(
        namespace["texts"], truncate_dim=64, normalize_embeddings=True
    )
    np.testing.assert_allclose(namespace["X"], reference, atol=1e-6)
    # the table's token_embeddings row
    from skbert import BertWordVectorizer

    tokens = BertWordVectorizer(layers=-1).fit().transform_tokens(namespace["texts"])
    per_text = st.encode(namespace["texts"], output_value="token_embeddings")
    for i, expected in enumerate(per_text):
        rows = tokens[tokens["sample"] == i].iloc[:, 7:].to_numpy()
        np.testing.assert_allclose(rows, expected.numpy(), atol=1e-5)
