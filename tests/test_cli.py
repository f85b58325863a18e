"""Tests of the ``skbert`` command line, run in-process with the tiny BERT."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import skbert.cli
from skbert import BertSentenceVectorizer
from skbert.cli import main

TEXTS = [
    "The cat sat.",
    "A dog barked at the bank robber after fishing in the river.",
    "hello world",
    "NA",
    "",
    "new york city, here i want to e mail the sentence",
]


def _run(capsys, *args):
    """Call ``main`` in-process; return the exit status, stdout and stderr."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _expected(tiny_bert, texts, **params):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), **params)
    return vectorizer.fit_transform(texts), vectorizer.get_feature_names_out()


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "texts.csv"
    pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS}).to_csv(path, index=False)
    return path


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_csv_to_npy(tiny_bert, csv_file, tmp_path, capsys):
    out = tmp_path / "vectors.npy"
    status, stdout, stderr = _run(
        capsys, "embed", csv_file, "--output", out, "--model", tiny_bert
    )
    assert status == 0, stderr
    vectors = np.load(out)
    expected, _ = _expected(tiny_bert, TEXTS)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    # One summary line: count, shape, time, throughput, path.
    assert stdout.count("\n") == 1
    assert f"{len(TEXTS)} texts" in stdout
    assert "(6, 32)" in stdout
    assert "texts/s" in stdout
    assert str(out) in stdout
    assert _leftovers(tmp_path) == []


def test_csv_to_parquet_has_feature_names(tiny_bert, csv_file, tmp_path, capsys):
    out = tmp_path / "vectors.parquet"
    status, _, stderr = _run(
        capsys, "embed", csv_file, "-o", out, "--model", tiny_bert, "--column", "text"
    )
    assert status == 0, stderr
    frame = pd.read_parquet(out)
    expected, names = _expected(tiny_bert, TEXTS)
    assert list(frame.columns) == list(names)
    assert names[0] == "bertsentencevectorizer0"
    assert (frame.dtypes == np.float32).all()
    assert np.allclose(frame.to_numpy(), expected, atol=1e-6)


def test_csv_cells_are_read_as_written(tiny_bert, tmp_path, capsys):
    # "NA" stays a text and an empty cell is "", not a missing value: quoted
    # (pandas, Python's csv) or an empty line (spreadsheets), one row each
    path = tmp_path / "texts.csv"
    path.write_text('text\nNA\n""\n\nnull\n007\n', encoding="utf-8")
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(capsys, "embed", path, "-o", out, "--model", tiny_bert)
    assert status == 0, stderr
    expected, _ = _expected(tiny_bert, ["NA", "", "", "null", "007"])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def test_blank_lines_of_a_file_of_several_columns_are_no_rows(
    tiny_bert, tmp_path, capsys
):
    # as pandas reads it: row i of the output stays the row of id i
    path = tmp_path / "texts.csv"
    path.write_text('id,text\n1,first\n\n2,"a, b"\n3,\n\n', encoding="utf-8")
    assert len(pd.read_csv(path)) == 3
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(capsys, "embed", path, "-o", out, "--model", tiny_bert)
    assert status == 0, stderr
    expected, _ = _expected(tiny_bert, ["first", "a, b", ""])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def test_tsv_input(tiny_bert, tmp_path, capsys):
    path = tmp_path / "pairs.tsv"
    # no quoting in TSV: quotes are part of the text, even a lone one
    path.write_text(
        'id\tsentence\n1\tA man, a plan.\n2\tNA\n3\t"Hi" she said\n4\t"open\n5\tx\n',
        encoding="utf-8",
    )
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(
        capsys, "embed", path, "-o", out, "--model", tiny_bert, "--column", "sentence"
    )
    assert status == 0, stderr
    expected, _ = _expected(
        tiny_bert, ["A man, a plan.", "NA", '"Hi" she said', '"open', "x"]
    )
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


@pytest.mark.parametrize(
    "name, content, says",
    [
        ("latin1.txt", "caf\xe9\n".encode("latin-1"), "the file must be UTF-8."),
        ("latin1.csv", "text\ncaf\xe9\n".encode("latin-1"), "must be UTF-8"),
        # where the byte is, not where the decoder's chunk of the file was
        (
            "late.txt",
            b"x" * 40_000 + b"\nab\xe9\n",
            "byte 0xe9 at line 2 (byte 40003); the file must be UTF-8.",
        ),
        (  # CR line ends, a CRLF across the 1 MiB chunks, a cut-off last character
            "cr.txt",
            (b"y" * 99 + b"\r") * 30_000 + b"\r\n\xe9",
            "byte 0xe9 at line 30002 (byte 3000002); the file must be UTF-8.",
        ),
        ("bad.csv", b'text\n"an open quote\n', "EOF inside string"),
        ("bad.parquet", b"PAR1 not really", "as .parquet"),
        ("empty.csv", b"", "No columns to parse"),
    ],
)
def test_an_unreadable_input_is_named(tiny_bert, tmp_path, capsys, name, content, says):
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(capsys, "embed", path, "-o", out, "--model", tiny_bert)
    assert status == 1
    assert stderr.startswith(f"skbert: error: cannot read {str(path)!r}")
    assert says in stderr and len(stderr.splitlines()) == 1
    assert not out.exists()


def test_txt_one_text_per_line(tiny_bert, tmp_path, capsys):
    path = tmp_path / "texts.txt"
    # CRLF line ends, a blank line kept as "", no newline after the last line.
    path.write_bytes(b"The cat sat.\r\n\r\n  hello world  \r\nA dog barked.")
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(capsys, "embed", path, "-o", out, "--model", tiny_bert)
    assert status == 0, stderr
    vectors = np.load(out)
    expected, _ = _expected(
        tiny_bert, ["The cat sat.", "", "  hello world  ", "A dog barked."]
    )
    assert vectors.shape == (4, 32)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_txt_trailing_newline_adds_no_row(tiny_bert, tmp_path, capsys):
    path = tmp_path / "texts.txt"
    path.write_text("one\ntwo\n\nfour\n", encoding="utf-8")
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(capsys, "embed", path, "-o", out, "--model", tiny_bert)
    assert status == 0, stderr
    assert np.load(out).shape == (4, 32)


