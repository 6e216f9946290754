"""Shared fixtures: throw-away TLS certificates from scripts/make-test-certs.sh.

`certs` is a directory holding ca.pem, server.pem/.key, client.pem/.key and the rest that
script lists, made once per test session; tests that use it skip where openssl is missing.
"""

import os
import shutil
import subprocess

import pytest

MAKE_CERTS = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "make-test-certs.sh")


class Certs:
    """The certificate directory; ``certs.path("client.pem")`` names a file in it."""

    def __init__(self, directory):
        self.directory = str(directory)

    def path(self, name):
        return os.path.join(self.directory, name)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (scripts/install-deps.sh installs it)")
    directory = tmp_path_factory.mktemp("certs")
    done = subprocess.run(["bash", MAKE_CERTS, str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"make-test-certs.sh failed:\n{done.stdout}{done.stderr}"
    return Certs(directory)
