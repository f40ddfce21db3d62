"""`mwa serve --host 0.0.0.0` warns loudly before it listens and keeps its Host allow-list (the DNS-rebinding
guard): this machine's names and every `--allow-host` are answered, any other name gets 400. A real server."""

from __future__ import annotations

import socket

import pytest

from mwa_cli.serve.hosts import allowed_hosts, bind_warning
from tests.unit.serve.test_serve import Server, get, make_index


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    _, _, index = make_index(tmp_path_factory.mktemp("public"))
    server = Server(index, "--host", "0.0.0.0", "--allow-host", "Inspect-PC.factory.local")
    yield server
    server.stop()


def test_a_wildcard_bind_answers_only_the_allowed_names(public):
    status = public.base + "/api/status"
    assert get(status, host="evil.example")[0] == 400
    assert get(status, host="evil.example:8765")[0] == 400
    assert get(status, host="inspect-pc.factory.local")[0] == 200
    assert get(status, host=socket.gethostname())[0] == 200  # what a colleague types
    assert get(status)[0] == 200  # 127.0.0.1 on this PC


def test_a_wildcard_bind_warns_before_it_listens(public):
    err = " ".join(public.stop().split())
    assert "warning: listening on every network interface" in err and "there is no login" in err
    assert "inspect-pc.factory.local" in err and "--host 127.0.0.1" in err


def test_loopback_binds_say_nothing_and_answer_loopback_names_only():
    assert bind_warning("127.0.0.1", 8765, allowed_hosts("127.0.0.1")) is None
    assert bind_warning("::1", 8765, allowed_hosts("::1")) is None
    assert "evil.example" not in allowed_hosts("0.0.0.0") and "*" not in allowed_hosts("0.0.0.0")
    assert "192.0.2.7" in allowed_hosts("192.0.2.7") and bind_warning("192.0.2.7", 1, ["192.0.2.7"])
