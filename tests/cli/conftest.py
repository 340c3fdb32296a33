"""Fixtures for the Azure CLI journey: the real `az` (azure-cli from PyPI, in tests/cli/.venv) against the
real rsvault binary.

How `az` is pointed at rsvault, with no Azure AD anywhere:
- a custom cloud (`az cloud register --endpoint-resource-manager https://127.0.0.1:PORT/
  --endpoint-active-directory-resource-id https://127.0.0.1:PORT/ --skip-endpoint-discovery`, `az cloud set`);
- TLS trust of rsvault's self-signed certificate through REQUESTS_CA_BUNDLE (the CLI's requests/azure-core
  stack honours it);
- authentication through the CLI's own managed-identity credential: the profile (AZURE_CONFIG_DIR, a temp
  dir) holds a system-assigned managed-identity account, exactly the record `az login --identity` writes,
  and IDENTITY_ENDPOINT / IDENTITY_HEADER (the App Service managed-identity protocol, which MSAL's
  ManagedIdentityClient speaks) point at a local token endpoint started here that hands out rsvault's admin
  token for the resource `https://127.0.0.1:PORT/`. Every `az` command then sends
  `Authorization: Bearer <admin token>` to rsvault.
  `az login --identity` itself cannot be used: it decodes the token as a JWT to read its `tid` claim
  (azure/cli/core/_profile.py, login_with_managed_identity: `jwt.decode(token, ...)['tid']`) and then lists
  subscriptions; rsvault's admin token is opaque. test_cli_journey.py::test_az_login_identity documents it.

The server, the sources and the id helpers come from the Python SDK suite's harness
(tests/python/conftest.py), loaded here as a plain module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("rsvault_harness", HERE.parent / "python" / "conftest.py")
H = importlib.util.module_from_spec(_spec)
sys.modules["rsvault_harness"] = H
_spec.loader.exec_module(H)

SUB = H.SUB
TENANT = "00000000-0000-0000-0000-000000000000"
AZ_TIMEOUT = float(os.environ.get("RSVAULT_AZ_TIMEOUT", "180"))
# throttle for the whole server: the small shares back up in well under a second, the big one takes
# BIG / RATE seconds - long enough for `az backup job stop` to find it running.
RATE = 2 * 1024 * 1024
BIG = 32 * 1024 * 1024
# the VM source, and the restore root named as a storage account (the staging account of restore-disks); the
# account sits in the vaults' resource group, so `--storage-account NAME` resolves it as Azure's docs type it
VM = "clivm"
STAGING = "clistaging"
STAGING_RG = "rsvault-cli"


class TokenEndpoint:
    """The App Service managed-identity endpoint (GET ?api-version=2019-08-01&resource=..., header
    X-IDENTITY-HEADER), answering with rsvault's admin token. Records every request."""

    SECRET = "rsvault-cli-tests"

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                q = parse_qs(urlsplit(self.path).query)
                outer.requests.append({"path": self.path, "resource": (q.get("resource") or [""])[0],
                                       "header": self.headers.get("X-IDENTITY-HEADER")})
                if self.headers.get("X-IDENTITY-HEADER") != TokenEndpoint.SECRET:
                    body, code = {"statusCode": 401, "message": "bad X-IDENTITY-HEADER"}, 401
                else:
                    body, code = {"access_token": outer.token, "expires_on": str(int(time.time()) + 3600),
                                  "resource": (q.get("resource") or [""])[0], "token_type": "Bearer"}, 200
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/msi/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class AzResult:
    def __init__(self, args, proc: subprocess.CompletedProcess, seconds: float):
        self.args = args
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.seconds = seconds

    @property
    def json(self):
        return json.loads(self.stdout) if self.stdout.strip() else None

    def __repr__(self):
        return (f"az {' '.join(self.args)}\n-> exit {self.rc} in {self.seconds:.1f}s\n"
                f"stdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}")


