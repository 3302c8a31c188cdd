"""The csv source's two readers (services/collect/sources/csvread.py): pyarrow's block reader gives
what the row reader gives, hands over to it mid-file, and the dialect settings (collect.delimiter,
collect.decimal); the block reader's thread ends with the read, however it ends; and the pixel
statistics of an image ingest. In process: no server."""

import itertools
import threading

import numpy as np
import pytest

from cookline.v1 import pipeline_pb2
from services.collect.sources import csvread
from services.collect.sources.csv import CsvSource
from services.common.errors import Fail


def source(tmp_path, text: str, **spec) -> CsvSource:
    path = tmp_path / "d.csv"
    path.write_bytes(text.encode())
    return CsvSource(pipeline_pb2.CollectSpec(label=spec.pop("label", "y"), **spec), str(path))


def rows_of(chunks) -> dict[str, np.ndarray]:
    chunks = list(chunks)
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype.kind == b[name].dtype.kind and a[name].shape == b[name].shape, name
        if a[name].dtype.kind == "f":
            np.testing.assert_array_equal(a[name], b[name])  # NaN equal to NaN
        else:
            assert a[name].tolist() == b[name].tolist(), name


# A BOM, CRLF, a blank line, quoted cells holding the delimiter, a doubled quote and a line break,
# spaces around cells, missing values in every kind of column.
TRICKY = (
    "\ufeffsize,colour,note,label\r\n"
    '1.5,red,"arrived on time, well packed",a\r\n'
    '2.5, blue ,"said ""fine""\r\nthen left",b\r\n'
    "\r\n"
    "NA,,box was crushed in transit,a\r\n"
    '4,red,"",c\r\n'
)


@pytest.mark.parametrize("missing", ["keep", "fill", "drop"])
def test_block_reader_gives_what_the_row_reader_gives(tmp_path, missing):
    fast = source(tmp_path, TRICKY, label="label", missing=missing, fill_value=-1)
    slow = source(tmp_path, TRICKY, label="label", missing=missing, fill_value=-1)
    assert fast.kinds == {"size": "numeric", "colour": "category", "note": "text"}
    assert_same(rows_of(fast.chunks()), rows_of(slow._row_chunks(0)))
    assert fast.labels.names == slow.labels.names


def test_the_row_reader_takes_over_mid_file_and_names_the_line(tmp_path, monkeypatch):
    monkeypatch.setattr(csvread, "BLOCK_BYTES", 64)  # a few rows per block
    good = "".join(f"{i},{i / 2},c{i % 3}\n" for i in range(40))
    # "1_000" is a number to Python's float() but not to pyarrow: the rows after it come from the row reader
    text = "a,b,y\n" + good + "1_000,2,c1\n" + good
    taken = source(tmp_path, text)
    rows = rows_of(taken.chunks())
    assert len(rows["label"]) == 81 and rows["features"][40].tolist() == [1000.0, 2.0]
    assert_same(rows, rows_of(source(tmp_path, text)._row_chunks(0)))
    bad = source(tmp_path, "a,b,y\n" + good + "3,oops,c1\n", column_kinds={"b": "numeric"})
    with pytest.raises(Fail, match=r"d.csv line 42, column 'b': the value is not a number") as error:
        list(bad.chunks())
    assert "oops" not in str(error.value)  # cells are never quoted back


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "cookline-csv-reader"]


def many_blocks(monkeypatch, rows: int, bad: dict[int, str] | None = None) -> str:
    """A CSV of `rows` data rows in blocks of a few rows each; bad: line number -> a row put there."""
    monkeypatch.setattr(csvread, "BLOCK_BYTES", 64)
    lines = ["a,b,y"] + [f"{i},{i / 4},c{i % 3}" for i in range(rows)]
    for line_no, row in (bad or {}).items():
        lines[line_no - 1] = row
    return "\n".join(lines) + "\n"


def test_a_bad_cell_far_into_the_file_is_named_as_the_row_reader_names_it(tmp_path, monkeypatch):
    # two bad cells in blocks the reader's thread parses ahead: the first one is the error
    text = many_blocks(monkeypatch, 3000, {2900: "7,oops,c1", 2950: "x,8,c2"})
    expected = r"d.csv line 2900, column 'b': the value is not a number"
    with pytest.raises(Fail, match=expected):
        list(source(tmp_path, text, column_kinds={"b": "numeric"}).chunks())
    with pytest.raises(Fail, match=expected):
        list(source(tmp_path, text, column_kinds={"b": "numeric"})._row_chunks(0))
    assert reader_threads() == []
    # and a whole file read through the thread is what the row reader reads
    text = many_blocks(monkeypatch, 3000)
    assert_same(rows_of(source(tmp_path, text).chunks()), rows_of(source(tmp_path, text)._row_chunks(0)))
    assert reader_threads() == []


