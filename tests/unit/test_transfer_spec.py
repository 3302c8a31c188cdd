"""The rules of train.base, train.freeze, train.fine_tune and train.weights (cookline.spec, offline)."""

import os

import pytest

from cookline import spec
from cookline.spec import train as train_spec

FILE = "name: t\ncollect: {{source: /tmp/pics, format: image-folder}}\ntrain: {{{train}}}\n"


def parse(train: str, base_dir: str = "", roots=None):
    return spec.parse(FILE.format(train=train), base_dir, roots).train


@pytest.mark.parametrize(
    "base, ref",
    [
        ("shapes:3", ("shapes", 3, "")),
        ("shapes@production", ("shapes", 0, "production")),
        ("shapes", ("shapes", 0, "")),
    ],
)
def test_registry_references(base, ref):
    assert train_spec.base_ref(base) == ref
    assert parse(f"model: cnn, base: '{base}'").base == base


@pytest.mark.parametrize("base", ["./net.keras", "models/net", "net.keras", "s3://bucket/models/net/"])
def test_paths_and_uris_are_not_registry_references(base):
    assert train_spec.is_path(base)


def test_defaults_with_a_base():
    train = parse("model: cnn, base: 'shapes:1', fine_tune: {epochs: 3}, learning_rate: 0.01")
    assert train.freeze == "base"  # only the new head trains at first
    assert list(train.hidden_units) == [] and list(train.conv_filters) == []  # the base's architecture
    assert train.fine_tune.unfreeze == "all" and train.fine_tune.learning_rate == pytest.approx(0.001)
    detector = parse("model: detector, base: 'shapes:1', fine_tune: {epochs: 2, unfreeze: 3}")
    assert detector.freeze == "base" and detector.backbone == "" and list(detector.conv_filters) == []


def test_layer_counts_are_numbers_in_a_file():
    train = parse("model: cnn, base: 'shapes:1', freeze: 6, fine_tune: {epochs: 2, unfreeze: 3}")
    assert train.freeze == "6" and train.fine_tune.unfreeze == "3"


@pytest.mark.parametrize(
    "train, message",
    [
        ("model: cnn, base: 'shapes:0'", "train.base: version '0' of 'shapes:0' is not a version"),
        ("model: cnn, base: 'Shapes@prod'", "train.base: 'Shapes@prod' is neither a registry model"),
        ("model: cnn, base: 'shapes@Prod'", "train.base: alias 'Prod' of 'shapes@Prod' is not an alias name"),
        ("model: cnn, base: 'shapes:1', conv_filters: [8]", "train.conv_filters: the architecture comes from"),
        ("model: detector, base: 'shapes:1', backbone: cnn", "train.backbone: the architecture comes from"),
        ("model: cnn, freeze: base", "train.freeze: needs train.base or train.weights"),
        ("model: cnn, base: 'a:1', freeze: 0", "train.freeze: '0' is not base, none or a number of layers"),
        ("model: cnn, base: 'a:1', freeze: some", "train.freeze: 'some' is not base, none or a number"),
        ("model: cnn, fine_tune: {epochs: 2}", "train.fine_tune: needs train.base or train.weights"),
        ("model: cnn, base: 'a:1', fine_tune: {}", "train.fine_tune.epochs: 0 is not in [1, 10000]"),
        ("model: cnn, base: 'a:1', fine_tune: {epochs: 0}", "train.fine_tune.epochs: 0 is not in [1, 10000]"),
        ("model: cnn, base: 'a:1', fine_tune: {epochs: 2, unfreeze: half}", "train.fine_tune.unfreeze: 'half'"),
        ("model: cnn, base: 'a:1', freeze: none, fine_tune: {epochs: 2}", "train.fine_tune: train.freeze is none"),
        ("model: cnn, base: 'a:1', workers: 2", "train.base: not available with train.workers > 1"),
        ("model: cnn, weights: imagenet", "train.weights: only mobilenet_v2 starts from stored weights"),
        ("model: mobilenet_v2, weights: imagenet, alpha: 0.6", "train.alpha: 0.6 has no ImageNet weights"),
        ("model: mobilenet_v2, weights: imagenet, base: 'a:1'", "train.weights: not with train.base"),
    ],
)
def test_bad_transfer_settings_name_the_field(train, message):
    with pytest.raises(spec.SpecError) as info:
        parse(train)
    assert message in str(info.value)
    assert info.value.field == str(info.value).split(":", 1)[0]


def test_a_local_base_stays_inside_the_source_roots(tmp_path):
    (tmp_path / "net.keras").write_bytes(b"")
    roots = [str(tmp_path), "/tmp"]  # the pipeline's collect.source is /tmp/pics
    train = parse("model: cnn, base: ./net.keras", base_dir=str(tmp_path), roots=roots)
    assert train.base == os.path.join(str(tmp_path), "net.keras")  # resolved against the file's folder
    with pytest.raises(spec.SourceDenied) as info:
        parse("model: cnn, base: /etc/net.keras", roots=roots)
    assert info.value.field == "train.base" and "COOKLINE_SOURCE_ROOTS" in str(info.value)


@pytest.mark.parametrize(
    "alpha, size, name",
    [
        (1.0, 224, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
        (0.35, 96, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"),
        (1.0, 64, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),  # Keras falls back to 224
    ],
)
def test_imagenet_weights_file_names_are_keras_own(alpha, size, name):
    assert train_spec.imagenet_weights_file(alpha, size) == name
