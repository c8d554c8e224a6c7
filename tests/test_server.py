"""API tests of ``crispedit serve`` (FastAPI TestClient): every endpoint, and the refusals."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import photo_like
from typer.testing import CliRunner

from crispedit.errors import InputError
from crispedit.server import tiles
from crispedit.server.app import ServerConfig, create_app
from crispedit.server.jobs import Job, JobCancelled, JobQueue
from crispedit.server.maskcanvas import MaskCanvas

BASE = "http://127.0.0.1:8765"


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb)
    return path


@pytest.fixture()
def root(tmp_path):
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    _write(r / "a.png", photo_like(640, 480, seed=1))
    _write(r / "sub" / "b.jpg", photo_like(320, 200, seed=2))
    (r / "notes.txt").write_text("not an image")
    outside = tmp_path / "secret.png"
    _write(outside, photo_like(64, 64, seed=3))
    os.symlink(outside, r / "escape.png")
    return r


def _client(root: Path, tmp_path: Path, **kw) -> TestClient:
    cfg = ServerConfig(root=root, work_dir=tmp_path / "work", **kw)
    return TestClient(create_app(cfg), base_url=BASE)


@pytest.fixture()
def client(root, tmp_path):
    with _client(root, tmp_path) as c:
        yield c


def _open(c, path="a.png"):
    r = c.post("/api/open", json={"path": path})
    assert r.status_code == 200, r.text
    return r.json()


def _wait(c, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = c.get(f"/api/jobs/{job_id}").json()
        if j["state"] in ("done", "failed", "cancelled"):
            return j
        time.sleep(0.05)
    raise AssertionError("job did not finish")


# ---------------------------------------------------------------------------------------------- page and files
def test_page_and_vendored_viewer(client):
    r = client.get("/")
    assert r.status_code == 200 and "openseadragon.min.js" in r.text and "cdn" not in r.text.lower()
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
    js = client.get("/static/vendor/openseadragon/openseadragon.min.js")
    assert js.status_code == 200 and "openseadragon 6." in js.text[:100]
    lic = client.get("/static/vendor/openseadragon/LICENSE.txt")
    assert lic.status_code == 200 and "Redistribution and use" in lic.text
    assert client.get("/static/app.js").status_code == 200
    cfg = client.get("/api/config").json()
    assert cfg["engines"] == ["classical", "sd15"] and cfg["docs"] == [] and cfg["max_pixels"] == 300_000_000


def test_files_lists_images_and_hides_symlink_escape(client):
    r = client.get("/api/files").json()
    names = {e["name"]: e["type"] for e in r["entries"]}
    assert names == {"a.png": "image", "sub": "dir"}  # no .txt, no symlink out of the root
    sub = client.get("/api/files", params={"dir": "sub"}).json()
    assert sub["dir"] == "sub" and [e["path"] for e in sub["entries"]] == ["sub/b.jpg"]


@pytest.mark.parametrize("bad", ["../", "..", "sub/../../", "/etc", "/tmp"])
def test_files_refuses_traversal(client, bad):
    r = client.get("/api/files", params={"dir": bad})
    assert r.status_code == 403 and "leaves the served folder" in r.json()["error"]


@pytest.mark.parametrize("bad", ["../secret.png", "sub/../../secret.png", "/etc/passwd", "..\\secret.png"])
def test_open_refuses_traversal(client, bad):
    r = client.post("/api/open", json={"path": bad})
    assert r.status_code == 403 and "leaves the served folder" in r.json()["error"]


def test_open_refuses_symlink_escape(client):
    r = client.post("/api/open", json={"path": "escape.png"})
    assert r.status_code == 403 and "outside the served folder" in r.json()["error"]


def test_open_errors_are_the_cli_one_liners(root, tmp_path, client):
    from crispedit.io import load_image

    r = client.post("/api/open", json={"path": "notes.txt"})
    assert r.status_code == 400 and "cannot open '.txt' files" in r.json()["error"]
    r = client.post("/api/open", json={"path": "missing.png"})
    assert r.status_code == 400 and "not found" in r.json()["error"]
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    r = client.post("/api/open", json={"path": "broken.png"})
    with pytest.raises(InputError) as cli:
        load_image(root / "broken.png")
    # the CLI's message, naming the file relative to the served folder
    assert r.status_code == 400 and r.json()["error"] == str(cli.value).replace(str(root / "broken.png"), "broken.png")
    with _client(root, tmp_path, max_pixels=1000) as small:
        r = small.post("/api/open", json={"path": "a.png"})
        with pytest.raises(InputError) as cli:
            load_image(root / "a.png", max_pixels=1000)
        assert r.status_code == 400 and r.json()["error"] == str(cli.value).replace(str(root / "a.png"), "a.png")
        assert "too large" in r.json()["error"] or "pixels" in r.json()["error"]


def test_open_doc_close(client, root):
    d = _open(client)
    assert (d["width"], d["height"], d["format"], d["bit_depth"]) == (640, 480, "PNG", 8)
    assert d["versions"][0]["label"] == "original" and d["current"] == 0
    assert client.get(f"/api/docs/{d['id']}").json()["id"] == d["id"]
    assert [x["id"] for x in client.get("/api/config").json()["docs"]] == [d["id"]]
    assert client.delete(f"/api/docs/{d['id']}").status_code == 200
    assert client.get(f"/api/docs/{d['id']}").status_code == 404
    assert (root / "a.png").exists()  # closing never touches the input


# ---------------------------------------------------------------------------------------------- upload
def test_upload_opens_and_is_cleaned_up(client, tmp_path):
    data = cv2.imencode(".png", photo_like(300, 200, seed=4))[1].tobytes()
    r = client.post("/api/upload", params={"name": "../../holiday.png"}, content=data)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["name"] == "holiday.png" and d["source"] == "upload: holiday.png" and d["width"] == 300
    work = list((tmp_path / "work").iterdir())
    assert len(work) == 1  # the per-run work folder
    stored = list(work[0].rglob("upload.png"))
    assert len(stored) == 1 and stored[0].read_bytes() == data
    client.delete(f"/api/docs/{d['id']}")
    assert not stored[0].exists()


def test_upload_refusals(root, tmp_path):
    from crispedit.io import load_image

    with _client(root, tmp_path, max_upload_bytes=10_000) as c:
        big = b"\0" * 20_000
        r = c.post("/api/upload", params={"name": "x.png"}, content=big)
        assert r.status_code == 413 and "larger than the limit" in r.json()["error"]

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(5):
                yield b"\0" * 4000

        r = c.post("/api/upload", params={"name": "x.png"}, content=chunks())
        assert r.status_code == 413
        r = c.post("/api/upload", params={"name": "x.exe"}, content=b"MZ")
        assert r.status_code == 400 and "cannot open '.exe' files" in r.json()["error"]
        r = c.post("/api/upload", params={"name": "x.png"}, content=b"")
        assert r.status_code == 400 and "empty" in r.json()["error"]
        r = c.post("/api/upload", params={"name": "x.png"}, content=b"not a png at all")
        (tmp_path / "x.png").write_bytes(b"not a png at all")
        with pytest.raises(InputError) as cli:
            load_image(tmp_path / "x.png")
        # the library's message, naming the uploaded file rather than the server's temporary copy
        assert r.status_code == 400 and r.json()["error"] == str(cli.value).replace(str(tmp_path / "x.png"), "x.png")
        leftovers = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
        assert leftovers == []  # refused uploads leave nothing behind
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())  # cleaned at shutdown


# ---------------------------------------------------------------------------------------------- tiles
def test_dzi_and_tiles(client):
    d = _open(client)
    v0 = d["versions"][0]
    xml = client.get(v0["dzi"]).text
    assert 'Width="640" Height="480"' in xml and 'TileSize="254"' in xml and 'Overlap="1"' in xml
    top = tiles.max_level(640, 480)
    assert top == 10
    t = client.get(f"/api/docs/{d['id']}/v/0/image_files/{top}/0_0.jpeg")
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(t.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (255, 255, 3)  # 254 + 1 px overlap on the far sides only
    small = cv2.imdecode(np.frombuffer(client.get(f"/api/docs/{d['id']}/v/0/image_files/0/0_0.jpeg").content,
                                       np.uint8), cv2.IMREAD_COLOR)
    assert small.shape[:2] == (1, 1)
    assert client.get(f"/api/docs/{d['id']}/v/0/image_files/{top}/9_9.jpeg").status_code == 404
    assert client.get(f"/api/docs/{d['id']}/v/0/image_files/{top + 1}/0_0.jpeg").status_code == 404
    assert client.get(f"/api/docs/{d['id']}/v/0/image_files/{top}/zz.jpeg").status_code == 404
    assert client.get(f"/api/docs/{d['id']}/v/7/image.dzi").status_code == 404


def test_pyramid_levels_match_the_image():
    rgb = photo_like(1000, 600, seed=5)
    p = tiles.Pyramid(rgb)
    assert p.max_level == 10 and tiles.level_size(1000, 600, 9) == (500, 300)
    lv = p.level(9)
    ref = cv2.resize(rgb, (500, 300), interpolation=cv2.INTER_AREA)
    assert np.array_equal(lv, ref)
    full = cv2.imdecode(np.frombuffer(p.tile(10, 1, 1), np.uint8), cv2.IMREAD_COLOR)
    def err(y, x):
        return np.abs(full.astype(int) - rgb[y:y + 256, x:x + 256, ::-1].astype(int)).mean()

    assert full.shape == (256, 256, 3) and err(253, 253) < 6  # JPEG of the right crop (overlap included)
    assert err(253, 253) < 0.6 * min(err(245, 253), err(253, 261))


# ---------------------------------------------------------------------------------------------- mask
def test_mask_soft_brush_eraser_and_undo():
    m = MaskCanvas(200, 100)
    m.stroke([[50, 50], [150, 50]], size=40, hardness=0.5)
    a = m.array
    assert a[50, 100] == 255 and a[50 + 5, 100] == 255  # core: r * hardness = 10 px
    assert 0 < a[50 + 15, 100] < 255  # soft edge = partial edit
    assert a[50 + 21, 100] == 0 and a[50, 10] == 0
    hard = MaskCanvas(200, 100)
    hard.stroke([[100, 50]], size=40, hardness=1.0)
    assert set(np.unique(hard.array)) <= {0, 255}
    painted = m.array.copy()
    m.stroke([[100, 50]], size=20, hardness=1.0, erase=True)
    assert m.array[50, 100] == 0 and m.array[50, 60] == 255
    m.undo()
    assert np.array_equal(m.array, painted)
    m.redo()
    assert m.array[50, 100] == 0
    with pytest.raises(InputError):
        m.stroke([], 10)
    with pytest.raises(InputError):
        m.stroke([[1, 1]], 100_000)


def test_mask_endpoints(client):
    d = _open(client)
    url = f"/api/docs/{d['id']}/mask"
    r = client.post(url, json={"op": "stroke", "points": [[100, 100], [300, 120]], "size": 50, "hardness": 0.6})
    assert r.status_code == 200 and r.json()["rev"] == 1 and r.json()["can_undo"]
    box = r.json()["box"]
    assert box[0] <= 75 and box[2] >= 325
    full = cv2.imdecode(np.frombuffer(client.get(f"/api/docs/{d['id']}/mask.png").content, np.uint8),
                        cv2.IMREAD_UNCHANGED)
    assert full.shape == (480, 640) and full[110, 200] == 255 and 0 < full.max() and len(np.unique(full)) > 2
    assert client.post(url, json={"op": "rect", "box": [400, 300, 500, 400]}).json()["rev"] == 2
    assert client.post(url, json={"op": "ellipse", "box": [10, 300, 110, 400]}).json()["rev"] == 3
    rect_px = 100 * 100
    st = client.post(url, json={"op": "rect", "box": [400, 300, 500, 400], "erase": True}).json()
    after_erase = st["painted_px"]
    st = client.post(url, json={"op": "undo"}).json()
    assert st["painted_px"] == after_erase + rect_px and st["can_redo"]
    st = client.post(url, json={"op": "redo"}).json()
    assert st["painted_px"] == after_erase
    st = client.post(url, json={"op": "invert"}).json()
    assert st["painted_px"] >= 640 * 480 - after_erase
    assert client.post(url, json={"op": "clear"}).json()["painted_px"] == 0
    assert client.post(url, json={"op": "paint"}).status_code == 400
    assert client.post(url, json={"op": "stroke", "points": "x"}).status_code == 400
    assert client.post(url, json={"op": "rect", "box": [1, 2]}).status_code == 400
    # overlay tiles: painted tile is a real RGBA tile, an unpainted one the 1x1 transparent PNG
    client.post(url, json={"op": "rect", "box": [0, 0, 100, 100]})
    top = tiles.max_level(640, 480)
    t = cv2.imdecode(np.frombuffer(client.get(f"/api/docs/{d['id']}/mask/9/{top}/0_0.png").content, np.uint8),
                     cv2.IMREAD_UNCHANGED)
    assert t.shape == (255, 255, 4) and t[50, 50, 3] > 0 and t[200, 200, 3] == 0
    e = client.get(f"/api/docs/{d['id']}/mask/9/{top}/2_1.png")
    assert e.status_code == 200 and e.content == tiles.empty_png()
    assert client.get(f"/api/docs/{d['id']}/mask/9/{top}/5_5.png").status_code == 404


# ---------------------------------------------------------------------------------------------- jobs
def test_run_classical_without_mask_gets_the_cli_message(client):
    d = _open(client)
    r = client.post(f"/api/docs/{d['id']}/jobs", json={"engine": "classical"})
    assert r.status_code == 400 and "no mask given: the classical engine only edits masked areas" in r.json()["error"]
    assert client.post(f"/api/docs/{d['id']}/jobs", json={"engine": "dalle"}).status_code == 400
    assert client.post(f"/api/docs/{d['id']}/jobs", json={"strength": 3}).status_code == 400
    assert client.post(f"/api/docs/{d['id']}/jobs", json={"candidates": 0}).status_code == 400
    assert client.post(f"/api/docs/{d['id']}/jobs", json={"shell": "rm"}).status_code == 400
    assert client.get("/api/jobs/j999999").status_code == 404


def test_run_stream_download_report_workflow_and_chain(root, tmp_path):
    from crispedit.workflow.schema import load_workflow

    rgb16 = (photo_like(400, 300, seed=6).astype(np.uint16) * 257)
    cv2.imwrite(str(root / "deep.png"), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    with _client(root, tmp_path) as c:
        d = _open(c, "deep.png")
        assert d["bit_depth"] == 16
        c.post(f"/api/docs/{d['id']}/mask", json={"op": "ellipse", "box": [150, 100, 230, 170]})
        job = c.post(f"/api/docs/{d['id']}/jobs", json={"engine": "classical", "seed": 5}).json()
        assert job["state"] in ("queued", "running") and job["queue_position"] == 0
        events = []
        with c.stream("GET", f"/api/jobs/{job['id']}/events") as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            for line in s.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[-1]["state"] == "done"
        stages = {e["stage"] for e in events}
        assert any(e["total"] > 0 for e in events) and len(stages) >= 2
        doc = c.get(f"/api/docs/{d['id']}").json()
        v1 = doc["versions"][1]
        assert doc["current"] == 1 and v1["parent"] == 0 and v1["seed"] == 5
        assert v1["quality"]["verdict"] in ("pass", "fail") and isinstance(v1["quality"]["worst_places"], list)
        r = c.get(v1["download"])
        assert r.headers["content-disposition"] == 'attachment; filename="deep-edit1.png"'
        out = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
        src = cv2.imread(str(root / "deep.png"), cv2.IMREAD_UNCHANGED)
        assert out.dtype == np.uint16 and out.shape == src.shape  # input's format and bit depth
        changed = np.any(out != src, axis=2)
        ys, xs = np.nonzero(changed)
        assert changed.any() and xs.min() > 60 and xs.max() < 320 and ys.min() > 10 and ys.max() < 260
        rep = c.get(v1["report"])
        assert rep.status_code == 200 and rep.text.lstrip().lower().startswith("<!doctype html")
        assert rep.headers["content-security-policy"].startswith("sandbox")  # report scripts cannot use the API
        wf = c.get(v1["workflow"])
        assert 'filename="deep-edit1.yaml"' in wf.headers["content-disposition"]
        (tmp_path / "exp").mkdir()
        (tmp_path / "exp" / "wf.yaml").write_text(wf.text)
        nodes = load_workflow(tmp_path / "exp" / "wf.yaml").nodes
        assert Path(nodes["image"].params["path"]).name == "deep.png"
        assert Path(nodes["mask"].params["path"]).name == "deep-edit1-mask.png"
        assert nodes["edit"].params["seed"] == 5
        m = c.get(v1["mask"])
        assert m.status_code == 200 and cv2.imdecode(np.frombuffer(m.content, np.uint8), 0).shape == (300, 400)
        # the four per-version files (one helper): type, download name, caching
        assert m.headers["content-type"] == "image/png" and 'filename="deep-edit1-mask.png"' in m.headers[
            "content-disposition"]
        assert wf.headers["content-type"].startswith("application/x-yaml")
        assert r.headers["cache-control"] == rep.headers["cache-control"] == "no-store"
        assert rep.headers["content-type"].startswith("text/html") and "content-disposition" not in rep.headers
        # the exported workflow reproduces the edit from the downloads (crispedit run's code path)
        from crispedit.workflow.runner import run_workflow

        (tmp_path / "exp" / "deep.png").write_bytes(c.get(doc["versions"][0]["download"]).content)
        (tmp_path / "exp" / "deep-edit1-mask.png").write_bytes(m.content)
        run_workflow(tmp_path / "exp" / "wf.yaml", cache=False)
        again = cv2.imread(str(tmp_path / "exp" / "deep-edit1.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(again, out)
        # chain: the next run edits v1; the history can step back to v0
        c.post(f"/api/docs/{d['id']}/mask", json={"op": "clear"})
        c.post(f"/api/docs/{d['id']}/mask", json={"op": "rect", "box": [20, 20, 60, 60]})
        j2 = c.post(f"/api/docs/{d['id']}/jobs", json={"engine": "classical", "no_check": True}).json()
        assert _wait(c, j2["id"])["state"] == "done"
        doc = c.get(f"/api/docs/{d['id']}").json()
        assert doc["current"] == 2 and doc["versions"][2]["parent"] == 1 and "report" not in doc["versions"][2]
        assert c.post(f"/api/docs/{d['id']}/current", json={"version": 0}).json()["current"] == 0
        assert c.post(f"/api/docs/{d['id']}/current", json={"version": 9}).status_code == 404
        assert c.get(f"/api/docs/{d['id']}/v/0/report").status_code == 404
        no_wf = c.get(f"/api/docs/{d['id']}/v/0/workflow.yaml")
        assert no_wf.status_code == 404 and no_wf.json()["error"].startswith("this version was not made by a run")
        assert c.get(f"/api/docs/{d['id']}/v/0/mask.png").status_code == 404
        assert c.get(f"/api/docs/{d['id']}/v/0/download").content == (root / "deep.png").read_bytes()
        work = tmp_path / "work"
        assert any(work.iterdir())
    assert not any(work.iterdir())  # the run's work folder is gone after shutdown


def test_server_responsive_and_cancel_while_a_job_runs(client, monkeypatch):
    from crispedit.workflow import builtin

    started = threading.Event()

    def slow_edit(*, progress, **kw):
        started.set()
        for i in range(2000):
            progress("edit: tiles", i, 2000)
            time.sleep(0.01)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(builtin, "run_edit", slow_edit)
    d = _open(client)
    client.post(f"/api/docs/{d['id']}/mask", json={"op": "rect", "box": [10, 10, 50, 50]})
    j1 = client.post(f"/api/docs/{d['id']}/jobs", json={"engine": "classical"}).json()
    j2 = client.post(f"/api/docs/{d['id']}/jobs", json={"engine": "classical"}).json()
    assert j2["queue_position"] == 1  # one job per engine; the second waits
    assert started.wait(10)
    t0 = time.monotonic()
    assert client.get("/api/config").status_code == 200  # answered while the edit runs
    assert client.get(f"/api/docs/{d['id']}/v/0/image_files/9/0_0.jpeg").status_code == 200
    assert time.monotonic() - t0 < 5
    time.sleep(0.3)
    running = client.get(f"/api/jobs/{j1['id']}").json()
    assert running["state"] == "running" and running["stage"] == "edit: tiles" and running["total"] == 2000
    assert running["eta_s"] is not None and running["eta_s"] > 0
    assert client.get(f"/api/jobs/{j2['id']}").json()["state"] == "queued"
    assert {j["id"] for j in client.get("/api/config").json()["jobs"]} == {j1["id"], j2["id"]}  # page reload
    client.post(f"/api/jobs/{j2['id']}/cancel")
    client.post(f"/api/jobs/{j1['id']}/cancel")
    assert _wait(client, j1["id"])["state"] == "cancelled"
    assert _wait(client, j2["id"])["state"] == "cancelled"
    assert len(client.get(f"/api/docs/{d['id']}").json()["versions"]) == 1


def test_job_queue_one_per_engine_and_errors():
    q = JobQueue()
    gate = threading.Event()
    order = []

    def work(name, fail=None):
        def run(progress):
            order.append(("start", name))
            if name == "a":
                gate.wait(10)
            if fail:
                raise fail
            order.append(("end", name))
            return name
        return run

    a = q.submit(Job("classical", "d", work("a")))
    b = q.submit(Job("classical", "d", work("b", InputError("bad thing", "fix it"))))
    c = q.submit(Job("sd15", "d", work("c")))
    deadline = time.monotonic() + 120  # an upper bound only: the jobs are instant, the machine may be busy
    while c.state != "done" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.state == "done" and a.state == "running" and b.state == "queued"  # other engines do not wait
    gate.set()
    while b.state not in ("failed",) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.state == "done" and a.result == "a"
    assert b.state == "failed" and b.error == "bad thing — fix it"
    assert order.index(("end", "a")) < order.index(("start", "b"))
    j = Job("x", "d", lambda p: None)
    j.cancel()
    with pytest.raises(JobCancelled):
        j.progress("s", 1, 2)
    q.shutdown()


# ---------------------------------------------------------------------------------------------- guards
def test_host_and_origin_checks(client):
    assert client.get("/api/config", headers={"host": "evil.example:8765"}).status_code == 400
    assert client.get("/api/config", headers={"host": "localhost:8765"}).status_code == 200
    assert client.get("/api/config", headers={"host": "[::1]:8765"}).status_code == 200
    r = client.post("/api/open", json={"path": "a.png"}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "origin" in r.json()["error"]
    assert client.get("/api/files", headers={"origin": "http://127.0.0.1:9999"}).status_code == 403
    assert client.get("/api/files", headers={"origin": "null"}).status_code == 403
    assert client.get("/api/files", headers={"origin": "http://127.0.0.1:8765"}).status_code == 200
    assert client.get("/api/files", headers={"sec-fetch-site": "cross-site"}).status_code == 403
    r = client.post("/api/open", content=b"{}" + b" " * (9 * 1024 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413  # only /api/upload takes large bodies
    nav = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}
    assert client.get("/", headers=nav).status_code == 200  # following a link to the editor is fine


def test_token_required_on_every_request(root, tmp_path):
    with _client(root, tmp_path, token="s3cret") as c:
        assert c.get("/api/config").status_code == 401
        assert c.get("/").status_code == 401
        assert c.get("/static/app.js").status_code == 401
        assert c.get("/api/config", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/config", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/config", headers={"x-crispedit-token": "s3cret"}).status_code == 200
        r = c.get("/", params={"token": "s3cret"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "crispedit_token_8765=s3cret" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
        c.cookies.set("crispedit_token", "s3cret")
        assert c.get("/api/config").status_code == 200


def test_non_loopback_bind_needs_a_token(root, tmp_path):
    with pytest.raises(InputError, match="without a token"):
        create_app(ServerConfig(root=root, host="0.0.0.0", work_dir=tmp_path / "w"))
    app = create_app(ServerConfig(root=root, host="0.0.0.0", token="t", allow_hosts=("photos.lan",),
                                  work_dir=tmp_path / "w"))
    with TestClient(app, base_url="http://photos.lan:8765") as c:
        assert c.get("/api/config").status_code == 401
        assert c.get("/api/config", headers={"authorization": "Bearer t"}).status_code == 200


def test_photos_given_at_start_are_open(root, tmp_path):
    with _client(root, tmp_path, photos=(root / "sub" / "b.jpg",)) as c:
        docs = c.get("/api/config").json()["docs"]
        assert [x["source"] for x in docs] == ["sub/b.jpg"] and docs[0]["format"] == "JPEG"
    with pytest.raises(InputError, match="leaves the served folder"):
        create_app(ServerConfig(root=root / "sub", photos=(root / "a.png",), work_dir=tmp_path / "w"))


def test_cli_serve_refusals_are_one_line(tmp_path):
    from crispedit.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "--root" in r.output and "--token" in r.output
    r = runner.invoke(app, ["serve", str(tmp_path / "nope.jpg")])
    assert r.exit_code == 2 and "photo not found" in r.output
    r = runner.invoke(app, ["serve", "--root", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "--root folder not found" in r.output
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = runner.invoke(app, ["serve", "--root", str(tmp_path), "--port", str(port)])
        assert r.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.output and "--port" in r.output


@pytest.mark.slow
def test_sd15_run_streams_denoise_progress(root, tmp_path, monkeypatch):
    """sd15 through the page's run form, on tiny random weights built here (real diffusers code, no download)."""
    pytest.importorskip("diffusers")
    from tiny_sd import save_tiny_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = save_tiny_folder(tmp_path / "tiny9", in_channels=9)
    with _client(root, tmp_path) as c:
        d = _open(c)
        c.post(f"/api/docs/{d['id']}/mask", json={"op": "ellipse", "box": [200, 150, 330, 260]})
        job = c.post(f"/api/docs/{d['id']}/jobs", json={"engine": "sd15", "model": str(folder), "prompt": "a bench",
                                                         "negative_prompt": "blurry", "steps": 2, "seed": 3,
                                                         "no_check": True}).json()
        events = []
        with c.stream("GET", f"/api/jobs/{job['id']}/events") as s:
            for line in s.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[-1]["state"] == "done", events[-1]
        assert any("denoise" in e["stage"] for e in events)  # steps inside the engine reach the page
        v1 = c.get(f"/api/docs/{d['id']}").json()["versions"][1]
        assert v1["seed"] == 3 and v1["params"]["model"] == str(folder) and v1["label"] == "sd15: a bench"
        wf = c.get(v1["workflow"]).text
        assert "negative_prompt: blurry" in wf and "steps: 2" in wf
        r = c.post(f"/api/docs/{d['id']}/jobs", json={"engine": "sd15", "model": str(tmp_path / "nope")})
        bad = _wait(c, r.json()["id"]) if r.status_code == 200 else r.json()
        assert "nope" in (bad.get("error") or "")  # the library's model message, shown in the page


