"""The verifier keeps Pillow's decompression-bomb limit armed for every other reader in the process."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from curation_helpers import cli, encode
from PIL import Image

from million_ird.stages.verify import verify_bytes, verify_file

PILLOW_DEFAULT = int(1024 * 1024 * 1024 // 4 // 3)  # PIL.Image.MAX_IMAGE_PIXELS as Pillow ships it
FORMATS = [("PNG", "png"), ("JPEG", "jpeg"), ("BMP", "bmp"), ("TIFF", "tiff"), ("GIF", "gif"), ("WEBP", "webp")]
LOW = 2000  # a lowered Pillow limit, so a 100x80 image is "large" to Pillow (8000 px > 2 * LOW)


def test_importing_the_verifier_leaves_pillow_limit_at_its_default() -> None:
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT


def test_fresh_process_big_image_verifies_and_pillow_still_refuses_it(tmp_path: Path) -> None:
    """185 MP (over Pillow's 179 MP hard limit, under the verifier's 200 MP): ok, while Image.open refuses it."""
    script = textwrap.dedent("""
        import io, sys
        from PIL import Image
        before = Image.MAX_IMAGE_PIXELS
        import million_ird.cli, million_ird.stages.download, million_ird.sources.ingest  # noqa: F401
        from million_ird.stages.verify import DEFAULT_MAX_PIXELS, verify_bytes
        assert Image.MAX_IMAGE_PIXELS == before, ("import changed the limit", Image.MAX_IMAGE_PIXELS)
        buf = io.BytesIO()
        Image.new("1", (13600, 13600)).save(buf, "PNG")
        v = verify_bytes(buf.getvalue())
        assert v.error is None and (v.width, v.height) == (13600, 13600), v
        assert 13600 * 13600 < DEFAULT_MAX_PIXELS
        assert Image.MAX_IMAGE_PIXELS == before, ("verifying changed the limit", Image.MAX_IMAGE_PIXELS)
        try:
            Image.open(io.BytesIO(buf.getvalue()))
        except Image.DecompressionBombError:
            print("still guarded", before)
            sys.exit(0)
        sys.exit("Image.open accepted a 185 MP image: the guard is disarmed")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["still", "guarded", str(PILLOW_DEFAULT)]


@pytest.mark.parametrize("fmt,name", FORMATS)
def test_large_but_allowed_image_verifies_under_a_lower_pillow_limit(monkeypatch: pytest.MonkeyPatch, fmt: str,
                                                                     name: str) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LOW)
    data = encode(fmt, 100, 80, seed=1)
    with pytest.raises(Image.DecompressionBombError):  # Pillow alone refuses it: its guard is armed
        Image.open(io.BytesIO(data)).load()
    v = verify_bytes(data, max_pixels=10_000)
    assert v.error is None and v.format == name and (v.width, v.height) == (100, 80), v.error
    assert Image.MAX_IMAGE_PIXELS == LOW
    refused = verify_bytes(data, max_pixels=5000)  # the verifier's own --max-pixels still decides
    assert refused.error is not None and "decompression-bomb guard: 100x80" in refused.error
    assert Image.MAX_IMAGE_PIXELS == LOW


def test_threads_never_disarm_the_limit_and_leave_it_as_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LOW)
    blobs = [encode(fmt, 100, 80, seed=i) for i, (fmt, _) in enumerate(FORMATS)] * 8
    seen: set[int | None] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.add(Image.MAX_IMAGE_PIXELS)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda b: verify_bytes(b, max_pixels=10_000), blobs))
    finally:
        done.set()
        watcher.join()
    assert [r.error for r in results] == [None] * len(blobs)
    assert None not in seen and min(seen) == LOW
    assert Image.MAX_IMAGE_PIXELS == LOW


def test_verify_file_and_folder_ingest_read_large_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local folder's declared size comes from the header even above Pillow's limit (subprocess: real limit)."""
    folder = tmp_path / "big"
    folder.mkdir()
    buf = io.BytesIO()
    Image.new("1", (13600, 13600)).save(buf, "PNG")
    (folder / "huge.png").write_bytes(buf.getvalue())
    (folder / "small.png").write_bytes(encode("PNG", 64, 48))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LOW)
    assert verify_file(folder / "huge.png").error is None
    store = tmp_path / "store"
    cli("ingest", "-m", str(store), "--folder", str(folder), "--min-side", "32")
    rows = cli("query", "-m", str(store), "--format", "csv",
               "SELECT path, width, height FROM images ORDER BY path").stdout.splitlines()
    assert rows[1:] == [f"{folder / 'huge.png'},13600,13600", f"{folder / 'small.png'},64,48"]