def _stdin(monkeypatch, data: bytes):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_dash_reads_standard_input_as_txt(tiny_bert, tmp_path, capsys, monkeypatch):
    # as a .txt file: CRLF and LF, a blank line kept as "", no final newline
    _stdin(monkeypatch, b"The cat sat.\r\n\r\n  hello world  \nA dog barked.")
    out = tmp_path / "vectors.npy"
    status, stdout, stderr = _run(capsys, "embed", "-", "-o", out, "--model", tiny_bert)
    assert status == 0, stderr
    assert stdout.startswith("Embedded 4 texts")
    expected, _ = _expected(
        tiny_bert, ["The cat sat.", "", "  hello world  ", "A dog barked."]
    )
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def test_standard_input_that_is_not_utf8_is_named(
    tiny_bert, tmp_path, capsys, monkeypatch
):
    _stdin(monkeypatch, b"fine\r\nstill fine\n\xffnot\n")
    status, _, stderr = _run(
        capsys, "embed", "-", "-o", tmp_path / "o.npy", "--model", tiny_bert
    )
    assert status == 1
    assert stderr == (
        "skbert: error: cannot read standard input as .txt: byte 0xff at line 3 "
        "(byte 17); the input must be UTF-8.\n"
    )
    assert not (tmp_path / "o.npy").exists()


def test_column_of_standard_input_is_a_usage_error(tmp_path, capsys, monkeypatch):
    _stdin(monkeypatch, b"a\nb\n")
    status, _, stderr = _run(
        capsys, "embed", "-", "-o", tmp_path / "o.npy", "--column", "body"
    )
    assert status == 2
    assert "standard input has one text per line" in stderr


def test_a_file_named_dash_is_not_standard_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").write_text("a\n")
    status, _, stderr = _run(capsys, "embed", "./-", "-o", "o.npy")
    assert status == 2 and "unknown input extension '(none)'" in stderr


def test_parquet_input_and_missing_texts(tiny_bert, tmp_path, capsys):
    path = tmp_path / "texts.parquet"
    pd.DataFrame({"body": ["The cat sat.", None, "hello world"]}).to_parquet(path)
    out = tmp_path / "vectors.npy"

    status, stdout, stderr = _run(
        capsys, "embed", path, "-o", out, "--model", tiny_bert, "--column", "body"
    )
    assert status == 1
    assert stdout == ""
    assert stderr == (
        "skbert: error: column 'body' contains 1 missing text(s) (null cells, rows "
        "counted from 0) at position(s) 1; drop or fill them first, or pass "
        "--handle-missing empty to embed them as ''.\n"
    )
    assert not out.exists()

    status, _, stderr = _run(
        capsys,
        "embed",
        path,
        "-o",
        out,
        "--model",
        tiny_bert,
        "--column",
        "body",
        "--handle-missing",
        "empty",
    )
    assert status == 0, stderr
    expected, _ = _expected(tiny_bert, ["The cat sat.", "", "hello world"])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


@pytest.mark.parametrize(
    "args, params",
    [
        (["--layers", "-1", "-2"], {"layers": [-1, -2]}),
        (
            ["--layers", "-1", "-2", "--layer-combine", "concat"],
            {"layers": [-1, -2], "layer_combine": "concat"},
        ),
        (["--layers", "0", "--layer-combine", "sum"], {"layers": 0}),
        (
            ["--pooling", "mean_max", "--exclude-special-tokens", "--normalize"],
            {
                "pooling": "mean_max",
                "include_special_tokens": False,
                "normalize": True,
            },
        ),
        (
            ["--pooling", "cls", "--max-length", "6", "--batch-size", "2"],
            {"pooling": "cls", "max_length": 6, "batch_size": 2},
        ),
        (
            ["--batch-size", "auto", "--max-batch-tokens", "5"],
            {"batch_size": "auto", "max_batch_tokens": 5},
        ),
        (
            ["--batch-size", "2", "--max-batch-tokens", "none"],
            {"batch_size": 2, "max_batch_tokens": None},
        ),
        (["--device", "cpu", "--dtype", "float32", "--no-progress"], {}),
        (["--prompt", "query: "], {"prompt": "query: "}),
        (["--prompt", ""], {"prompt": ""}),
        (["--no-dense"], {"dense": False}),
        (["--batch-size", "AUTO", "--max-batch-tokens", "Auto"], {}),
    ],
)
@pytest.mark.filterwarnings("ignore:.*truncated:UserWarning")
def test_options_reach_the_estimator(
    tiny_bert, csv_file, tmp_path, capsys, args, params
):
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(
        capsys, "embed", csv_file, "-o", out, "--model", tiny_bert, *args
    )
    assert status == 0, stderr
    expected, _ = _expected(tiny_bert, TEXTS, **params)
    vectors = np.load(out)
    assert vectors.shape == expected.shape
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_concat_width(tiny_bert, csv_file, tmp_path, capsys):
    out = tmp_path / "vectors.parquet"
    status, stdout, stderr = _run(
        capsys,
        "embed",
        csv_file,
        "-o",
        out,
        "--model",
        tiny_bert,
        "--layers",
        "-1",
        "-2",
        "-3",
        "--layer-combine",
        "concat",
    )
    assert status == 0, stderr
    assert pd.read_parquet(out).shape == (len(TEXTS), 3 * 32)
    assert "(6, 96)" in stdout


def test_warnings_are_one_line_each(tiny_bert, csv_file, tmp_path, capsys):
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(
        capsys, "embed", csv_file, "-o", out, "--model", tiny_bert, "--max-length", "4"
    )
    assert status == 0
    warning_lines = [
        line for line in stderr.splitlines() if line.startswith("skbert: warning:")
    ]
    assert len(warning_lines) == 1
    assert "truncated" in warning_lines[0]


@pytest.mark.parametrize(
    "args, says",
    [
        (["--max-length", "4"], "longer than --max-length 4 tokens"),
        (
            ["--pooling", "cls", "--exclude-special-tokens"],
            "--exclude-special-tokens will not be used since --pooling cls always",
        ),
        (["--max-length", "1"], "use --max-length >= 2."),
    ],
)
def test_messages_name_options_not_parameters(
    tiny_bert, csv_file, tmp_path, capsys, args, says
):
    _, _, stderr = _run(
        capsys, "embed", csv_file, "-o", tmp_path / "o.npy", "--model", tiny_bert, *args
    )
    assert says in stderr
    for name in ("max_length", "include_special_tokens", "pooling="):
        assert name not in stderr


def test_progress_bar_on_request(tiny_bert, csv_file, tmp_path, capsys):
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(capsys, "embed", csv_file, "-o", out, "--model", tiny_bert)
    assert status == 0
    assert "text/s" not in stderr  # stderr is not a terminal
    status, _, stderr = _run(
        capsys, "embed", csv_file, "-o", out, "--model", tiny_bert, "--progress"
    )
    assert status == 0
    assert "text/s" in stderr


