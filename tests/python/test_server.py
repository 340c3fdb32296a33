"""The server process itself: first-start artifacts, TLS certificate, auth, graceful shutdown."""

from __future__ import annotations

import os
import ssl
import stat

import pytest
import requests

from conftest import SUB, Server, toml_config


def test_admin_token_is_not_stored_in_the_clear(server):
    assert not (server.data / "admin-token").exists(), "the admin token is kept in a file"
    for p in server.data.iterdir():
        if p.is_file():
            assert server.token.encode() not in p.read_bytes(), f"the admin token is stored in {p}"
    assert len(server.token) >= 32, "admin token too short to be a secret"
    key = server.data / "token-signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600, oct(key.stat().st_mode)


def test_certificate_sans(server):
    cert = ssl._ssl._test_decode_cert(server.cert)  # stdlib helper; fine for a test
    sans = {v for _, v in cert.get("subjectAltName", ())}
    assert "127.0.0.1" in sans and "localhost" in sans, cert.get("subjectAltName")
    # hostname verification against both names succeeds
    for host in ("127.0.0.1", "localhost"):
        r = requests.get(f"https://{host}:{server.port}/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/vaults",
                         params={"api-version": "2026-08-01"}, headers={"Authorization": f"Bearer {server.token}"},
                         verify=server.cert, timeout=10)
        assert r.status_code == 200, (host, r.status_code, r.text[:300])


def test_plain_http_is_not_served(server):
    try:
        r = requests.get(f"http://127.0.0.1:{server.port}/subscriptions/{SUB}/providers/"
                         f"Microsoft.RecoveryServices/vaults?api-version=2026-08-01",
                         headers={"Authorization": f"Bearer {server.token}"}, timeout=5)
    except requests.exceptions.RequestException:
        return
    # some TLS stacks answer plaintext with a 400 page; that is still not the API
    assert r.status_code != 200, "the API answered over plain HTTP"


def test_sigterm_graceful_and_restart_keeps_state(tmp_path):
    """SIGTERM exits 0; a restart on the same data dir keeps the token and the vaults."""
    (tmp_path / "restore").mkdir()
    srv = Server(tmp_path, toml_config([tmp_path / "restore"], []), name="restart").start()
    raw = srv.http()
    v = f"/subscriptions/{SUB}/resourceGroups/rg9/providers/Microsoft.RecoveryServices/vaults/keepme"
    r = raw.put(v, json={"location": "westus", "sku": {"name": "Standard"}}, api_version="2026-08-01")
    assert r.status_code in (200, 201), r.text
    token = srv.token
    rc = srv.stop()
    assert rc == 0, f"SIGTERM should shut down cleanly, exit code {rc}:\n{srv.tail()}"
    srv.start()
    try:
        assert srv.token == token
        assert not any("admin token:" in line for line in srv._lines), "token printed again on a restart"
        r = srv.http().get(v, api_version="2026-08-01")
        assert r.status_code == 200, r.text
    finally:
        srv.stop()
