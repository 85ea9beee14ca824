"""Glance traffic follows the proxy environment keystoneauth follows (requests' rules):
HTTP_PROXY for http endpoints, HTTPS_PROXY (a CONNECT tunnel) for https ones, NO_PROXY
exempting hosts — every request kind, the lenient GET of sizeless images included."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest

from asyncmigrate.errors import UsageError
from asyncmigrate.proxies import environment_proxy
from tests.conftest import write_clouds_yaml
from tests.fakeglance import FakeGlance, FakeServer
from tests.forwardproxy import ForwardProxy

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets exactly the proxy variables it means."""
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def _seed(fake: FakeGlance) -> list[str]:
    ids = [fake.add_image(os.urandom(30_000 + i), name=f"p-{i}", disk_format="raw", container_format="bare")["id"]
           for i in range(2)]  # fmt: skip
    sizeless = fake.add_image(os.urandom(20_000), name="p-sizeless", disk_format="raw", container_format="bare")["id"]
    rec = fake.images[sizeless]  # read by the lenient GET (rawget.py)
    rec.size, rec.checksum, rec.os_hash_algo, rec.os_hash_value = None, None, None, None
    return [*ids, sizeless]


async def _cli(clouds_yaml: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    environ.update(env, OS_CLIENT_CONFIG_FILE=str(clouds_yaml))
    cmd = [sys.executable, "-m", "asyncmigrate", "copy", "--src-cloud", "src", "--dst-cloud", "dst", *args]
    proc = await anyio.run_process(cmd, check=False, env=environ)
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


def _relayed(proxy: ForwardProxy, fake: FakeGlance, server: FakeServer) -> list[tuple[str, str]]:
    """The fake's requests the proxy relayed, as (method, path without the prefix)."""
    out = []
    for method, target in proxy.seen:
        parts = urlsplit(target)
        if parts.port == server.port:
            out.append((method, parts.path.removeprefix(fake.prefix)))
    return out


@pytest.fixture
async def plain(tmp_path: Path) -> AsyncIterator[tuple[FakeGlance, FakeGlance, FakeServer, FakeServer, Path]]:
    """Two http fakes (the source behind /image) named src and dst."""
    src, dst = FakeGlance(prefix="/image"), FakeGlance()
    async with FakeServer(src) as s_srv, FakeServer(dst) as d_srv:
        yield src, dst, s_srv, d_srv, write_clouds_yaml(tmp_path / "clouds.yaml", {"src": s_srv.url, "dst": d_srv.url})


async def test_http_proxy_carries_every_glance_request(plain: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """HTTP_PROXY: every request both fakes answered came through the proxy — discovery, listing,
    create, upload, the lenient GET of a sizeless image — and the copy is bit-exact; with
    NO_PROXY naming the host, none does."""
    src, dst, s_srv, d_srv, clouds_yaml = plain
    ids = _seed(src)
    async with ForwardProxy().serve() as proxy:
        code, out = await _cli(clouds_yaml, {"HTTP_PROXY": proxy.url})
        assert code == 0, out
        assert all(dst.data(i) == src.data(i) for i in ids)
        for fake, server in ((src, s_srv), (dst, d_srv)):
            answered = sorted((r.method, r.path) for r in fake.requests)
            assert sorted(_relayed(proxy, fake, server)) == answered and answered
            assert {r.peer_port for r in fake.requests} <= proxy.upstream_ports  # none came directly
        assert ("GET", f"/v2/images/{ids[-1]}/file") in _relayed(proxy, src, s_srv)  # the lenient GET
        assert ("PUT", f"/v2/images/{ids[-1]}/file") in _relayed(proxy, dst, d_srv)
        proxy.seen.clear()
        for i in ids:
            del dst.images[i]
            dst.deleted.discard(i)
        before = len(dst.requests)
        code, out = await _cli(clouds_yaml, {"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"})
        assert code == 0, out
        assert proxy.seen == [] and all(dst.data(i) == src.data(i) for i in ids)
        assert not {r.peer_port for r in dst.requests[before:]} & proxy.upstream_ports


def _tls_files(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed: the server's context, the CA file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
             *, ca: bool) -> x509.Certificate:  # fmt: skip
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asyncmigrate test CA")])
    ca_cert = cert("asyncmigrate test CA", ca_key, ca_name, ca_key, ca=True)
    server = cert("127.0.0.1", key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(server.public_bytes(pem))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    return context, tmp_path / "ca.pem"


@pytest.fixture
async def tls(tmp_path: Path) -> AsyncIterator[tuple[FakeGlance, FakeGlance, FakeServer, FakeServer, Path]]:
    """Two https fakes whose CA the clouds.yaml names (cacert), as src and dst."""
    context, ca = _tls_files(tmp_path)
    src, dst = FakeGlance(prefix="/image"), FakeGlance()
    async with FakeServer(src, ssl_context=context) as s_srv, FakeServer(dst, ssl_context=context) as d_srv:
        path = write_clouds_yaml(tmp_path / "clouds.yaml", {"src": s_srv.url, "dst": d_srv.url})
        text = path.read_text().replace("    auth_type: none\n", f"    auth_type: none\n    cacert: {ca}\n")
        path.write_text(text)
        yield src, dst, s_srv, d_srv, path


async def test_https_proxy_tunnels_every_glance_connection(tls: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """HTTPS_PROXY with https endpoints: every connection to either Glance is a CONNECT tunnel
    through the proxy (aiohttp's and the lenient GET's), TLS still verified against the cloud's
    cacert; HTTP_PROXY alone does not apply to https (requests' rule)."""
    src, dst, s_srv, d_srv, clouds_yaml = tls
    ids = _seed(src)
    async with ForwardProxy(auth=("proxy-user", "pr0xy-s3cret")).serve() as proxy:
        code, out = await _cli(clouds_yaml, {"HTTPS_PROXY": proxy.url_with_credentials})
        assert code == 0, out
        assert all(dst.data(i) == src.data(i) for i in ids)
        tunnels = {target for method, target in proxy.seen if method == "CONNECT"}
        assert tunnels == {f"127.0.0.1:{s_srv.port}", f"127.0.0.1:{d_srv.port}"} and not proxy.refused
        # Every request, the lenient GET's included, came on a connection the proxy opened.
        for fake in (src, dst):
            assert fake.requests and {r.peer_port for r in fake.requests} <= proxy.upstream_ports
        assert "pr0xy-s3cret" not in out
        proxy.seen.clear()
        for i in ids:
            del dst.images[i]
        code, out = await _cli(clouds_yaml, {"HTTP_PROXY": proxy.url_with_credentials})
        assert code == 0, out
        assert proxy.seen == []


async def test_a_proxy_refusing_the_credentials_is_named_without_them(plain: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """A proxy answering 407 (wrong credentials in HTTP_PROXY): exit 3 at the first request, one
    line with the status; the password given appears nowhere."""
    src, _dst, _s, _d, clouds_yaml = plain
    _seed(src)
    async with ForwardProxy(auth=("u", "right")).serve() as proxy:
        wrong = proxy.url_with_credentials.replace(":right@", ":wr0ng-pw@")
        code, out = await _cli(clouds_yaml, {"HTTP_PROXY": wrong})
        assert code == 3 and "407" in out, out
        assert "wr0ng-pw" not in out and proxy.refused and not src.requests


async def test_a_socks_proxy_is_a_usage_error(plain: tuple) -> None:  # type: ignore[type-arg]
    """ALL_PROXY=socks5://…: aiohttp speaks only HTTP proxies — exit 2, one line, nothing sent."""
    src, _dst, _s, _d, clouds_yaml = plain
    code, out = await _cli(clouds_yaml, {"ALL_PROXY": "socks5://127.0.0.1:1080"})
    assert code == 2 and "not an http:// or https:// proxy" in out, out
    assert not src.requests


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"HTTPS_PROXY": "http://p:3128"}, "https://glance.example:9292"),
        ({"HTTPS_PROXY": "http://p:3128"}, "http://glance.example:9292"),
        ({"http_proxy": "http://lower:1", "HTTP_PROXY": "http://upper:2"}, "http://glance.example"),
        ({"ALL_PROXY": "http://all:3"}, "https://glance.example"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "glance.example"}, "https://glance.example:9292"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".example"}, "https://glance.example:9292"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "example"}, "https://glance.example:9292"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "10.0.0.0/8"}, "https://10.1.2.3:9292"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "10.0.0.0/8"}, "https://11.1.2.3:9292"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "glance.example:9292"}, "https://glance.example:9292"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "glance.example:443"}, "https://glance.example:9292"),
        ({"HTTPS_PROXY": "http://p:3128", "no_proxy": "*"}, "https://glance.example"),
        ({"HTTPS_PROXY": "p:3128"}, "https://glance.example"),
        ({"HTTPS_PROXY": "http://u:p%40ss@p:3128"}, "https://glance.example"),
    ],
)
def test_the_proxy_is_the_one_requests_chooses(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str) -> None:
    """For each environment, the proxy chosen for an endpoint is the one a requests session
    (keystoneauth's) uses for the same URL: NO_PROXY hosts, domains, CIDRs and ports included."""
    import requests

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    session = requests.Session()
    settings = session.merge_environment_settings(url, {}, None, None, None)
    expected = requests.utils.select_proxy(url, settings["proxies"])
    chosen = environment_proxy(url)
    if expected is None:
        assert chosen is None
    else:
        assert chosen is not None
        want = expected if "://" in expected else f"http://{expected}"
        assert chosen.url == want and (chosen.host, chosen.port) == (urlsplit(want).hostname, urlsplit(want).port)
        if "@" in want:
            assert chosen.authorization == "Basic dTpwQHNz" and "p@ss" not in repr(chosen)


def test_a_proxy_that_is_no_http_proxy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """socks5:// (requests with PySocks could use it, aiohttp cannot): a usage error naming it."""
    monkeypatch.setenv("HTTPS_PROXY", "socks5://u:secret@127.0.0.1:1080")
    with pytest.raises(UsageError, match=r"socks5://127.0.0.1:1080.*not an http:// or https:// proxy") as raised:
        environment_proxy("https://glance.example")
    assert "secret" not in str(raised.value)
