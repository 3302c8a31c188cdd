"""The Keras fixes for MultiWorkerMirroredStrategy (services/train/keras_fix.py) are pinned: this
fails as soon as Keras changes the code they stand in for, so they are re-checked, not silently kept."""

import keras

from services.train import keras_fix


def test_the_patched_keras_code_is_the_code_the_fixes_were_written_for():
    assert keras.__version__.startswith(keras_fix.PINNED_KERAS), keras.__version__
    assert keras_fix.source_digests() == keras_fix.PATCHED_SOURCES, (
        "Keras changed the functions services/train/keras_fix.py replaces: re-check keras-team/keras#20585, "
        "run tests/integration/test_distributed.py, then update or drop the fixes"
    )