def test_one_progress_bar_for_the_whole_file(
    tiny_bert, tmp_path, capsys, monkeypatch, bar_counts
):
    monkeypatch.setattr(skbert.cli, "CHUNK_SIZE", 2)
    path = tmp_path / "texts.txt"
    path.write_text("the cat sat on the bank\na dog\nthe robber was seen\nhi\nyes\n")
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(
        capsys, "embed", path, "-o", out, "--model", tiny_bert, "--progress"
    )
    assert status == 0, stderr
    counts = bar_counts(stderr)
    assert {total for _, total in counts} == {5}  # not one bar per chunk of 2
    assert counts[-1] == (5, 5)


def test_existing_output_is_replaced(tiny_bert, csv_file, tmp_path, capsys):
    out = tmp_path / "vectors.npy"
    out.write_bytes(b"old")
    status, _, _ = _run(capsys, "embed", csv_file, "-o", out, "--model", tiny_bert)
    assert status == 0
    assert np.load(out).shape == (len(TEXTS), 32)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "args, status, message",
    [
        (
            ["{d}/nope.csv", "-o", "{d}/o.npy", "--model", "{m}"],
            2,
            "input file '.*nope.csv' does not exist",
        ),
        (
            ["{d}/texts.csv", "-o", "{d}/o.npy", "--column", "x"],
            2,
            r"has no column 'x'; its columns are \['id', 'text'\]",
        ),
        (
            ["{d}/texts.parquet", "-o", "{d}/o.npy", "--column", "x"],
            2,
            r"has no column 'x'; its columns are \['text'\]",
        ),
        (
            ["{d}/texts.json", "-o", "{d}/o.npy"],
            2,
            "unknown input extension '.json'; use one of .csv, .tsv, .parquet, .txt",
        ),
        (
            ["{d}/texts.csv", "-o", "{d}/o.csv"],
            2,
            "unknown output extension '.csv'; use one of .npy, .parquet",
        ),
        (
            ["{d}/texts.csv", "-o", "{d}/missing/o.npy"],
            2,
            "directory '.*missing' does not exist",
        ),
        (
            ["{d}/texts.csv", "-o", "{d}/o.npy", "--pooling", "avg"],
            2,
            "argument --pooling: invalid choice: 'avg'",
        ),
        (
            ["{d}/texts.csv", "-o", "{d}/o.npy", "--batch-size", "x"],
            2,
            "argument --batch-size: expected 'auto' or an int >= 1, got 'x'",
        ),
        (
            ["{d}/texts.csv"],
            2,
            "the following arguments are required: -o/--output",
        ),
        (
            ["{d}/texts.csv", "-o", "{d}/o.npy", "--model", "{d}/no-model"],
            1,
            "Could not load model '.*no-model': no such directory",
        ),
        (
            # a bad option value is a usage error, found before the model loads
            ["{d}/texts.csv", "-o", "{d}/o.npy", "--model", "{d}/no-model"]
            + ["--max-length", "0"],
            2,
            "argument --max-length: expected an int >= 1, got '0'",
        ),
        (
            ["{d}/texts.csv", "-o", "{d}/o.npy", "--model", "{d}/no-model"]
            + ["--device", "gpu0"],
            2,
            "--device gpu0 is not a valid torch device",
        ),
    ],
)
def test_errors_are_one_line(tiny_bert, tmp_path, capsys, args, status, message):
    pd.DataFrame({"id": [1], "text": ["a"]}).to_csv(tmp_path / "texts.csv", index=False)
    pd.DataFrame({"text": ["a"]}).to_parquet(tmp_path / "texts.parquet")
    (tmp_path / "texts.json").write_text("[]")
    args = [arg.format(d=tmp_path, m=tiny_bert) for arg in args]
    got_status, stdout, stderr = _run(capsys, "embed", *args)
    assert got_status == status
    assert stdout == ""
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("skbert: error: ")
    assert re.search(message, stderr), stderr
    assert not (tmp_path / "o.npy").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="needs a machine without CUDA"
)
def test_a_device_this_machine_lacks_is_a_failure_not_a_usage_error(
    tiny_bert, csv_file, tmp_path, capsys
):
    out = tmp_path / "o.npy"
    status, stdout, stderr = _run(
        capsys, "embed", csv_file, "-o", out, "--model", tiny_bert, "--device", "cuda"
    )
    assert status == 1 and stdout == ""
    assert stderr.startswith("skbert: error: --device cuda was requested but")
    assert stderr.rstrip().endswith("use --device cpu or auto.")
    assert not out.exists()


def test_error_after_loading_is_reported_once(tiny_bert, csv_file, tmp_path, capsys):
    out = tmp_path / "o.npy"
    status, stdout, stderr = _run(
        capsys, "embed", csv_file, "-o", out, "--model", tiny_bert, "--layers", "7"
    )
    assert status == 1
    assert stdout == ""
    errors = [line for line in stderr.splitlines() if line.startswith("skbert:")]
    assert errors == [
        "skbert: error: --layers 7 is out of range for a model with 3 hidden-state "
        "outputs; use indices in [-3, 2]."
    ]
    assert "Traceback" not in stderr
    assert not out.exists()


def test_help_exits_zero(capsys):
    status, stdout, _ = _run(capsys, "embed", "--help")
    assert status == 0
    for option in ["--column", "--layers", "--layer-combine", "--pooling"]:
        assert option in stdout


