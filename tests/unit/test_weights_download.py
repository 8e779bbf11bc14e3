"""Weights that fetch themselves: torchvision's files downloaded once into the torch hub cache.

The "network" is a real HTTP server on 127.0.0.1 in a thread serving files this test writes
(``PIEBENCH_WEIGHTS_URL_BASE`` points piebench at it). A test-written AlexNet / ResNet-18 state
dict has torchvision's keys and shapes but random values: it exercises the path, its LPIPS is a
number, and it means nothing. Their SHA-256 is not torchvision's, so each test that should
succeed puts its file's hash prefix in :data:`piebench.weights.SHA256_PREFIX` for its own
process (monkeypatch); the real prefixes stay in the file names.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner

from piebench import weights
from piebench.errors import UsageError
from piebench.metrics import fidelity as fid


class _Mirror:
    """A directory served over HTTP; ``truncate`` sends the right Content-Length but half the bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        self.truncate = False
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):  # noqa: N802 - http.server's naming
                mirror.requests.append(self.path)
                path = root / self.path.lstrip("/")
                if not mirror.truncate or not path.is_file():
                    return super().do_GET()
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/models"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, name: str, state: dict) -> str:
        """Write ``state`` as ``models/<name>``; returns its SHA-256 hex digest."""
        (self.root / "models").mkdir(parents=True, exist_ok=True)
        torch.save(state, self.root / "models" / name)
        return hashlib.sha256((self.root / "models" / name).read_bytes()).hexdigest()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    m = _Mirror(tmp_path / "www")
    m.thread.start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("PIEBENCH_WEIGHTS_URL_BASE", m.url)
    monkeypatch.delenv("PIEBENCH_OFFLINE", raising=False)
    fid._LPIPS_CACHE.clear()
    yield m
    fid._LPIPS_CACHE.clear()
    m.server.shutdown()
    m.server.server_close()


def _alexnet_state() -> dict:
    torch.manual_seed(5)
    return torchvision.models.alexnet().state_dict()


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "torch-home" / "hub" / "checkpoints"


def test_missing_alexnet_is_downloaded_hash_checked_and_lpips_is_a_number(mirror, tmp_path, monkeypatch, capfd):
    digest = mirror.publish(weights.ALEXNET, _alexnet_state())
    monkeypatch.setitem(weights.SHA256_PREFIX, weights.ALEXNET, digest[:8])
    assert fid.lpips_unavailable_reason() is None
    assert mirror.requests == [f"/models/{weights.ALEXNET}"]
    got = _cache(tmp_path) / weights.ALEXNET
    assert hashlib.sha256(got.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in _cache(tmp_path).iterdir()) == [weights.ALEXNET]  # no temporary left
    err = capfd.readouterr().err
    assert f"downloading {mirror.url}/{weights.ALEXNET}" in err and "100%" in err  # the progress bar
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    d = fid.LPIPS()(x, x.flip(-1))
    assert d.shape == (2,) and torch.isfinite(d).all() and (d > 0).all()
    fid.lpips_unavailable_reason()
    assert len(mirror.requests) == 1  # fetched once, then read from the cache


def test_a_file_with_the_wrong_hash_is_refused_and_nothing_is_cached(mirror, tmp_path):
    mirror.publish(weights.ALEXNET, _alexnet_state())  # its hash is not torchvision's 7be5be79...
    with pytest.raises(UsageError) as err:
        fid.LPIPS()
    msg = str(err.value)
    assert "invalid hash value" in msg and f"{mirror.url}/{weights.ALEXNET}" in msg and "\n" not in msg
    assert str(_cache(tmp_path)) in msg
    assert not list(_cache(tmp_path).iterdir())  # neither the file nor a .partial


def test_a_truncated_download_never_lands_in_the_cache(mirror, tmp_path, monkeypatch):
    digest = mirror.publish(weights.RESNET18, torchvision.models.resnet18().state_dict())
    monkeypatch.setitem(weights.SHA256_PREFIX, weights.RESNET18, digest[:8])
    mirror.truncate = True
    with pytest.raises(UsageError, match="downloading it failed"):
        weights.staged_weights(weights.RESNET18)
    assert not list(_cache(tmp_path).iterdir())
    mirror.truncate = False  # the next attempt gets the whole file
    model = torchvision.models.resnet18()
    note = weights.load_torchvision_backbone(model, weights.RESNET18)
    assert weights.RESNET18 in note and len(mirror.requests) == 2
    served = torch.load(mirror.root / "models" / weights.RESNET18, weights_only=True)
    assert all(torch.equal(v, served[k]) for k, v in model.state_dict().items())


def test_offline_names_file_folder_and_url_and_sends_nothing(mirror, tmp_path, monkeypatch):
    mirror.publish(weights.VGG16, {})
    monkeypatch.setenv("PIEBENCH_OFFLINE", "1")
    with pytest.raises(UsageError) as err:
        weights.staged_weights(weights.VGG16)
    msg = str(err.value)
    assert weights.VGG16 in msg and str(_cache(tmp_path)) in msg and f"{mirror.url}/{weights.VGG16}" in msg
    assert "PIEBENCH_OFFLINE" in msg and mirror.requests == []


def test_an_unreachable_server_is_one_line_with_the_url(mirror, tmp_path):
    with pytest.raises(UsageError) as err:  # the mirror has no such file: HTTP 404
        weights.staged_weights(weights.VGG16)
    msg = str(err.value)
    assert "HTTPError" in msg and "404" in msg and f"{mirror.url}/{weights.VGG16}" in msg and "\n" not in msg
    assert not _cache(tmp_path).exists() or not list(_cache(tmp_path).iterdir())


def test_run_reports_lpips_as_a_number_when_the_weights_are_served(mirror, tmp_path, monkeypatch):
    from threadpoolctl import threadpool_limits

    from piebench.cli import cli

    digest = mirror.publish(weights.ALEXNET, _alexnet_state())
    monkeypatch.setitem(weights.SHA256_PREFIX, weights.ALEXNET, digest[:8])
    with threadpool_limits(1):
        res = CliRunner().invoke(cli, ["run", "--encoder", "lab-stats", "--enhancer", "transfer", "--steps", "2",
                                       "--set", "eval.max_photos=2", "--set", "train.threads=1", "--quiet",
                                       "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "LPIPS: unavailable" not in res.output
    import json

    rec = json.loads(next((tmp_path / "runs").rglob("record.json")).read_text())
    lpips = rec["metrics"]["seen"]["lpips"]["mean"]
    assert isinstance(lpips, float) and 0 < lpips < 1
