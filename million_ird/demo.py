"""`million-ird demo`: the whole pipeline on the bundled sample, served from 127.0.0.1 (no network).

The sample's URLs live on a reserved host name (`.invalid` never resolves, RFC 2606), and the local
server (any free port) is the HTTP proxy of that one download run. So the URLs, hence the image ids,
the split and every figure, are the same on every run and machine, and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from million_ird.httpserver import LocalServer, Response
from million_ird.lock import LOCK_NAME
from million_ird.store import Store, StoreError

SAMPLE = Path(__file__).resolve().parents[1] / "manifests" / "demo"
DEFAULT_OUT = SAMPLE / "store"  # `python -m dynet_ref.train --data manifests/` finds it there
RECIPE = SAMPLE / "recipe.yaml"
TRAIN_CONFIG = "train.yaml"  # the trainer applies a store's own train.yaml over its defaults
DEMO_HOST = "demo.million-ird.invalid"
DEMO_BASE = f"http://{DEMO_HOST}"
MARKER = ".million-ird-demo"
MIME = {".png": "image/png", ".jpg": "image/jpeg"}
LOCAL = ("astronaut.png", "coffee.png")  # also served as LAION-HR URLs: exact duplicates across sources
TEST_SET_PHOTO = "rocket.jpg"  # a half-size JPEG q75 copy stands in for a benchmark test set (decontamination)


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo store goes and whether to start from scratch."""

    out: Path = DEFAULT_OUT
    fresh: bool = True
    sample: Path = SAMPLE


def demo_root(out: Path | None, sample: Path = SAMPLE) -> Path:
    """Where the demo store goes (checked, nothing written): refuses a folder that is not a demo store."""
    root = (out or DEFAULT_OUT).resolve()
    if not (sample / "photos").is_dir():
        raise StoreError(f"{sample}/photos: demo sample not found; run the demo from a source checkout "
                         "installed with `pip install -e .`")
    if root.exists() and any(p.name != LOCK_NAME for p in root.iterdir()) and not (root / MARKER).exists():
        raise StoreError(f"{root} exists and is not a demo store; pass --out to a new or empty folder")
    return root


def _prepare(cfg: DemoConfig) -> Store:
    out = demo_root(cfg.out, cfg.sample)
    if cfg.fresh and out.exists():
        for child in out.iterdir():
            if child.name == LOCK_NAME:  # the CLI holds it: removing it would let a second writer in
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("created by `million-ird demo`; safe to delete\n")
    return Store(out)


def _routes(photos: Path) -> dict[str, Response]:
    routes = {f"/photos/{p.name}": Response(p.read_bytes(), content_type=MIME[p.suffix])
              for p in sorted(photos.iterdir()) if p.suffix in MIME}
    jpeg = (photos / "rocket.jpg").read_bytes()
    routes["/broken/truncated.jpg"] = Response(jpeg[: len(jpeg) // 3], content_type="image/jpeg")
    routes["/broken/login.html"] = Response(b"<!DOCTYPE html><html>please log in</html>", content_type="text/html")
    return routes


def _laion_shard(routes: dict[str, Response], photos: Path, path: Path) -> Path:
    """A LAION-HR-style metadata shard with stable URLs on the demo host (plus rows that must be rejected)."""
    rows = []
    for route in routes:
        name = route.rsplit("/", 1)[1]
        size = Image.open(photos / name).size if (photos / name).exists() else (1200, 900)
        rows.append({"URL": DEMO_BASE + route, "TEXT": f"demo photo {name}", "WIDTH": size[0], "HEIGHT": size[1],
                     "similarity": 0.31, "hash": len(rows), "pwatermark": 0.05, "punsafe": 0.01})
    for url in (DEMO_BASE + "/missing.png", "file:///etc/passwd", "ftp://example.org/a.png"):
        rows.append({"URL": url, "TEXT": "bad row", "WIDTH": 2000, "HEIGHT": 2000, "similarity": 0.3,
                     "hash": len(rows), "pwatermark": 0.05, "punsafe": 0.01})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _test_set(photo: Path, folder: Path) -> Path:
    """A one-image "test set": `photo` at half size, re-encoded as JPEG q75 (what dedup --against must catch)."""
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(photo) as im:
        small = im.convert("RGB").resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
    path = folder / f"{photo.stem}-half-q75.jpg"
    small.save(path, "JPEG", quality=75)
    return path


@contextmanager
def prepare_demo(cfg: DemoConfig, echo: Callable[[str], None]) -> Iterator[tuple[Store, str]]:
    """A fresh demo store with the recipe's inputs under inputs/, and the local server (yields store, proxy URL)."""
    store = _prepare(cfg)
    photos = cfg.sample / "photos"
    local = store.root / "inputs" / "DIV2K-sample"
    local.mkdir(parents=True, exist_ok=True)
    for name in LOCAL:
        shutil.copyfile(photos / name, local / name)
    _test_set(photos / TEST_SET_PHOTO, store.root / "inputs" / "testset-sample")
    routes = _routes(photos)
    shard = _laion_shard(routes, photos, store.root / "inputs" / "laion-hr-demo.parquet")
    with LocalServer(routes, proxy_hosts=(DEMO_HOST,)) as server:
        echo(f"== demo inputs: {shard.name} ({DEMO_BASE}/..., served by {server.base_url} as the download's "
             f"proxy) and the folder {local.name}")
        yield store, server.base_url


def copy_train_config(cfg: DemoConfig, store: Store) -> Path | None:
    """Copy the sample's train.yaml into the store (the trainer's settings for it); None when absent.

    With `--keep` a train.yaml already in the store (perhaps edited) is left as it is.
    """
    src, dest = cfg.sample / TRAIN_CONFIG, store.root / TRAIN_CONFIG
    if not src.is_file():
        return None
    if cfg.fresh or not dest.exists():
        shutil.copyfile(src, dest)
    return dest


def train_command(store: Store) -> str:
    """The command that trains DyNet on this store (`--data manifests/` for the default store)."""
    target = SAMPLE.parent if store.root == DEFAULT_OUT.resolve() else store.root
    try:
        shown = f"{target.relative_to(Path.cwd().resolve()).as_posix()}/"
    except ValueError:
        shown = str(target)
    return f"python -m dynet_ref.train --data {shlex.quote(shown)}"
