"""What a download may connect to and read (netguard), and img2dataset's distributors, against real servers."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import tracemalloc
import urllib.error
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from curation_helpers import cli, encode
from PIL import Image

from million_ird.httpserver import LocalServer, Response
from million_ird.netguard import (
    FileTooLarge,
    NetGuard,
    RefusedAddress,
    address_kind,
    build_opener,
    guarded_connection,
    refuse_nonpublic,
)
from million_ird.stages.download import DownloadConfig, check_config, download
from million_ird.stages.verify import verify_file
from million_ird.store import Store, StoreError

METADATA = "http://169.254.169.254/latest/meta-data/"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Safety net, not the code under test: a socket of these tests never connects beyond 127.0.0.0/8 or ::1,
    so a broken guard fails the test instead of sending a packet to 169.254.169.254 or 10.0.0.5."""
    connect = socket.socket.connect

    def loopback_connect(sock: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else ""
        if not (str(host).startswith("127.") or host in ("::1", "localhost")) and sock.family != socket.AF_UNIX:
            raise AssertionError(f"a test socket tried to connect to {address}")
        connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_connect)
ONLY_127_0_0_1 = NetGuard(allow_networks=("127.0.0.1/32",))  # stands in for "a public server" in these tests


@pytest.mark.parametrize("address,kind", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.0.0.5", "private"), ("172.16.3.4", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1%eth0", "link-local"), ("0.0.0.0", "unspecified"),
    ("::", "unspecified"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-public"), ("8.8.8.8", None), ("93.184.215.14", None), ("2606:4700::1111", None),
])
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(address) == kind


def test_refuse_nonpublic_names_host_address_and_flag() -> None:
    with pytest.raises(RefusedAddress) as err:
        refuse_nonpublic("10.0.0.5", host="example.com")
    assert str(err.value) == ("refused: example.com resolves to 10.0.0.5, a private address "
                              "(pass --allow-private to allow)")
    refuse_nonpublic("8.8.8.8", host="dns.google")  # public: no error
    refuse_nonpublic("10.0.0.5", guard=NetGuard(allow_private=True))


def test_connect_time_check_on_a_resolved_name() -> None:
    with LocalServer({"/a": Response(b"a")}) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        with pytest.raises(RefusedAddress, match=r"refused: localhost resolves to (127\.0\.0\.1|::1), a loopback"):
            guarded_connection(NetGuard())(("localhost", port), 5)
        assert server.hits == Counter()
        guarded_connection(NetGuard(allow_private=True))(("localhost", port), 5).close()


def test_connects_to_the_address_it_checked_not_a_second_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a name that answers an allowed address first and another one later (a stand-in resolver)."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "169.254.169.254", "169.254.169.254"])

    def rebinding_dns(host: str, port: int, *args: object) -> list:
        return real(next(answers) if host == "rebind.test" else host, port, *args)

    with LocalServer({"/a.png": Response(b"png")}) as server:
        monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
        port = server.base_url.rsplit(":", 1)[1]
        assert build_opener(ONLY_127_0_0_1).open(f"http://rebind.test:{port}/a.png", timeout=5).read() == b"png"
    assert server.hits["/a.png"] == 1 and next(answers) == "169.254.169.254"  # checked and connected: one lookup


