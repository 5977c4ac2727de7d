import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# The modules that take longest (measured with `scripts/test.sh --durations=0` on 2 cores), run
# first: scripts/test.sh hands whole modules to its workers in collection order
# (`--dist loadscope --no-loadscope-reorder`), so the run ends on short modules, not on a long
# one that started late. Only the order changes, never what runs.
LONGEST_FIRST = (
    "tests/core/test_release.py",
    "tests/core/test_farm_ray.py",
    "tests/core/test_run_contract.py",
    "tests/core/test_farm_chunks.py",
    "tests/core/test_cli.py",
    "tests/core/test_colorspace.py",
    "tests/core/test_farm.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
