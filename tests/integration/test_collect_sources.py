"""Collect, as a real process on S3 (SeaweedFS): every source, statistics, validation, bad input."""

import threading

import grpc
import numpy as np
import pytest
from PIL import Image

from cookline import tensors
from cookline.v1 import collect_pb2, data_pb2
from dataplane import collect_stub, ingest, ingest_error, read_all, versions


@pytest.fixture(scope="module")
def env(data_plane):
    return data_plane[1]


def write(path, text):
    path.write_text(text)
    return str(path)


def nothing_visible(env, store, name):
    """No published version of `name`, and no objects left under datasets/<name>/."""
    return versions(env, name) == [] and list(store.list(f"datasets/{name}/")) == []


# --- csv ---------------------------------------------------------------------

CSV = """size,color,weight,kind
1.0,red,10,a
2.0,blue,,b
3.0,red,30,a
4.0,,40,c
"""


def test_csv_typed_columns_categorical_and_keep_missing(env, tmp_path):
    last = ingest(
        env,
        "csv-keep",
        write(tmp_path / "d.csv", CSV),
        format="csv",
        label="kind",
        categorical=["color"],
        missing="keep",
    )
    info = last.dataset
    fields = {f.name: f for f in info.fields}
    assert list(fields["features"].columns) == ["size", "weight"]
    assert list(fields["categorical"].columns) == ["color"]
    assert fields["categorical"].dtype == tensors.DataType.DATA_TYPE_STRING
    assert list(fields["label"].class_names) == ["a", "b", "c"]
    rows = read_all(env, info.ref)
    assert rows["features"].shape == (4, 2) and np.isnan(rows["features"][1, 1])
    assert [v.decode() for v in rows["categorical"][:, 0]] == ["red", "blue", "red", ""]
    stats = {s.name: s for s in info.statistics.numeric}
    assert (stats["weight"].count, stats["weight"].missing) == (3, 1)
    assert (stats["weight"].min, stats["weight"].max, stats["weight"].mean) == (10, 40, pytest.approx(80 / 3))
    assert stats["size"].std == pytest.approx(np.std([1, 2, 3, 4]))
    cat = info.statistics.categorical[0]
    assert (cat.name, cat.count, cat.missing, cat.unique, list(cat.values)) == ("color", 3, 1, 2, ["red", "blue"])
    assert dict(info.statistics.label_counts) == {"a": 2, "b": 1, "c": 1}


def test_csv_missing_policies_drop_fill_and_error(env, tmp_path):
    path = write(tmp_path / "d.csv", CSV)
    dropped = ingest(env, "csv-drop", path, label="kind", categorical=["color"], missing="drop").dataset
    assert dropped.num_rows == 2
    filled = ingest(env, "csv-fill", path, label="kind", categorical=["color"], missing="fill", fill_value=-1)
    assert read_all(env, filled.dataset.ref)["features"][1].tolist() == [2.0, -1.0]
    error = ingest_error(env, "csv-err", path, label="kind", categorical=["color"])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "d.csv line 3, column 'weight'" in error.details() and "missing" in error.details()


def test_csv_without_header_names_columns(env, tmp_path):
    path = write(tmp_path / "nh.csv", "1,2,x\n3,4,y\n5,6,x\n")
    info = ingest(env, "csv-nh", path, no_header=True, columns=["a", "b", "target"], label="target").dataset
    assert info.num_rows == 3 and list(info.fields[0].columns) == ["a", "b"]
    info = ingest(env, "csv-nh2", path, no_header=True, label="column_2").dataset
    assert [f for f in info.fields if f.name == "features"][0].columns == ["column_0", "column_1"]


MIXED = """height,colour,note,size,review,label
1.5,red,arrived on time and well packed,S,"Great, would buy again!",ok
2.5,blue,box was crushed in transit sadly,M,Broken on arrival.,bad
3.5,red,fine,L,"Works as described; fast shipping",ok
"""