@contextmanager
def _plain_server(host: str, body: bytes, length: bool = True) -> Iterator[tuple[str, Counter]]:
    """An HTTP/1.0 server on `host` answering `body` to every path (with or without a Content-Length)."""
    hits: Counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            hits[self.path] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_every_redirect_hop_is_checked() -> None:
    with _plain_server("127.0.0.2", encode("PNG", 8, 8)) as (other, hits):
        routes = {"/to-metadata": Response(b"", 302, headers=(("Location", METADATA),)),
                  "/to-other": Response(b"", 302, headers=(("Location", other + "/x.png"),)),
                  "/to-ftp": Response(b"", 302, headers=(("Location", "ftp://10.0.0.5/x.png"),))}
        with LocalServer(routes) as server:
            opener = build_opener(ONLY_127_0_0_1)
            started = time.monotonic()
            with pytest.raises(urllib.error.URLError, match="refused: 169.254.169.254 is a link-local address"):
                opener.open(server.url("/to-metadata"), timeout=5)
            assert time.monotonic() - started < 2  # refused before any connection attempt, not timed out
            with pytest.raises(urllib.error.URLError, match="refused: 127.0.0.2 is a loopback address"):
                opener.open(server.url("/to-other"), timeout=5)
            assert not hits  # the second hop never reached its server
            with pytest.raises(urllib.error.URLError, match="only http"):
                opener.open(server.url("/to-ftp"), timeout=5)
            assert build_opener(NetGuard(allow_private=True)).open(server.url("/to-other"), timeout=5).read()
            assert hits["/x.png"] == 1 and server.hits["/to-other"] == 2


def test_body_cap_with_and_without_content_length() -> None:
    body = np.random.default_rng(0).bytes(50_000)
    with _plain_server("127.0.0.1", body, length=False) as (url, _), LocalServer({"/b": Response(body)}) as server:
        capped = build_opener(NetGuard(allow_private=True, max_bytes=10_000))
        with pytest.raises(FileTooLarge, match=r"file is 0.05 MB > max-bytes 0.01 MB \(raise --max-bytes to allow\)"):
            capped.open(server.url("/b"), timeout=5)  # refused from Content-Length, body unread
        with capped.open(url + "/b", timeout=5) as resp, pytest.raises(FileTooLarge, match="stopped reading"):
            resp.read()  # no Content-Length: reading stops just past the cap
        assert build_opener(NetGuard(allow_private=True, max_bytes=0)).open(url + "/b", timeout=5).read() == body
        assert build_opener(NetGuard(allow_private=True, max_bytes=50_000)).open(server.url("/b")).read() == body


def _ingest_urls(store: Store, urls: list[str], tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    cli("ingest", "-m", str(store.root), "--urls", str(listing), "--source", "web")


def _errors(store: Store) -> dict[str, str | None]:
    rows = store.query("SELECT url, status, error FROM catalog").to_pylist()
    return {r["url"].rsplit("/", 1)[1]: (r["error"] if r["status"] != "ok" else None) for r in rows}


def test_download_refuses_private_hosts_by_default_and_caps_bytes(tmp_path: Path) -> None:
    """Through img2dataset's own worker processes: refused unless allowed; over --max-bytes from the header."""
    noise = encode("PNG", 120, 120, seed=1)  # ~40 kB of noise: over the 20 kB cap below
    routes = {"/small.png": Response(encode("PNG", 16, 16), content_type="image/png"),
              "/large.png": Response(noise, content_type="image/png"),
              "/claims-50MB.png": Response(encode("PNG", 16, 16), content_type="image/png",
                                           declared_length=50_000_000)}
    assert len(noise) > 20_000
    with LocalServer(routes) as server:
        store = Store(tmp_path / "store")
        _ingest_urls(store, [server.url(p) for p in routes], tmp_path)
        stats = download(store, DownloadConfig(threads=4, timeout=5, max_bytes=20_000))
        refusal = "refused: 127.0.0.1 is a loopback address (pass --allow-private to allow)"
        assert stats["failed"] == 3 and all(refusal in e for e in _errors(store).values())
        assert server.hits == Counter()  # nothing reached the server
        stats = download(store, DownloadConfig(threads=4, timeout=5, max_bytes=20_000, allow_private=True))
        errors = _errors(store)
        assert errors["small.png"] is None
        assert f"file is {len(noise) / 1e6:.3g} MB > max-bytes 0.02 MB (raise --max-bytes to allow)" in errors["large.png"]
        assert "file is 50 MB > max-bytes 0.02 MB" in errors["claims-50MB.png"]
        assert stats["ok"] == 1 and not any((store.root / "_work").iterdir())


def test_local_file_over_max_bytes_fails_from_stat_unread(tmp_path: Path) -> None:
    folder = tmp_path / "DIV2K"
    folder.mkdir()
    (folder / "ok.png").write_bytes(encode("PNG", 32, 32))
    huge = folder / "huge.png"
    huge.write_bytes(encode("PNG", 32, 32))
    with huge.open("r+b") as fh:
        fh.truncate(300_000_000)  # sparse: 300 MB by stat, nothing on disk
    store = Store(tmp_path / "store")
    cli("ingest", "-m", str(store.root), "--folder", str(folder))
    started = time.monotonic()
    download(store, DownloadConfig())  # default --max-bytes: 200 MB
    assert time.monotonic() - started < 30
    rows = {Path(r["path"]).name: r for r in store.query("SELECT * FROM catalog").to_pylist()}
    assert rows["ok.png"]["status"] == "ok"
    assert rows["huge.png"]["error"] == "file is 300 MB > max-bytes 200 MB (raise --max-bytes to allow)"
    assert rows["huge.png"]["bytes"] == 300_000_000


def test_verify_file_never_holds_the_whole_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (1200, 1200, 3), dtype=np.uint8)).save(path, compress_level=1)
    size = path.stat().st_size
    assert size > 4_000_000
    tracemalloc.start()
    try:
        v = verify_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert v.error is None and (v.width, v.height, v.bytes) == (1200, 1200, size)
    assert v.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert peak < size / 2, (peak, size)  # Python-side buffers: chunks, never the file
    assert verify_file(path, max_bytes=size - 1).error.startswith("file is")
    assert verify_file(path, max_bytes=0).error is None


