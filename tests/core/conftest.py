"""Core test settings: the marker grouping tests that run transformers' TF / Flax
classes in a subprocess (slowest part of the core suite)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "oracle_subprocess: runs transformers TF/Flax in a subprocess (deselect with -m 'not oracle_subprocess')"
    )