def test_csv_column_kinds_are_inferred_or_set_and_text_columns_are_kept(env, tmp_path):
    path = write(tmp_path / "mixed.csv", MIXED)
    # inferred: numbers -> numeric; short strings -> category; a value of more than 3 words -> text
    info = ingest(env, "csv-mixed", path, label="label").dataset
    fields = {f.name: f for f in info.fields}
    assert list(fields["features"].columns) == ["height"]
    assert list(fields["categorical"].columns) == ["colour", "size"]
    assert list(fields["text"].columns) == ["note", "review"] and list(fields["text"].shape) == [2]
    rows = read_all(env, info.ref)
    assert [v.decode() for v in rows["text"][:, 1]] == [
        "Great, would buy again!",
        "Broken on arrival.",
        "Works as described; fast shipping",
    ]
    assert info.statistics.text.count == 3 and info.statistics.text.vocabulary_size > 10
    # set: one text column (a [rows] tensor), a numeric column read as a category
    info = ingest(
        env,
        "csv-kinds",
        path,
        label="label",
        column_kinds={"note": "category", "height": "category", "size": "category"},
    ).dataset
    fields = {f.name: f for f in info.fields}
    assert "features" not in fields and list(fields["text"].columns) == ["review"] and list(fields["text"].shape) == []
    assert list(fields["categorical"].columns) == ["height", "colour", "note", "size"]
    error = ingest_error(env, "csv-bad-kind", path, label="label", column_kinds={"note": "words"})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "collect.column_kinds.note: 'words' is not one of numeric, category, text" in error.details()
    error = ingest_error(env, "csv-bad-kind", path, label="label", column_kinds={"weight": "numeric"})
    assert "collect.column_kinds: 'weight' is not a feature column of mixed.csv" in error.details()


def test_csv_bad_rows_name_the_file_line_and_column(env, store, tmp_path):
    wrong_count = write(tmp_path / "wc.csv", "a,b,label\n1,2,x\n1,2\n")
    error = ingest_error(env, "bad-count", wrong_count, label="label")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "wc.csv line 3: expected 3 columns, got 2" in error.details()
    not_numeric = write(tmp_path / "nn.csv", "a,b,label\n1,2,x\n1,abc,y\n")
    error = ingest_error(env, "bad-number", not_numeric, label="label", column_kinds={"b": "numeric"})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nn.csv line 3, column 'b': the value is not a number" in error.details()
    assert "abc" not in error.details()  # cells are never quoted back (only the header's column names)
    missing_label = ingest_error(env, "bad-label", not_numeric, label="species")
    assert missing_label.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "collect.label: column 'species' is not in the header of nn.csv" in missing_label.details()
    for name in ("bad-count", "bad-number", "bad-label"):
        assert nothing_visible(env, store, name)


def test_failed_ingest_after_shards_were_written_leaves_nothing(env, store, tmp_path):
    rows = "".join(f"{i},{i * 2},c{i % 3}\n" for i in range(5000))  # several 50 KB shards before the bad row
    path = write(tmp_path / "late.csv", "a,b,label\n" + rows + "1,oops,c1\n")
    error = ingest_error(env, "late-error", path, label="label")
    assert "late.csv line 5002, column 'b'" in error.details()
    assert nothing_visible(env, store, "late-error")


def test_a_bad_cell_blocks_into_a_large_csv_fails_the_ingest_and_leaves_nothing(env, store, tmp_path):
    # about 3 MB: blocks of about 1 MB parsed on the reader's thread ahead of the shards being written
    rows = "".join(f"{i},{i * 2},c{i % 3}\n" for i in range(180_000))
    path = write(tmp_path / "big.csv", "a,b,label\n" + rows + "1,oops,c1\n" + rows[:200] + "x,2,c2\n")
    error = ingest_error(env, "far-error", path, label="label")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "big.csv line 180002, column 'b': the value is not a number" in error.details()
    assert nothing_visible(env, store, "far-error")


def test_empty_sources_are_invalid(env, tmp_path):
    for name, content in (("empty.csv", ""), ("header-only.csv", "a,label\n")):
        error = ingest_error(env, "empty", write(tmp_path / name, content), label="label")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and name in error.details()
    (tmp_path / "no-images").mkdir()
    error = ingest_error(env, "empty", str(tmp_path / "no-images"), format="image-folder")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "no PNG or JPEG images" in error.details()
    error = ingest_error(env, "empty", write(tmp_path / "e.txt", ""), format="text-csv")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "e.txt is empty" in error.details()