def test_distributor_is_validated_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"^unknown distributor 'dask'; valid: multiprocessing, ray, pyspark$"):
        check_config(DownloadConfig(distributor="dask"))
    with pytest.raises(StoreError, match="max-bytes must be >= 0"):
        check_config(DownloadConfig(max_bytes=-1))
    check_config(DownloadConfig())
    try:
        import pyspark  # noqa: F401
    except ImportError:
        with pytest.raises(StoreError, match="needs the pyspark package: pip install pyspark"):
            download(Store(tmp_path / "store"), DownloadConfig(distributor="pyspark"))


def _block_shard(work: Path, shard: str, done: threading.Event) -> None:
    """Put a file where img2dataset will create shard `shard`'s folder, as soon as the run's work folder exists."""
    while not done.is_set():
        for out in work.glob("*/out"):
            (out / shard).write_bytes(b"")
            done.set()
            return
        time.sleep(0.002)


def test_ray_failed_shard_rows_are_fetched_on_the_next_run(tmp_path: Path) -> None:
    """img2dataset's Ray distributor never retries a failed shard; the image-level resume fetches its rows."""
    pytest.importorskip("ray")
    routes = {f"/r/{i}.png": Response(encode("PNG", 24, 24, seed=i), content_type="image/png") for i in range(6)}
    with LocalServer(routes) as server:
        store = Store(tmp_path / "store")
        _ingest_urls(store, [server.url(p) for p in routes], tmp_path)
        cfg = DownloadConfig(distributor="ray", shard_size=2, threads=2, timeout=5, allow_private=True)
        blocked = threading.Event()
        blocker = threading.Thread(target=_block_shard, args=(store.root / "_work", "00001", blocked))
        blocker.start()
        try:
            first = download(store, cfg)
        finally:
            blocked.set()
            blocker.join()
        assert (first["attempted"], first["ok"]) == (4, 4)  # shard 00001 failed: its 2 rows have no outcome
        done = set(store.query("SELECT url FROM catalog WHERE status = 'ok'").column(0).to_pylist())
        hits_before = sum(server.hits.values())
        second = download(store, cfg)
        assert (second["attempted"], second["ok"]) == (2, 2)
        assert sum(server.hits.values()) - hits_before == 2  # only the failed shard's rows, fetched again
        assert all(server.hits[url.split(server.base_url)[1]] == 1 for url in done)
        assert store.query("SELECT count(*) FROM catalog WHERE status = 'ok'").column(0)[0].as_py() == 6
