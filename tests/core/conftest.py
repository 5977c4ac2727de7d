import os

import pytest

# Every EXR header carries DateTime, the time of writing (`output.export_datetime`): pinned for
# the whole session so that runs compared byte for byte (local against chunks, Ray, a rerun)
# write the same bytes however far apart they ran. Set here, before any test module builds its
# subprocess environment from os.environ; test_pipeline's DateTime tests unset it themselves.
os.environ["SOURCE_DATE_EPOCH"] = "1700000000"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random checkpoint saved in the hub layout, loaded through the real code."""
    from rollingdepth_core.random_checkpoint import make_random_checkpoint

    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", size="tiny")