@pytest.mark.parametrize("name", ["../x", "Iris", "a/b", "", "x" * 64, ".hidden"])
def test_bad_dataset_names_are_invalid(env, tmp_path, name):
    error = ingest_error(env, name, write(tmp_path / "ok.csv", "a,label\n1,x\n"), label="label")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    expected = "dataset is required (lowercase letters" if not name else f"dataset: {name!r} is not a valid name"
    assert expected in error.details()


def test_shards_have_a_bounded_size_and_reingest_reuses_the_version(env, store, tmp_path):
    path = write(tmp_path / "big.csv", "a,b,c,label\n" + "".join(f"{i},{i},{i},c{i % 2}\n" for i in range(20000)))
    first = ingest(env, "sharded", path, label="label")
    info = first.dataset
    assert info.num_shards >= 4 and not first.reused
    manifest_shards = store.get_bytes(f"datasets/sharded/{info.ref.version}/manifest.json")
    import json

    shards = json.loads(manifest_shards)["shards"]
    assert max(s["bytes"] for s in shards) <= 0.05 * 1024 * 1024 + 4096  # the bound plus the npz header
    assert sum(s["rows"] for s in shards) == 20000
    again = ingest(env, "sharded", path, label="label")
    assert again.reused and again.dataset.ref.version == info.ref.version
    assert len(versions(env, "sharded")) == 1


# --- text-csv ----------------------------------------------------------------


def test_text_csv_has_text_and_length_statistics(env, tmp_path):
    path = write(tmp_path / "t.csv", 'great movie,pos\n"bad, boring film",neg\nok i guess it was fine,neu\n')
    info = ingest(env, "texts", path, format="text-csv").dataset
    rows = read_all(env, info.ref)
    assert [t.decode() for t in rows["text"]] == ["great movie", "bad, boring film", "ok i guess it was fine"]
    text = info.statistics.text
    assert (text.count, text.min_tokens, text.max_tokens, text.vocabulary_size) == (3, 2, 6, 11)
    assert list({f.name: f for f in info.fields}["label"].class_names) == ["pos", "neg", "neu"]
    error = ingest_error(env, "texts2", write(tmp_path / "t3.csv", "a,b,c\n"), format="text-csv")
    assert "t3.csv line 1: expected 2 columns (text,category), got 3" in error.details()


# --- images ------------------------------------------------------------------


def make_images(root, classes=("cat", "dog"), per_class=3, size=(6, 5), split=None):
    rng = np.random.default_rng(0)
    for c in classes:
        folder = root / split / c if split else root / c
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
            ext = "png" if i % 2 == 0 else "jpg"
            Image.fromarray(pixels).save(folder / f"{i}.{ext}")


def test_image_folder_png_and_jpeg(env, tmp_path):
    make_images(tmp_path / "imgs")
    info = ingest(env, "imgs", str(tmp_path / "imgs"), format="image-folder").dataset
    fields = {f.name: f for f in info.fields}
    assert list(fields["image"].shape) == [6, 5, 3] and fields["image"].dtype == tensors.DataType.DATA_TYPE_UINT8
    assert list(fields["label"].class_names) == ["cat", "dog"]
    assert dict(info.statistics.image_shapes) == {"6x5x3": 6}
    rows = read_all(env, info.ref)
    assert rows["image"].shape == (6, 6, 5, 3) and rows["label"].tolist() == [0, 0, 0, 1, 1, 1]
    resized = ingest(
        env, "imgs-small", str(tmp_path / "imgs"), format="image-folder", image_size=[4, 4], color="grayscale"
    ).dataset
    assert list({f.name: f for f in resized.fields}["image"].shape) == [4, 4, 1]


def test_image_folder_with_predefined_split(env, tmp_path):
    for split, n in (("train", 4), ("validation", 2), ("test", 1)):
        make_images(tmp_path / "split", per_class=n, split=split)
    info = ingest(env, "imgs-split", str(tmp_path / "split"), format="image-folder").dataset
    assert info.predefined_split and dict(info.statistics.split_counts) == {"train": 8, "validation": 4, "test": 2}
    for subset, n in ((data_pb2.SUBSET_TRAIN, 8), (data_pb2.SUBSET_VALIDATION, 4), (data_pb2.SUBSET_TEST, 2)):
        assert len(read_all(env, info.ref, subset=subset)["label"]) == n
    assert "subset" not in read_all(env, info.ref)