def test_python_dash_m(tiny_bert, csv_file, tmp_path):
    out = tmp_path / "vectors.npy"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "skbert", "embed", str(csv_file)]
    result = subprocess.run(
        [*command, "-o", str(out), "--model", str(tiny_bert)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Embedded {len(TEXTS)} texts")
    assert np.load(out).shape == (len(TEXTS), 32)

    result = subprocess.run(
        [*command, "-o", str(tmp_path / "o.txt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("skbert: error: cannot write")
    assert result.stderr.count("\n") == 1


def test_texts_piped_to_the_command(tiny_bert, tmp_path):
    out = tmp_path / "vectors.npy"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "skbert", "embed", "-", "-o", str(out)]
        + ["--model", str(tiny_bert)],
        input=b"hello world\nthe bank of the river\n",
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    expected, _ = _expected(tiny_bert, ["hello world", "the bank of the river"])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def test_cache_directory_resumes_an_interrupted_run(
    tiny_bert, csv_file, tmp_path, capsys, monkeypatch
):
    import skbert._encode

    states = tmp_path / "states"
    out = tmp_path / "vectors.npy"
    forward = skbert._encode.forward_hidden_states
    rows = []

    def counting(loaded, inputs, layers):
        rows.append(inputs["input_ids"].shape[0])
        if interrupt and len(rows) == 3:
            raise KeyboardInterrupt
        return forward(loaded, inputs, layers)

    interrupt = True
    monkeypatch.setattr(skbert._encode, "forward_hidden_states", counting)
    args = ["embed", csv_file, "-o", out, "--model", tiny_bert, "--batch-size", "1"]
    status, _, stderr = _run(capsys, *args, "--cache", states)
    assert status == 130 and "interrupted" in stderr
    assert not out.exists()
    interrupt, rows[:] = False, []
    status, _, stderr = _run(capsys, *args, "--cache", states)
    assert status == 0, stderr
    assert len(rows) == len(set(TEXTS)) - 2  # the two finished texts were read back
    expected, _ = _expected(tiny_bert, TEXTS, cache=None)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)


@pytest.mark.parametrize("value", ["0", "-3", "many", "2.5"])
def test_bad_batching_option_is_a_usage_error(csv_file, tmp_path, capsys, value):
    out = tmp_path / "v.npy"
    status, _, stderr = _run(
        capsys, "embed", csv_file, "-o", out, "--max-batch-tokens", value
    )
    assert status == 2
    assert "expected 'auto', 'none' or an int >= 1" in stderr
    assert not out.exists()


def test_pair_pooling_is_not_offered(csv_file, tmp_path, capsys):
    # segment_mean needs pairs, which the command line does not take
    out = tmp_path / "v.npy"
    status, _, stderr = _run(
        capsys, "embed", csv_file, "-o", out, "--pooling", "segment_mean"
    )
    assert status == 2 and "invalid choice: 'segment_mean'" in stderr
    assert not out.exists()


def test_one_truncation_warning_for_the_whole_file(
    tiny_bert, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(skbert.cli, "CHUNK_SIZE", 2)
    path = tmp_path / "texts.txt"
    path.write_text("the cat sat on the bank\na dog\nthe robber was seen\nhi\n")
    out = tmp_path / "vectors.npy"
    status, _, stderr = _run(
        capsys, "embed", path, "-o", out, "--model", tiny_bert, "--max-length", "5"
    )
    assert status == 0, stderr
    warning_lines = [
        line for line in stderr.splitlines() if line.startswith("skbert: warning:")
    ]
    assert warning_lines == [
        "skbert: warning: 2 of 4 texts were longer than --max-length 5 tokens and were "
        "truncated to their first tokens (a text repeated in the file counts once "
        "per chunk of 2 texts)."
    ]


@pytest.mark.parametrize(
    "content, expected",
    [
        # a trailing comma on each row must not shift the columns
        ("text,label\nhello world,1,\ngood day,0,\n", ["hello world", "good day"]),
        # blank lines above the header are not rows; below it, in a file of
        # several columns, neither (as pandas reads it); in a one-column file
        # a blank line is an empty cell
        ("\n\ntext,x\nhello,1\n\nworld,2\n", ["hello", "world"]),
        ("\n\ntext\nhello\n\nworld\n", ["hello", "", "world"]),
        # a delimiter at the end of the header, on some rows only
        ("text,\nhello\nfine,\n", ["hello", "fine"]),
        ("id,text\n1,\n2,b,,\n", ["", "b"]),
        # a column without a name may hold cells
        ("text,label,\nin the bank,0,checked\nx,1\n", ["in the bank", "x"]),
        ('text,""\na,b\nc\n', ["a", "c"]),
    ],
)
def test_csv_rows_stay_in_place(tmp_path, content, expected):
    path = tmp_path / "texts.csv"
    path.write_text(content)
    assert skbert.cli.read_texts(path, "text").tolist() == expected


def test_a_parquet_column_that_was_a_dataframe_index_is_read(tiny_bert, tmp_path):
    path = tmp_path / "texts.parquet"
    frame = pd.DataFrame({"body": ["x", "y"]}, index=pd.Index(["a", "b"], name="text"))
    frame.to_parquet(path)
    assert skbert.cli.read_texts(path, "text").tolist() == ["a", "b"]


def test_output_that_is_the_input_is_a_usage_error(tiny_bert, tmp_path, capsys):
    path = tmp_path / "texts.parquet"
    pd.DataFrame({"text": ["a", "b"]}).to_parquet(path)
    before = path.read_bytes()
    status, _, stderr = _run(capsys, "embed", path, "-o", path, "--model", tiny_bert)
    assert status == 2 and "is the input file" in stderr
    assert path.read_bytes() == before


def test_an_output_that_cannot_be_created_is_found_before_the_model_loads(
    csv_file, tmp_path, capsys
):
    out = tmp_path / ("a" * 260 + ".npy")  # too long for the file system
    status, _, stderr = _run(
        capsys, "embed", csv_file, "-o", out, "--model", tmp_path / "no-model"
    )
    assert status == 2 and stderr.count("\n") == 1
    assert stderr.startswith("skbert: error: cannot write ") and "too long" in stderr
    assert _leftovers(tmp_path) == []


def test_a_damaged_weights_file_is_one_line(tiny_bert, csv_file, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    status, stdout, stderr = _run(
        capsys, "embed", csv_file, "-o", tmp_path / "o.npy", "--model", model
    )
    assert status == 1 and stdout == "" and stderr.count("\n") == 1
    assert "the directory's config, tokenizer or weights could not be read" in stderr


def test_any_other_failure_is_one_line(csv_file, tmp_path, capsys, monkeypatch):
    def broken(path, column, input_format=None):
        raise RuntimeError("something unexpected\nwith a second line")

    monkeypatch.setattr(skbert.cli, "read_texts", broken)
    status, _, stderr = _run(capsys, "embed", csv_file, "-o", tmp_path / "o.npy")
    assert status == 1
    assert stderr == "skbert: error: RuntimeError: something unexpected\n"


def test_ctrl_c_while_the_command_starts_is_not_a_traceback(capsys, monkeypatch):
    # python -m skbert imports the command line (torch, scikit-learn) first
    import runpy
    import types

    class Interrupted(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "skbert.cli", Interrupted("skbert.cli"))
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("skbert", run_name="__main__")
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "skbert: interrupted\n"
    # the installed script runs the same function, not skbert.cli:main, whose
    # module would import numpy before any handler is in place
    import tomllib
    from pathlib import Path

    import skbert.__main__

    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts == {"skbert": "skbert.__main__:run"}
    with pytest.raises(SystemExit) as exit_:
        skbert.__main__.run()
    assert exit_.value.code == 130


@pytest.mark.parametrize(
    "name, said", [("SIGTERM", "terminated"), ("SIGHUP", "hung up")]
)
def test_a_stop_signal_removes_the_temporary_output(
    csv_file, tmp_path, capsys, monkeypatch, name, said
):
    import signal

    if not hasattr(signal, name):
        pytest.skip(f"no {name} on this platform")
    signum = getattr(signal, name)

    def stopped(self, X):
        os.kill(os.getpid(), signum)
        raise AssertionError(f"{name} did not stop the run")

    def unhandled(signum, frame):  # never the process's end, even if it fails
        raise AssertionError(f"the command line did not handle {name}")

    monkeypatch.setattr(BertSentenceVectorizer, "transform", stopped)
    before = signal.signal(signum, unhandled)
    try:
        out = tmp_path / "o.npy"
        status, _, stderr = _run(capsys, "embed", csv_file, "-o", out)
        assert signal.getsignal(signum) is unhandled  # put back
    finally:
        signal.signal(signum, before)
    assert status == 128 + signum
    assert stderr.splitlines()[-1] == f"skbert: {said}"
    assert not out.exists() and _leftovers(tmp_path) == []


def test_a_hangup_the_caller_ignores_stays_ignored(
    tiny_bert, csv_file, tmp_path, capsys, monkeypatch
):
    # nohup skbert embed ...: the run goes on when the terminal closes
    import signal

    if not hasattr(signal, "SIGHUP"):
        pytest.skip("no SIGHUP on this platform")
    transform = BertSentenceVectorizer.transform

    def hung_up(self, X):
        os.kill(os.getpid(), signal.SIGHUP)
        return transform(self, X)

    monkeypatch.setattr(BertSentenceVectorizer, "transform", hung_up)
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        out = tmp_path / "o.npy"
        status, _, _ = _run(capsys, "embed", csv_file, "-o", out, "--model", tiny_bert)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)
    assert status == 0 and np.load(out).shape == (len(TEXTS), 32)


def test_a_killed_runs_temporary_file_is_removed_an_hour_later(
    tiny_bert, csv_file, tmp_path, capsys
):
    import time

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)  # a process that has ended
    old = time.time() - 2 * 3600
    killed = tmp_path / f".o.npy.{dead_pid}.0123abcd.tmp"  # a killed run's, old
    recent = tmp_path / f".o.npy.{dead_pid}.4567abcd.tmp"  # too recent to tell
    running = tmp_path / f".o.npy.{os.getpid()}.89abcdef.tmp"  # a live process's
    other = tmp_path / f".x.npy.{dead_pid}.0123abcd.tmp"  # another output's
    for path in (killed, recent, running, other):
        path.write_bytes(b"partial")
    for path in (killed, running, other):
        os.utime(path, (old, old))
    status, _, _ = _run(
        capsys, "embed", csv_file, "-o", tmp_path / "o.npy", "--model", tiny_bert
    )
    assert status == 0
    assert sorted(_leftovers(tmp_path)) == sorted(
        p.name for p in (recent, running, other)
    )


@pytest.mark.parametrize(
    "name, content, says",
    [
        (
            "comma.csv",
            "text\nhello, world\nfine\n",
            "line 2 has 2 cells and the header 1; a text with a comma must be quoted.",
        ),
        (
            "tab.tsv",
            "id\ttext\n1\tleft\tright\n2\tfine\n",
            "line 2 has 3 cells and the header 2; a .tsv text cannot hold a tab "
            "(use .csv, quoted).",
        ),
        (
            "short.csv",
            "id,text\n1\n2,b\n",
            "line 2 has 1 cell and the header 2; each row needs a cell for every "
            "column.",
        ),
    ],
)
def test_a_row_with_more_or_fewer_cells_than_the_header_is_refused(
    tiny_bert, tmp_path, capsys, name, content, says
):
    # pandas would drop the extra cells (or fill in '') without a word
    path = tmp_path / name
    path.write_text(content)
    status, _, stderr = _run(
        capsys, "embed", path, "-o", tmp_path / "o.npy", "--model", tiny_bert
    )
    assert status == 1
    assert (
        stderr == f"skbert: error: cannot read {str(path)!r} as {path.suffix}: {says}\n"
    )


@pytest.mark.parametrize("value", ["", "none", "None", "memory"])
def test_cache_takes_a_directory_not_a_word(
    csv_file, tmp_path, capsys, monkeypatch, value
):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    status, _, stderr = _run(
        capsys, "embed", csv_file, "-o", tmp_path / "o.npy", "--cache", value
    )
    assert status == 2
    assert f"argument --cache: expected a directory, got {value!r}" in stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_an_unknown_option_points_to_the_commands_help(tmp_path, capsys):
    status, _, stderr = _run(capsys, "embed", "t.txt", "-o", "o.npy", "--frobnicate")
    assert status == 2
    assert stderr == (
        "skbert: error: unrecognized arguments: --frobnicate (see 'skbert embed "
        "--help')\n"
    )


def test_layers_before_input_say_where_input_goes(tiny_bert, tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text("a\n")
    args = ["embed", "--layers", "-1", "-2", path, "-o", tmp_path / "o.npy"]
    status, _, stderr = _run(capsys, *args)
    assert status == 2
    assert "invalid int value: " in stderr and "; put INPUT before --layers" in stderr
    args = ["embed", path, "--layers", "-1", "-2", "-o", tmp_path / "o.npy"]
    status, stdout, _ = _run(capsys, *args, "--model", tiny_bert)
    assert status == 0 and np.load(tmp_path / "o.npy").shape == (1, 32)
    assert stdout.startswith("Embedded 1 text -> shape (1, 32)")


@pytest.mark.parametrize(
    "words, said",
    [
        (["--layers", "last"], "--layers takes hidden-state indices"),
        (["--layers", "1.5"], "--layers takes hidden-state indices"),
        (["--layers", "it's"], "--layers takes hidden-state indices"),
        (["--layers", "-1,-2"], "separate hidden-state indices with spaces"),
        (["--layers=-4,-3, -2"], "e.g. --layers -4 -3 -2"),
        (["--layers", "-1", "-2,-3"], "e.g. --layers -2 -3"),
        (["--layers", "-1,"], "e.g. --layers -1 ("),
    ],
)
def test_layers_that_are_no_indices_say_what_layers_take(tmp_path, capsys, words, said):
    path = tmp_path / "t.txt"
    path.write_text("a\n")
    status, _, stderr = _run(capsys, "embed", path, *words, "-o", tmp_path / "o.npy")
    assert status == 2 and len(stderr.splitlines()) == 1
    assert said in stderr and "put INPUT before" not in stderr


def test_outputs_and_inputs_the_command_cannot_use_say_what_to_do(tmp_path, capsys):
    import os

    path = tmp_path / "t.txt"
    path.write_text("a\n")
    status, _, stderr = _run(capsys, "embed", path, "-o", "-")
    assert status == 2 and "cannot write to standard output" in stderr
    out = tmp_path / "o.npy"
    status, _, stderr = _run(capsys, "embed", path, "-o", out, "--cache", path)
    assert status == 2 and "is a file; name a directory" in stderr
    status, _, stderr = _run(capsys, "embed", path, "-o", out, "--cache", path / "c")
    assert status == 2 and "lies under" in stderr and "which is a file" in stderr
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)  # as bash's <(...) gives it
        status, _, stderr = _run(capsys, "embed", fifo, "-o", tmp_path / "o.npy")
        assert status == 2 and "send it to standard input instead" in stderr
    status, _, stderr = _run(capsys, "embed", tmp_path, "-o", tmp_path / "o.npy")
    assert status == 2 and "is a directory; name a file" in stderr
    assert not list(tmp_path.glob("*.npy"))


def test_a_column_named_twice_is_refused(tmp_path, capsys):
    path = tmp_path / "twice.csv"
    path.write_text("text,id,text\na,1,b\n")
    status, _, stderr = _run(capsys, "embed", path, "-o", tmp_path / "o.npy")
    assert status == 1 and "names the column 'text' 2 times" in stderr
    assert not (tmp_path / "o.npy").exists()


def test_column_of_a_txt_input_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "texts.txt"
    path.write_text("a\nb\n")
    status, _, stderr = _run(
        capsys, "embed", path, "-o", tmp_path / "o.npy", "--column", "body"
    )
    assert status == 2 and "--column applies to .csv, .tsv and .parquet" in stderr


def test_a_column_that_holds_no_texts_is_named(tiny_bert, tmp_path, capsys):
    path = tmp_path / "texts.parquet"
    pd.DataFrame({"text": [1, 2], "body": ["a", "b"]}).to_parquet(path)
    status, _, stderr = _run(
        capsys, "embed", path, "-o", tmp_path / "o.npy", "--model", tiny_bert
    )
    assert status == 1
    assert stderr == (
        f"skbert: error: column 'text' of {str(path)!r} holds int values (1 in row 0, "
        "counted from 0), not texts; choose a column of strings with --column, or "
        "convert it.\n"
    )


def test_a_column_of_lists_is_named(tiny_bert, tmp_path, capsys):
    path = tmp_path / "texts.parquet"
    pd.DataFrame({"text": [["a", "b"], ["c"]]}).to_parquet(path)
    status, _, stderr = _run(
        capsys, "embed", path, "-o", tmp_path / "o.npy", "--model", tiny_bert
    )
    assert status == 1
    assert stderr.startswith(
        f"skbert: error: column 'text' of {str(path)!r} holds ndarray values "
    )


def test_the_users_paths_are_quoted_as_typed(tmp_path, capsys):
    # option words replace the estimator's parameter names, never the user's text
    model = tmp_path / "max_length=128,device='cpu',layers=[1, 2]" / "model=None"
    texts = tmp_path / "layers=[1]"
    texts.mkdir()
    (texts / "t.txt").write_text("a\n")
    status, _, stderr = _run(
        capsys, "embed", texts / "t.txt", "-o", tmp_path / "o.npy", "--model", model
    )
    assert status == 1
    assert f"Could not load model {str(model)!r}: no such directory" in stderr
    assert "or no --model for the bundled default model" in stderr


def test_a_long_non_ascii_output_name_is_written(tiny_bert, csv_file, tmp_path, capsys):
    out = tmp_path / ("é" * 120 + ".npy")  # 244 bytes; its temporary name fits too
    status, _, _ = _run(capsys, "embed", csv_file, "-o", out, "--model", tiny_bert)
    assert status == 0 and np.load(out).shape == (len(TEXTS), 32)


def test_a_missing_column_names_at_most_ten_columns(tmp_path, capsys):
    path = tmp_path / "wide.parquet"
    pd.DataFrame({f"c{i}": [0.0] for i in range(384)}).to_parquet(path)
    status, _, stderr = _run(capsys, "embed", path, "-o", tmp_path / "o.npy")
    assert status == 2
    assert "'c9', ... (384 columns)]. Choose one with --column." in stderr
    assert "'c10'" not in stderr


def test_an_output_directory_is_named_as_such(csv_file, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    status, _, stderr = _run(capsys, "embed", csv_file, "-o", tmp_path / "out")
    assert status == 2 and "is a directory; name a file" in stderr


def test_a_failed_write_names_the_output(tmp_path):
    import errno

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    out = tmp_path / "o.npy"
    with pytest.raises(
        OSError, match=r"^cannot write '.*o\.npy': No space left on device$"
    ):
        with skbert.cli.VectorWriter(out, 1, ["a"]) as writer:
            writer._file = Full()
            writer.write(np.zeros((1, 1), dtype=np.float32))
    assert not out.exists() and _leftovers(tmp_path) == []


def test_the_options_choices_are_the_estimators():
    from skbert import BertSentenceVectorizer

    constraints = BertSentenceVectorizer._parameter_constraints
    for param, choices in skbert.cli.CHOICES.items():
        allowed = {v for c in constraints[param] for v in getattr(c, "values", ())}
        # segment_mean needs pairs, which the command line does not take
        assert set(choices) == allowed - {"segment_mean"}, param


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys; import skbert.cli; from skbert.cli import main; "
        "status = main(['--version']); "
        "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules; "
        "sys.exit(status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("skbert ")


def test_prompt_name_and_normalize_follow_a_sentence_transformers_model(
    tiny_bert, csv_file, tmp_path, capsys
):
    from sentence_transformers import SentenceTransformer, models

    directory = tmp_path / "st"
    encoder = models.Transformer(str(tiny_bert))
    st = SentenceTransformer(
        modules=[encoder, models.Pooling(32, pooling_mode="mean"), models.Normalize()],
        device="cpu",
    )
    st.prompts = {"query": "query: "}
    st.save(str(directory))
    out = tmp_path / "o.npy"

    def embed_stderr(*args):
        out.unlink(missing_ok=True)
        return _run(capsys, "embed", csv_file, "-o", out, "--model", directory, *args)[
            2
        ]

    cases = [
        ([], dict(prompt=""), True),
        (["--no-normalize"], dict(prompt=""), False),
        (["--prompt-name", "query"], dict(prompt="query: "), True),
    ]
    for args, encode, unit in cases:
        stderr = embed_stderr(*args)
        assert out.exists(), stderr
        vectors = np.load(out)
        if unit:
            reference = st.encode(TEXTS, **encode)
        else:  # encode's Normalize module cannot be switched off
            pooled = BertSentenceVectorizer(model=directory, normalize=False)
            reference = pooled.fit_transform(TEXTS)
            assert np.abs(np.linalg.norm(vectors, axis=1) - 1).max() > 1e-2
        np.testing.assert_allclose(vectors, reference, atol=1e-5)
    stderr = embed_stderr("--prompt-name", "answer")
    assert "--prompt-name answer is not a prompt" in stderr
    assert "Pass the text itself as --prompt TEXT, or no --prompt-name." in stderr
    stderr = embed_stderr("--prompt-name", "my query")
    assert "--prompt-name 'my query' is not a prompt" in stderr
    stderr = embed_stderr("--prompt", "device='cpu' ", "--prompt-name", "query")
    assert """got --prompt "device='cpu' " and --prompt-name query.""" in stderr
    stderr = embed_stderr("--prompt-name", 'it\'s "x"')
    assert "--prompt-name 'it'\"'\"'s \"x\"' is not a prompt" in stderr
    stderr = embed_stderr("--prompt", " ", "--prompt-name", "query")
    assert "either --prompt or --prompt-name, not both: got --prompt ' '" in stderr
    stderr = embed_stderr("--prompt", "q: ", "--prompt-name", "query")
    assert "either --prompt or --prompt-name, not both" in stderr
    assert "prompt_name" not in stderr and "prompt=" not in stderr


def test_a_short_typed_value_never_garbles_a_message(tmp_path, capsys):
    # "0" is inside the mark of every other typed value: marked in one pass
    path = tmp_path / "texts.csv"
    pd.DataFrame({"0": ["the cat sat", "a dog"]}).to_csv(path, index=False)
    missing = tmp_path / "no-model-here"
    status, _, stderr = _run(
        capsys,
        "embed",
        path,
        "-o",
        tmp_path / "o.npy",
        "--column",
        "0",
        "--model",
        missing,
    )
    assert status != 0
    assert str(missing) in stderr and "\x00" not in stderr


@pytest.mark.parametrize(
    "message, typed, expected",
    [
        # a typed path that holds what looks like a parameter stays as typed
        (
            "input file \"no prompt='x'.txt\" does not exist.",
            ["no prompt='x'.txt"],
            "input file \"no prompt='x'.txt\" does not exist.",
        ),
        # a typed value never shows up inside a prompt's mark as NULs
        (
            "prompt='query' is put as it is; pass prompt_name='query' to use it.",
            ["0", "query"],
            "--prompt 'query' is put as it is; pass --prompt-name query to use it.",
        ),
        # a prompt's text is the user's: not reworded, whatever it holds
        (
            "got prompt=\"a prompt_name='b' device='cpu'\" and prompt_name='q'.",
            [],
            "got --prompt \"a prompt_name='b' device='cpu'\" and --prompt-name q.",
        ),
        (
            "A prompt (\"device='cpu'\") stays at the head; or prompt=None.",
            [],
            "A prompt (\"device='cpu'\") stays at the head; or --prompt ''.",
        ),
        # a column named like a parameter is not taken for the parameter
        (
            "Pass the text itself as prompt=..., or prompt_name=None.",
            ["prompt"],
            "Pass the text itself as --prompt TEXT, or no --prompt-name.",
        ),
        # a path as typed or normalised, whatever its edges
        (
            "Unrecognized model in mx/max_length=5. Cause: layers=[1, 2]/x",
            ["mx/max_length=5/", "mx/max_length=5", "layers=[1, 2]/"],
            "Unrecognized model in mx/max_length=5. Cause: layers=[1, 2]/x",
        ),
        (
            "File prompt='x'/data.csv does not exist.",
            ["prompt='x'/data.csv"],
            "File prompt='x'/data.csv does not exist.",
        ),
        # a typed word does not stop the rest of the message being reworded
        (
            "device='cuda' was requested but is not available; use device='cpu'.",
            ["cuda"],
            "--device cuda was requested but is not available; use --device cpu.",
        ),
    ],
)
def test_messages_keep_what_the_user_wrote(message, typed, expected):
    assert skbert.cli._in_cli_words(message, typed) == expected


def test_typed_paths_are_kept_as_typed_and_normalised():
    args = skbert.cli.build_parser().parse_args(
        ["embed", "in.csv", "-o", "out.npy", "--model", "mx/max_length=5/"]
    )
    typed = skbert.cli._typed(args)
    assert "mx/max_length=5/" in typed and "mx/max_length=5" in typed


def test_a_summary_nobody_reads_is_no_failure(tiny_bert, csv_file, tmp_path):
    # `skbert embed ... | head -0`: stdout closed before the summary is printed
    out = tmp_path / "vectors.npy"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "skbert", "embed", str(csv_file), "-o", str(out)]
        + ["--model", str(tiny_bert)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    process.stdout.close()  # long before the model is loaded
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 0, stderr
    assert "error" not in stderr.lower()
    assert np.load(out).shape == (len(TEXTS), 32)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--prompt", "q: ", "--prompt-name", "query"], "either --prompt or --prompt"),
        (
            ["--layers", "-1", "-2", "-1"],
            "--layers -1 -2 -1 names hidden state -1 more",
        ),
        (["--model", ""], "--model is empty; leave it out"),
        (["--device", ""], "--device '' is not a valid torch device"),
    ],
)
def test_conflicting_options_are_usage_errors(
    csv_file, tmp_path, capsys, options, message
):
    # found on the command line alone: exit 2 before any model is loaded
    status, _, stderr = _run(
        capsys, "embed", csv_file, "-o", tmp_path / "o.npy", *options
    )
    assert status == 2 and message in stderr, stderr
    assert stderr.count("\n") == 1


def test_dense_without_dense_layers_is_said_in_option_words(
    tiny_bert, csv_file, tmp_path, capsys
):
    status, _, stderr = _run(
        capsys,
        "embed",
        csv_file,
        "-o",
        tmp_path / "o.npy",
        "--model",
        tiny_bert,
        "--dense",
    )
    assert status == 0
    assert "skbert: warning: --dense will not be used since" in stderr
    assert "'dense'" not in stderr


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_a_failed_close_names_the_output(tmp_path, suffix):
    import errno

    class Full:
        def write_table(self, table):
            pass

        def close(self):
            raise OSError(errno.ENOSPC, "No space left on device")

        write = write_table

    out = tmp_path / f"o{suffix}"
    with pytest.raises(OSError) as raised:
        with skbert.cli.VectorWriter(out, 1, ["a"]) as writer:
            writer.write(np.zeros((1, 1), dtype=np.float32))
            if writer._parquet is None:
                writer._file.close()
                writer._file = Full()
            else:
                writer._parquet.close()
                writer._parquet = Full()
    assert str(raised.value) == f"cannot write {str(out)!r}: No space left on device"
    assert raised.value.errno == errno.ENOSPC
    assert not out.exists() and _leftovers(tmp_path) == []


def _stdin(monkeypatch, data: bytes):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


@pytest.mark.parametrize("input_format", ["csv", "tsv", "parquet"])
def test_input_format_reads_standard_input_as_a_table(
    tiny_bert, tmp_path, capsys, monkeypatch, input_format
):
    texts = ['the bank, "of" the river\nin two lines', "", "a dog barked"]
    if input_format == "tsv":
        texts[0] = texts[0].replace("\n", " ").replace('"', "")  # TSV has no quoting
    frame = pd.DataFrame({"id": [3, 1, 2], "text": texts})
    if input_format == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        data = buffer.getvalue()
    else:
        sep = "\t" if input_format == "tsv" else ","
        data = b"\xef\xbb\xbf" + frame.to_csv(index=False, sep=sep).encode()
    _stdin(monkeypatch, data)
    out = tmp_path / "o.npy"
    status, _, stderr = _run(
        capsys, "embed", "-", "-o", out, "--model", tiny_bert,
        "--input-format", input_format,
    )  # fmt: skip
    assert status == 0, stderr
    expected, _ = _expected(tiny_bert, texts)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def test_input_format_overrides_the_extension(tiny_bert, tmp_path, capsys):
    path = tmp_path / "texts.dat"
    path.write_text("text\tid\nthe river bank\t1\na dog\t2\n")
    out = tmp_path / "o.npy"
    status, _, stderr = _run(capsys, "embed", path, "-o", out, "--model", tiny_bert)
    assert status == 2 and "or say the format with --input-format" in stderr
    status, _, stderr = _run(
        capsys, "embed", path, "-o", out, "--model", tiny_bert, "--input-format", "tsv"
    )
    assert status == 0, stderr
    expected, _ = _expected(tiny_bert, ["the river bank", "a dog"])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)
    # a .csv read as txt: one text a line, the header too
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("text\nthe river bank\n")
    status, _, _ = _run(
        capsys, "embed", csv_path, "-o", out, "--model", tiny_bert,
        "--input-format", "txt",
    )  # fmt: skip
    assert status == 0 and np.load(out).shape == (2, 32)


def test_input_format_errors_name_standard_input(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o.npy"
    _stdin(monkeypatch, b"id,words\n1,the bank\n")
    status, _, stderr = _run(capsys, "embed", "-", "-o", out, "--input-format", "csv")
    assert status == 2
    assert "Standard input has no column 'text'; its columns are ['id', 'words']" in (
        stderr
    )
    _stdin(monkeypatch, b"text\nthe bank\nthe bank, a river\n")
    status, _, stderr = _run(capsys, "embed", "-", "-o", out, "--input-format", "csv")
    assert status == 1
    assert "cannot read standard input as .csv: line 3 has 2 cells" in stderr
    status, _, stderr = _run(
        capsys, "embed", "-", "-o", out, "--input-format", "txt", "--column", "x"
    )
    assert status == 2 and "--column applies to .csv" in stderr
    status, _, stderr = _run(capsys, "embed", "-", "-o", out, "--input-format", "xls")
    assert status == 2 and "invalid choice: 'xls'" in stderr


def test_compressed_or_misnamed_inputs_are_named_for_what_they_are(
    tiny_bert, tmp_path, capsys, monkeypatch
):
    import gzip

    out = tmp_path / "o.npy"
    table = pd.DataFrame({"text": ["the river bank", "a dog"]})
    packed = tmp_path / "texts.csv.gz"
    packed.write_bytes(gzip.compress(table.to_csv(index=False).encode()))
    status, _, stderr = _run(capsys, "embed", packed, "-o", out)
    assert status == 2
    assert f"zcat {packed} | skbert embed - --input-format csv ..." in stderr
    _stdin(monkeypatch, packed.read_bytes())
    status, _, stderr = _run(capsys, "embed", "-", "-o", out, "--input-format", "csv")
    assert status == 1 and "looks like gzip-compressed data (decompress" in stderr
    assert "zcat FILE | skbert embed - --input-format csv)" in stderr  # as read
    status, _, stderr = _run(capsys, "embed", tmp_path / "none.csv.gz", "-o", out)
    assert status == 2 and "does not exist" in stderr
    parquet = tmp_path / "texts.parquet"
    table.to_parquet(parquet)
    status, _, stderr = _run(
        capsys, "embed", parquet, "-o", out, "--input-format", "csv"
    )
    assert status == 1
    assert "as .csv: it looks like a Parquet file (read it with --input-format" in (
        stderr
    )
    # texts that merely begin like those formats are texts
    lines = tmp_path / "lines.txt"
    for text in (
        "PAR1 is a code\nBZh1 and PK too\n",
        "PAR1 is a part code\nso is PAR1",
    ):
        lines.write_text(text)
        status, _, stderr = _run(
            capsys, "embed", lines, "-o", out, "--model", tiny_bert
        )
        assert status == 0, stderr
        assert np.load(out).shape == (2, 32)
    # a name that says compressed, with --input-format saying what it is
    named = tmp_path / "plain.gz"
    named.write_text("the river bank\n")
    status, _, stderr = _run(
        capsys, "embed", named, "-o", out, "--model", tiny_bert, "--input-format", "txt"
    )
    assert status == 0, stderr


def test_the_terminal_hint_says_the_input_format(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o.npy"
    for options, said in (([], "one per line"), (["--input-format", "tsv"], "as .tsv")):
        _stdin(monkeypatch, b"")
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        _, _, stderr = _run(capsys, "embed", "-", "-o", out, *options)
        assert f"reading texts from standard input, {said}; end with Ctrl-D" in stderr