def test_evicted_version_is_decoded_once_for_many_tile_requests(client, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import crispedit.io as imageio

    d = _open(client)
    state = client.app.app.state.crispedit  # Guard -> FastAPI app
    state.pyramids.clear()  # as if evicted by the LRU
    calls = []
    real = imageio.load_image

    def counting(*a, **kw):
        calls.append(1)
        time.sleep(0.2)
        return real(*a, **kw)

    monkeypatch.setattr(imageio, "load_image", counting)
    urls = [f"/api/docs/{d['id']}/v/0/image_files/10/{c}_{r}.jpeg" for c in range(3) for r in range(2)]
    with ThreadPoolExecutor(6) as ex:
        codes = list(ex.map(lambda u: client.get(u).status_code, urls))
    assert codes == [200] * 6 and len(calls) == 1


@pytest.mark.parametrize("ext", [".tif", ".webp"])
def test_tiff_and_webp_open_edit_and_keep_their_format(root, tmp_path, ext):
    import tifffile
    from PIL import Image

    rgb = photo_like(240, 160, seed=8)
    if ext == ".tif":
        tifffile.imwrite(root / "t.tif", rgb.astype(np.uint16) * 257)
    else:
        Image.fromarray(rgb).save(root / "t.webp", lossless=True)
    with _client(root, tmp_path) as c:
        d = _open(c, f"t{ext}")
        assert d["bit_depth"] == (16 if ext == ".tif" else 8)
        assert c.get(f"/api/docs/{d['id']}/v/0/image_files/8/0_0.jpeg").status_code == 200
        c.post(f"/api/docs/{d['id']}/mask", json={"op": "rect", "box": [100, 60, 140, 100]})
        j = c.post(f"/api/docs/{d['id']}/jobs", json={"engine": "classical", "no_check": True}).json()
        assert _wait(c, j["id"])["state"] == "done"
        r = c.get(f"/api/docs/{d['id']}/v/1/download")
        assert r.headers["content-disposition"].endswith(f'filename="t-edit1{ext}"')
        out = tmp_path / f"out{ext}"
        out.write_bytes(r.content)
        if ext == ".tif":
            arr = tifffile.imread(out)
            assert arr.dtype == np.uint16 and arr.shape == (160, 240, 3)
        else:
            with Image.open(out) as im:
                assert im.format == "WEBP" and im.size == (240, 160)


def test_default_model_from_the_command_line(root, tmp_path, monkeypatch):
    from crispedit.workflow import builtin

    seen = {}

    def fake_run(*, progress, **kw):
        seen.update(kw)
        raise InputError("stop here", "test")

    monkeypatch.setattr(builtin, "run_edit", fake_run)
    with _client(root, tmp_path, model="/models/sd15.safetensors") as c:
        assert c.get("/api/config").json()["model"] == "/models/sd15.safetensors"
        d = _open(c)
        c.post(f"/api/docs/{d['id']}/mask", json={"op": "rect", "box": [10, 10, 50, 50]})
        j = c.post(f"/api/docs/{d['id']}/jobs", json={"engine": "sd15", "prompt": "x"}).json()
        done = _wait(c, j["id"])
        assert done["state"] == "failed" and done["error"] == "stop here — test"
        assert seen["model"] == "/models/sd15.safetensors" and seen["engine"] == "sd15"


def test_cli_serve_runs_uvicorn_and_cleans_up(root, tmp_path):
    """The real command: uvicorn on a free port, the printed URL answers, Ctrl+C deletes the work folder."""
    import re
    import signal
    import subprocess
    import sys

    import httpx

    work = tmp_path / "w"
    proc = subprocess.Popen([sys.executable, "-m", "crispedit.cli", "serve", str(root / "a.png"), "--port", "0",
                             "--work-dir", str(work)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "editor at" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        cfg = httpx.get(m.group(1) + "api/config", timeout=30).json()
        assert [d["source"] for d in cfg["docs"]] == ["a.png"]
        assert len(list(work.iterdir())) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert list(work.iterdir()) == []