class Az:
    """Runs the real `az` (python -m azure.cli from this venv) with an isolated config dir."""

    def __init__(self, config_dir: Path, env: dict, log: list | None = None) -> None:
        self.config_dir = config_dir
        self.env = env
        self.log: list[AzResult] = [] if log is None else log
        self.spawned: list[subprocess.Popen] = []

    def with_config_dir(self, config_dir: Path) -> "Az":
        """The same az with another profile (another active cloud); shares the command log."""
        config_dir.mkdir(exist_ok=True)
        return Az(config_dir, dict(self.env, AZURE_CONFIG_DIR=str(config_dir)), self.log)

    def __call__(self, *args, ok=True, output="json") -> AzResult:
        argv = [str(a) for a in args]
        if output and "-o" not in argv and "--output" not in argv:
            argv += ["-o", output]
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "azure.cli", *argv], env=self.env, capture_output=True,
                              text=True, timeout=AZ_TIMEOUT, stdin=subprocess.DEVNULL)
        res = AzResult(argv, proc, time.monotonic() - t0)
        self.log.append(res)
        if ok and res.rc != 0:
            raise AssertionError(f"az command failed:\n{res!r}")
        return res


    def spawn(self, *args, output="json") -> subprocess.Popen:
        """Start an az command in the background (for commands that sleep, like `az backup job wait`)."""
        argv = [str(a) for a in args] + (["-o", output] if output else [])
        proc = subprocess.Popen([sys.executable, "-m", "azure.cli", *argv], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        self.spawned.append(proc)
        return proc


class CliEnv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.restore_root = root / "restore"
        self.share = root / "shares" / "share1"
        self.big = root / "shares" / "bigshare"
        self.vm_disks = [root / "vms" / "clivm" / "disk0.img", root / "vms" / "clivm" / "disk1.img"]
        self.server: H.Server
        self.mi: TokenEndpoint
        self.az: Az


@pytest.fixture(scope="session")
def cli(tmp_path_factory) -> CliEnv:
    root = tmp_path_factory.mktemp("rsvault-cli")
    e = CliEnv(root)
    e.restore_root.mkdir()
    H.make_share(e.share, seed=31)
    H.make_random_file(e.big / "big.bin", BIG, seed=32)
    H.make_disk(e.vm_disks[0], size=4 * 1024 * 1024, seed=33)
    H.make_disk(e.vm_disks[1], size=2 * 1024 * 1024, seed=34)
    sources = [
        # no location: the VM is in the region of the first vault, so enable-for-vm's region check passes
        {"kind": "vm", "resource_group": H.SRC_RG, "name": VM, "disks": [str(d) for d in e.vm_disks]},
        {"kind": "fileshare", "resource_group": H.SRC_RG, "storage_account": "acct1", "share": "share1",
         "path": str(e.share)},
        {"kind": "fileshare", "resource_group": H.SRC_RG, "storage_account": "acct1", "share": "bigshare",
         "path": str(e.big)},
    ]
    cfg = H.toml_config([e.restore_root], sources, retry_after=1, page_size=2, bps=RATE,
                        restore_accounts=[(STAGING_RG, STAGING, e.restore_root)])
    (root / "server").mkdir()
    e.server = H.Server(root / "server", cfg, name="cli").start()
    e.mi = TokenEndpoint(e.server.token)
    config_dir = root / "azure-config"
    config_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_"))}
    env.update({
        "AZURE_CONFIG_DIR": str(config_dir),
        "REQUESTS_CA_BUNDLE": e.server.cert,
        "IDENTITY_ENDPOINT": e.mi.url,
        "IDENTITY_HEADER": TokenEndpoint.SECRET,
        "AZURE_CORE_COLLECT_TELEMETRY": "false",
        "AZURE_CORE_SURVEY_MESSAGE": "false",
        "AZURE_CORE_NO_COLOR": "true",
    })
    env.pop("ACC_CLOUD", None)
    e.az = Az(config_dir, env)
    yield e
    for proc in e.az.spawned:  # a background az left running by a failed test
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    e.mi.close()
    rc = e.server.stop()
    slow = sorted(e.az.log, key=lambda r: -r.seconds)[:5]
    print(f"\n[rsvault cli server exited with {rc}; log at {e.server.log_path}; {len(e.az.log)} az commands, "
          f"{sum(r.seconds for r in e.az.log):.0f}s in az; slowest: "
          + "; ".join(f"{' '.join(r.args[:3])} {r.seconds:.1f}s" for r in slow) + "]")


def seed_managed_identity_profile(config_dir: Path, cloud: str) -> None:
    """The account `az login --identity` would store for a system-assigned identity, in the CLI's own
    profile format (azure/cli/core/_profile.py: user.name systemAssignedIdentity, assignedIdentityInfo MSI)."""
    p = config_dir / "azureProfile.json"
    prof = json.loads(p.read_text(encoding="utf-8-sig")) if p.exists() else {}
    prof["subscriptions"] = [{
        "id": SUB, "name": "rsvault", "state": "Enabled", "isDefault": True, "tenantId": TENANT,
        "homeTenantId": TENANT, "managedByTenants": [], "environmentName": cloud,
        "user": {"name": "systemAssignedIdentity", "type": "servicePrincipal", "assignedIdentityInfo": "MSI"},
    }]
    p.write_text(json.dumps(prof))


@pytest.fixture(autouse=True)
def _server_alive(request):
    yield
    e = request.node.funcargs.get("cli") if hasattr(request.node, "funcargs") else None
    if e is not None and not e.server.alive():
        pytest.fail("rsvault died during this test:\n" + e.server.tail(), pytrace=False)
