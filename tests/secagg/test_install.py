"""Without the optional ``cryptography`` package, importing secagg says how to install it."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "cryptography":
                raise ModuleNotFoundError(f"No module named {name!r} (not installed)")
            return None

    sys.meta_path.insert(0, Missing())
    try:
        import fedlake.secagg.shamir  # a submodule still goes through the package
    except ImportError as exc:
        print(exc)
    """
)


def test_missing_cryptography_names_the_extra():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert "secure aggregation (fedlake.secagg) needs the optional package 'cryptography'" in (
        proc.stdout
    )
    assert "pip install 'fedlake[crypto]'" in proc.stdout