@pytest.mark.parametrize("how", ["closed", "failed"])
def test_an_ingest_that_stops_early_stops_and_joins_the_reader_thread(tmp_path, monkeypatch, how):
    chunks = source(tmp_path, many_blocks(monkeypatch, 3000)).chunks()
    assert len(next(chunks)["label"]) > 0
    assert len(reader_threads()) == 1  # hundreds of blocks left, at most AHEAD_BATCHES of them parsed
    if how == "closed":  # the ingest was cancelled: the service drops the source's chunks
        chunks.close()
    else:  # writing a shard failed: the exception goes through the chunks
        with pytest.raises(OSError, match="disk full"):
            chunks.throw(OSError("disk full"))
    assert reader_threads() == []


def test_a_reader_that_fails_mid_file_raises_in_the_ingest_after_the_rows_before_it(tmp_path, monkeypatch):
    csv = source(tmp_path, many_blocks(monkeypatch, 3000))
    blocks = csvread.blocks

    def failing(*args):
        yield from itertools.islice(blocks(*args), 3)
        raise OSError("the object store went away")

    monkeypatch.setattr(csvread, "blocks", failing)
    chunks = csv.chunks()
    taken = [next(chunks) for _ in range(3)]
    with pytest.raises(OSError, match="the object store went away"):
        next(chunks)
    assert sum(len(c["label"]) for c in taken) > 0
    assert reader_threads() == []


def test_semicolons_and_decimal_commas(tmp_path):
    text = "alpha;beta;out\n1,5;-2,25;x\n3;4,0;y\n"
    rows = rows_of(source(tmp_path, text, label="out", delimiter=";", decimal=",").chunks())
    assert rows["features"].tolist() == [[1.5, -2.25], [3.0, 4.0]]
    tabs = rows_of(source(tmp_path, "a\tb\ty\n1.5\t2\tx\n", delimiter="\t").chunks())
    assert tabs["features"].tolist() == [[1.5, 2.0]]
    with pytest.raises(Fail, match=r"line 2, column 'alpha': the value is not a number .*collect.decimal is ','"):
        list(
            source(
                tmp_path,
                "alpha;out\n1.5;x\n",
                label="out",
                delimiter=";",
                decimal=",",
                column_kinds={"alpha": "numeric"},
            ).chunks()
        )


def test_a_wrong_delimiter_is_named(tmp_path):
    with pytest.raises(Fail) as error:
        source(tmp_path, "alpha;beta;out\n1,5;2;x\n", label="out")
    assert str(error.value.message) == (
        "collect.label: column 'out' is not in the header of d.csv (columns: alpha;beta;out); the header reads "
        "as one column holding ';' (collect.delimiter is ','): set collect.delimiter: ';'"
    )


def test_image_pixel_statistics_from_the_histogram_match_numpy():
    from services.collect.stats import StatisticsBuilder

    images = np.random.default_rng(2).integers(3, 250, (40, 6, 5, 3), dtype=np.uint8)
    builder = StatisticsBuilder()
    for chunk in np.array_split(images, 3):
        builder.add({"image": chunk}, [], [])
    (stats,) = builder.build([], {}).numeric
    assert (stats.count, stats.min, stats.max) == (images.size, images.min(), images.max())
    assert stats.mean == pytest.approx(images.mean()) and stats.std == pytest.approx(images.std())


# Cells around the edges of what a number is: the one typed read that infers kinds at once must call
# no column numeric that the cell-by-cell rule would not.
EDGE_CELLS = ["1.5", " 1.5", "1.5\t", "+1", ".5", "5.", "1e3", "1e", "0x1F", "1_000", "inf", "-nan", "NA", " NA "]
EDGE_CELLS += ["", "  ", "n/a", '"1.5"', '""', "1.5.1", "1\u00a0", "0001", "1e400", "true", "2020-01-01"]


@pytest.mark.parametrize("decimal", [".", ","])
def test_the_typed_kind_read_is_never_more_numeric_than_the_cell_rule(tmp_path, decimal):
    dialect = csvread.Dialect(";", decimal)
    for cell in EDGE_CELLS:
        cell = cell.replace(".", decimal)
        path = tmp_path / "k.csv"
        path.write_text(f"a;y\n{cell};z\n1;z\n")
        typed = csvread.all_numeric(str(path), dialect, 2, True, [0], 4096)
        table = csvread.first_rows(str(path), dialect, 2, True, 4096)
        assert typed <= csvread.numeric_columns([table.column(0)], dialect)[0], cell


def test_statistics_of_columns_without_nan_taken_at_once_equal_column_by_column():
    from services.collect.stats import _Numeric

    rng = np.random.default_rng(3)
    x = (rng.normal(0, 50, (700, 9)) * [1, 1e-4, 1e5, 1, 1, 1, 1, 1, 1]).astype(np.float32)
    x[rng.random(x.shape) < 0.01] = np.nan
    x[:, 3] = rng.normal(size=700)  # no NaN: taken with the others at once
    at_once, one_by_one = _Numeric([f"c{j}" for j in range(9)]), _Numeric([f"c{j}" for j in range(9)])
    for part in np.array_split(x, 3):
        at_once.add(part)
        nan = np.isnan(part)
        one_by_one.missing += nan.sum(axis=0)
        for j in range(9):
            one_by_one._merge(j, part[~nan[:, j], j])
    assert at_once.messages() == one_by_one.messages()  # to the bit
