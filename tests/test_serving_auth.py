"""The service against a real ``redis-server`` that requires a password, over TCP and over TLS.

Workers and producers take the password in the URL (``redis://:PASS@host`` or ``rediss://``); a
wrong or missing password is a one-line error that does not print the password.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from serving.redis_server import RedisServer, TlsFiles, redact_url

PASSWORD = "s3cr3t-Pa55"


def self_signed(folder: Path) -> TlsFiles:
    """A certificate for 127.0.0.1 signed by itself (it is its own CA), made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return TlsFiles(cert=cert, key=key, ca=cert)


@pytest.fixture(params=["tcp", "tls"])
def locked_server(request, tmp_path: Path, redis_binary: str):
    """A real redis-server with ``requirepass``, plain or TLS-only."""
    tls = self_signed(tmp_path / "tls") if request.param == "tls" else None
    server = RedisServer(tmp_path / "redis", password=PASSWORD, tls=tls).start()
    yield server
    server.stop()


def with_password(url: str, password: str | None) -> str:
    """``url`` with another password (None: none at all)."""
    scheme, rest = url.split("://", 1)
    host = rest.split("@", 1)[1]
    return f"{scheme}://:{password}@{host}" if password is not None else f"{scheme}://{host}"


def test_the_server_refuses_a_client_without_the_password(locked_server) -> None:
    import redis

    assert locked_server.client().ping()
    with pytest.raises(redis.AuthenticationError):
        locked_server.client(password=None).ping()
    conf = locked_server.folder / "redis.conf"
    assert conf.stat().st_mode & 0o077 == 0  # the password is in a file only its owner reads
    assert PASSWORD not in " ".join(locked_server.command()[1:])


def test_worker_and_replay_take_the_password_in_the_url(locked_server, stream_case, serving_cli,
                                                        tmp_path: Path) -> None:
    url = locked_server.url
    assert f":{PASSWORD}@" in url and url.startswith("rediss://" if locked_server.tls else "redis://")
    log = tmp_path / "w.log"
    worker = serving_cli.worker(url, stream_case, "--exit-when-idle", 5, log=log)
    try:
        done = serving_cli.run("replay", "--redis", url, "--input", stream_case.log, "--rate", 4000,
                               "--no-progress")
        assert done.returncode == 0, done.stderr
        assert worker.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        worker.kill()
    assert PASSWORD not in log.read_text() + done.stdout + done.stderr
    assert redact_url(url) in log.read_text()
    served = {k.decode(): json.loads(v)
              for k, v in locked_server.client().hgetall("logrl:session-verdicts").items()}
    offline = pd.read_parquet(stream_case.offline)
    differ = [row["sequence_id"] for row in offline.to_dict("records")
              if (served.get(row["sequence_id"]) or {}).get("pred") != row["pred"]]
    assert len(offline) > 300 and not differ, differ[:5]


@pytest.mark.parametrize("password", ["wrong-one", None], ids=["wrong", "missing"])
@pytest.mark.parametrize("command", [("status",), ("replay", "--rate", "100", "--no-progress")])
def test_a_wrong_or_missing_password_is_a_one_line_error(locked_server, stream_case, serving_cli,
                                                         password: str | None,
                                                         command: tuple[str, ...]) -> None:
    url = with_password(locked_server.url, password)
    extra = ("--input", str(stream_case.log)) if command[0] == "replay" else ()
    done = serving_cli.run(*command, "--redis", url, *extra, timeout=60)
    err = done.stderr.strip()
    assert done.returncode == 2, (done.returncode, err)
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "refused the credentials" in err, err
    assert PASSWORD not in err and (password is None or password not in err), err
    assert locked_server.client().xlen("logrl:events:0") == 0  # nothing was published