def test_corrupt_image_names_the_file(env, store, tmp_path):
    make_images(tmp_path / "bad")
    (tmp_path / "bad" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    error = ingest_error(env, "bad-img", str(tmp_path / "bad"), format="image-folder")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dog/broken.png is not a readable PNG or JPEG image" in error.details()
    assert nothing_visible(env, store, "bad-img")
    make_images(tmp_path / "sizes")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "sizes" / "dog" / "z.png")
    error = ingest_error(env, "bad-size", str(tmp_path / "sizes"), format="image-folder")
    assert "dog/z.png is 9x9" in error.details() and "collect.image_size" in error.details()


def voc_file(file_name, objects):
    """A PascalVOC annotation: objects are (name, xmin, ymin, xmax, ymax)."""
    body = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
        "</bndbox></object>"
        for n, x0, y0, x1, y1 in objects
    )
    return f"<annotation><filename>{file_name}</filename>{body}</annotation>"


def test_voc_keeps_every_box_and_class(env, tmp_path):
    root = tmp_path / "voc"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    scenes = [[("car", 0, 0, 4, 2)], [("person", 1, 1, 3, 4), ("car", 2, 0, 8, 4)], [("car", 4, 2, 8, 4)]]
    for i, objects in enumerate(scenes):
        Image.fromarray(np.full((4, 8, 3), i * 40, np.uint8)).save(root / "images" / f"{i}.jpg")
        (root / "annotations" / f"{i}.xml").write_text(voc_file(f"{i}.jpg", objects))
    info = ingest(env, "voc", str(root), format="voc").dataset
    fields = {f.name: f for f in info.fields}
    assert list(fields["label"].class_names) == ["car", "person"] == list(fields["box_labels"].class_names)
    assert list(fields["boxes"].shape) == [2, 4] and fields["boxes"].dtype == tensors.DataType.DATA_TYPE_FLOAT32
    rows = read_all(env, info.ref)
    assert rows["label"].tolist() == [0, 1, 0]  # the first object's class: image classifiers train on it
    assert rows["box_count"].tolist() == [1, 2, 1]
    assert rows["box_labels"].tolist() == [[0, -1], [1, 0], [0, -1]]
    # ymin, xmin, ymax, xmax as fractions of the 4x8 image
    np.testing.assert_allclose(rows["boxes"][1], [[0.25, 0.125, 1.0, 0.375], [0.0, 0.25, 1.0, 1.0]])
    np.testing.assert_allclose(rows["boxes"][0], [[0.0, 0.0, 0.5, 0.5], [0, 0, 0, 0]])


@pytest.mark.parametrize(
    "objects, expected",
    [
        ([], "annotations/3.xml has no <object> (every image needs at least one)"),
        ([("car", 0, 0, 9, 4)], "annotations/3.xml <object> 1 <bndbox>: the box (xmin 0, ymin 0, xmax 9, ymax 4)"),
        ([("car", 2, 3, 2, 4)], "is empty or outside the 8x4 image"),
        ([("", 0, 0, 2, 2)], "annotations/3.xml <object> 1 has no <name> (the class label)"),
    ],
)
def test_voc_bad_objects_name_the_file_and_box(env, store, tmp_path, objects, expected):
    root = tmp_path / "voc"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(root / "images" / f"{i}.png")
        (root / "annotations" / f"{i}.xml").write_text(
            voc_file(f"{i}.png", [("car", 0, 0, 2, 2)] if i < 3 else objects)
        )
    error = ingest_error(env, "voc-bad", str(root), format="voc")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in error.details()
    assert nothing_visible(env, store, "voc-bad")


def coco_folder(root, annotations, categories=((1, "cat"), (7, "dog"))):
    (root / "images").mkdir(parents=True)
    images = []
    for i in range(2):
        Image.fromarray(np.full((10, 20, 3), 50 * i, np.uint8)).save(root / "images" / f"{i}.png")
        images.append({"id": 10 + i, "file_name": f"{i}.png", "width": 20, "height": 10})
    doc = {"images": images, "annotations": annotations, "categories": [{"id": c, "name": n} for c, n in categories]}
    (root / "instances.json").write_text(__import__("json").dumps(doc))
    return str(root)


def test_coco_json_boxes_and_categories(env, store, tmp_path):
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [0, 0, 10, 5]},
        {"id": 2, "image_id": 11, "category_id": 1, "bbox": [5, 5, 15, 5]},
        {"id": 3, "image_id": 10, "category_id": 1, "bbox": [10, 0, 10, 10]},
    ]
    info = ingest(env, "coco", coco_folder(tmp_path / "coco", annotations), format="coco").dataset
    fields = {f.name: f for f in info.fields}
    assert list(fields["box_labels"].class_names) == ["cat", "dog"]  # in category id order
    rows = read_all(env, info.ref)
    assert rows["box_labels"].tolist() == [[1, 0], [0, -1]] and rows["label"].tolist() == [1, 0]
    np.testing.assert_allclose(rows["boxes"][0], [[0, 0, 0.5, 0.5], [0, 0.5, 1, 1]])
    np.testing.assert_allclose(rows["boxes"][1][0], [0.5, 0.25, 1, 1])
    # a category id the file does not declare: named by its annotation
    annotations[2]["category_id"] = 3
    error = ingest_error(env, "coco-bad", coco_folder(tmp_path / "bad", annotations), format="coco")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "instances.json annotations[2].category_id: 3 is not a category of the file" in error.details()
    assert nothing_visible(env, store, "coco-bad")
    annotations[2].update(category_id=1, bbox=[15, 0, 10, 10])  # x + width = 25 > 20
    error = ingest_error(env, "coco-bad", coco_folder(tmp_path / "bad2", annotations), format="coco")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "annotations[2].bbox: the box (xmin 15, ymin 0, xmax 25, ymax 10) is empty or outside" in error.details()


# --- npz, s3 -----------------------------------------------------------------


def test_npz_named_arrays_stream_in_chunks(env, tmp_path):
    path = tmp_path / "arrays.npz"
    x = np.arange(300 * 3, dtype=np.float32).reshape(300, 3)
    np.savez(path, x=x, y=np.array(["a", "b", "c"] * 100), extra=np.arange(300, dtype=np.int64))
    info = ingest(env, "npz", str(path), format="npz", label="y").dataset
    fields = {f.name: f for f in info.fields}
    assert set(fields) == {"x", "extra", "label"} and list(fields["label"].class_names) == ["a", "b", "c"]
    rows = read_all(env, info.ref)
    np.testing.assert_array_equal(rows["x"], x)
    error = ingest_error(env, "npz2", str(path), format="npz")
    assert "collect.label: array 'label' is not in arrays.npz" in error.details()


def test_s3_prefix_source_reads_objects_in_the_store(env, store, tmp_path):
    store.put_bytes("incoming/iris-like/data.csv", b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n")
    bucket = env["COOKLINE_BUCKET"]
    info = ingest(env, "from-s3", f"s3://{bucket}/incoming/iris-like/", label="label").dataset
    assert info.num_rows == 3 and info.source == f"s3://{bucket}/incoming/iris-like/"
    for i, c in enumerate(["cat", "dog"]):
        for j in range(2):
            buf = __import__("io").BytesIO()
            Image.fromarray(np.full((3, 3), i * 100 + j, np.uint8)).save(buf, format="PNG")
            store.put_bytes(f"incoming/pets/{c}/{j}.png", buf.getvalue())
    info = ingest(env, "pets", f"s3://{bucket}/incoming/pets", format="image-folder").dataset
    assert info.num_rows == 4 and list({f.name: f for f in info.fields}["image"].shape) == [3, 3, 1]
    error = ingest_error(env, "nothing", f"s3://{bucket}/no/such/prefix/", label="label")
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no objects under" in error.details()


# --- upload ------------------------------------------------------------------


def upload_messages(name, batches, class_names=()):
    yield collect_pb2.UploadDatasetRequest(dataset=name, class_names=class_names)
    for i, arrays in enumerate(batches):
        yield collect_pb2.UploadDatasetRequest(batch=tensors.batch_from_numpy(arrays, i))


def test_upload_publishes_once_the_stream_ends_and_is_content_addressed(env):
    batches = [
        {"features": np.full((10, 4), i, np.float32), "label": np.array([b"x", b"y"] * 5, dtype=object)}
        for i in range(3)
    ]
    first = collect_stub(env).UploadDataset(upload_messages("up", batches), timeout=60)
    assert first.dataset.num_rows == 30 and not first.reused
    assert list({f.name: f for f in first.dataset.fields}["label"].class_names) == ["x", "y"]
    again = collect_stub(env).UploadDataset(upload_messages("up", batches), timeout=60)
    assert again.reused and again.dataset.ref.version == first.dataset.ref.version
    got = collect_stub(env).GetDataset(collect_pb2.GetDatasetRequest(dataset=first.dataset.ref), timeout=10).dataset
    assert got.statistics.numeric[0].max == 2 and got.num_rows == 30


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {"features": np.zeros((5, 4), np.float64), "label": np.zeros(5, np.int32)},
            "upload batch 2 (sequence 1): tensor 'features' has dtype float64, earlier batches have float32",
        ),
        (
            {"features": np.zeros((5, 3), np.float32), "label": np.zeros(5, np.int32)},
            "upload batch 2 (sequence 1): tensor 'features' has per-row shape [3], earlier batches have [4]",
        ),
    ],
)
def test_upload_with_disagreeing_batches_is_invalid(env, store, bad, message):
    good = {"features": np.zeros((5, 4), np.float32), "label": np.zeros(5, np.int32)}
    with pytest.raises(grpc.RpcError) as info:
        collect_stub(env).UploadDataset(upload_messages("up-bad", [good, bad], ["a"]), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details()
    assert nothing_visible(env, store, "up-bad")


def test_upload_that_breaks_off_publishes_nothing(env, store):
    sent = threading.Event()

    def messages():
        yield collect_pb2.UploadDatasetRequest(dataset="up-broken")
        for i in range(3):
            yield collect_pb2.UploadDatasetRequest(
                batch=tensors.batch_from_numpy(
                    {"features": np.zeros((100, 4), np.float32), "label": np.zeros(100, np.int32)}, i
                )
            )
        sent.set()
        threading.Event().wait(30)  # never ends cleanly: the call is cancelled first

    future = collect_stub(env).UploadDataset.future(messages(), timeout=60)
    assert sent.wait(30)
    future.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    # the server saw the cancellation: the dataset never appears (checked until the next request is served)
    collect_stub(env).ListDatasets(collect_pb2.ListDatasetsRequest(), timeout=10)
    assert nothing_visible(env, store, "up-broken")


# --- validation against the previous version -----------------------------------


def test_new_version_is_checked_against_the_previous_one(env, tmp_path):
    first = write(tmp_path / "v1.csv", "a,b,color,label\n1,10,red,x\n2,20,blue,y\n")
    ingest(env, "evolving", first, label="label", categorical=["color"])
    second = write(tmp_path / "v2.csv", "a,color,label\n1,green,x\n9,red,z\n")
    last = ingest(env, "evolving", second, label="label", categorical=["color"])
    kinds = {(a.kind, a.field) for a in last.anomalies}
    assert ("missing_column", "features.b") in kinds
    assert ("out_of_range", "features.a") in kinds
    assert ("new_category", "categorical.color") in kinds
    assert ("new_class", "label") in kinds
    assert len(versions(env, "evolving")) == 2
    third = write(tmp_path / "v3.csv", "a,color,label\n100,red,x\n")
    error = ingest_error(env, "evolving", third, label="label", categorical=["color"], strict=True)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "strict" in error.details() and "features.a" in error.details()
    assert len(versions(env, "evolving")) == 2


def test_list_datasets_returns_statistics_newest_first(env, tmp_path):
    for i in range(2):
        ingest(env, "listed", write(tmp_path / f"l{i}.csv", f"a,label\n{i},x\n{i + 1},y\n"), label="label")
    listed = versions(env, "listed")
    assert len(listed) == 2 and listed[0].created_at >= listed[1].created_at
    assert all(d.statistics.numeric[0].count == 2 for d in listed)
    everything = collect_stub(env).ListDatasets(collect_pb2.ListDatasetsRequest(), timeout=10).datasets
    assert {"listed", "csv-keep"} <= {d.ref.name for d in everything}
