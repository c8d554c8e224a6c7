"""Regression tests for what an attack / demanding-user pass on ``crispedit serve`` broke (one test per fix)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from serve_helpers import photo_like
from test_server import _client, _open, _wait, client, root  # noqa: F401 - fixtures

from crispedit.server import maskcanvas, tiles
from crispedit.server.maskcanvas import MaskCanvas


def _json(c, url, raw: bytes):
    return c.post(url, content=raw, headers={"content-type": "application/json"})


def test_tile_level_far_out_of_range_is_404_not_a_hang(client):
    # 2 ** (max_level - level) for level = -10**20 never finished (one request froze a worker thread)
    assert tiles.tile_rect(640, 480, -10 ** 20, 0, 0) is None and tiles.tile_rect(640, 480, 10 ** 30, 0, 0) is None
    d = _open(client)
    for level in (10 ** 30, -10 ** 20, -1, 11):
        for url in (f"/api/docs/{d['id']}/v/0/image_files/{level}/0_0.jpeg",
                    f"/api/docs/{d['id']}/mask/0/{level}/0_0.png"):
            r = client.get(url)
            assert r.status_code == 404 and r.json()["error"].startswith("no such tile"), (url, r.text)


def test_json_body_limit_also_holds_for_chunked_bodies(client):
    def chunks():  # no Content-Length header: the guard counts what arrives
        yield b'{"path": "a.png", "pad": "'
        for _ in range(10):
            yield b"a" * (1024 * 1024)
        yield b'"}'

    r = client.post("/api/open", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over 8 MiB" in r.json()["error"]
    assert client.get("/api/config").json()["docs"] == []  # nothing was opened


@pytest.mark.parametrize("op", [
    {"op": "stroke", "points": [[10, 10]], "size": "abc"},
    {"op": "stroke", "points": [[10, 10]], "size": None},
    {"op": "stroke", "points": [[10, 10]], "size": [8]},
    {"op": "stroke", "points": [[10, 10]], "size": 8, "hardness": "soft"},
])
def test_bad_mask_numbers_are_one_line_400s(client, op):
    d = _open(client)
    r = client.post(f"/api/docs/{d['id']}/mask", json=op)
    assert r.status_code == 400 and "must be a finite number" in r.json()["error"]


def test_nan_hardness_is_refused_not_painted_as_garbage(client):
    d = _open(client)
    r = _json(client, f"/api/docs/{d['id']}/mask", b'{"op":"stroke","points":[[50,50]],"size":20,"hardness":NaN}')
    assert r.status_code == 400 and "hardness" in r.json()["error"]
    assert client.get(f"/api/docs/{d['id']}").json()["mask"]["rev"] == 0


def test_ellipse_far_larger_than_the_image_and_the_library_ellipse(client):
    from crispedit.mask import mask_from_ellipse

    d = _open(client)
    url = f"/api/docs/{d['id']}/mask"
    r = client.post(url, json={"op": "ellipse", "box": [-1e9, -1e9, 1e9, 1e9]})  # was a 500 (OpenCV int overflow)
    assert r.status_code == 200 and r.json()["painted_px"] == 640 * 480
    m = MaskCanvas(200, 100)
    m.shape("ellipse", [20, 10, 120, 70])
    assert np.array_equal(m.array > 0, mask_from_ellipse((200, 100), (20, 10, 120, 70)))  # as `edit --ellipse`


def test_undo_keeps_one_copy_per_step_within_a_byte_budget(monkeypatch):
    monkeypatch.setattr(maskcanvas, "MAX_UNDO_BYTES", 2 * 300 * 200)
    m = MaskCanvas(300, 200)
    states = [m.array.copy()]
    steps = [lambda: m.stroke([[20, 20], [250, 150]], 30, 0.5), lambda: m.invert(),
             lambda: m.shape("rect", [50, 50, 120, 90], erase=True), lambda: m.stroke([[100, 100]], 60, 1.0, True),
             lambda: m.shape("ellipse", [0, 0, 300, 200]), lambda: m.clear(), lambda: m.invert()]
    for step in steps:
        assert step() is not None
        states.append(m.array.copy())
    inverts = [c for c in m._undo if c.other is None]
    assert len(inverts) >= 1 and all(c.nbytes == 0 for c in inverts)  # an invert keeps no pixels
    assert sum(c.nbytes for c in m._undo) <= maskcanvas.MAX_UNDO_BYTES  # older steps were dropped
    kept = len(m._undo)
    assert 1 <= kept < len(steps)
    for i in range(kept):  # undo walks back through the exact earlier states ...
        assert m.undo() is not None
        assert np.array_equal(m.array, states[-2 - i])
    assert m.undo() is None
    for i in range(kept):  # ... and redo forward again
        m.redo()
        assert np.array_equal(m.array, states[len(states) - kept + i])


def test_bad_bodies_and_unknown_routes_get_the_one_line_error_shape(client):
    d = _open(client)
    url = f"/api/docs/{d['id']}/mask"
    for r in (_json(client, url, b"{not json"), client.post(url, json=[1])):
        assert r.status_code == 422 and r.json()["error"].startswith("bad request:") and "detail" not in r.json()
    r = client.get("/api/no-such-endpoint")
    assert r.status_code == 404 and "error" in r.json()
    r = _json(client, f"/api/docs/{d['id']}/current", b'{"version": 1e400}')  # was a 500 (int(inf))
    assert r.status_code == 400 and "no version given" in r.json()["error"]


@pytest.mark.parametrize("body, words", [
    ({"prompt": {"a": 1}}, "prompt must be text"),
    ({"seed": -1}, "--seed -1 is out of range"),
    ({"seed": 10 ** 30}, "is out of range"),
    ({"guidance": "inf"}, "guidance inf is outside 0.0..50.0"),  # the SD 1.5 options' own check
    ({"steps": 0}, "steps 0 is outside 1..1000"),
    ({"scheduler": "plms"}, "unknown scheduler 'plms'"),
    ({"no_check": "false"}, "no_check must be true or false"),  # bool("false") used to switch the check off
])
def test_run_options_are_checked_before_queueing(client, body, words):
    d = _open(client)
    client.post(f"/api/docs/{d['id']}/mask", json={"op": "rect", "box": [10, 10, 60, 60]})
    r = client.post(f"/api/docs/{d['id']}/jobs", json={"engine": "classical", **body})
    assert r.status_code == 400 and words in r.json()["error"]
    assert client.get("/api/config").json()["jobs"] == []


def test_photo_deleted_after_opening_gets_a_404_line_not_a_500(client, root):
    import shutil

    shutil.copy(root / "a.png", root / "gone.png")
    d = _open(client, "gone.png")
    (root / "gone.png").unlink()
    r = client.get(f"/api/docs/{d['id']}/v/0/download")
    assert r.status_code == 404 and "was deleted or moved" in r.json()["error"]
    client.post(f"/api/docs/{d['id']}/mask", json={"op": "rect", "box": [10, 10, 60, 60]})
    r = client.post(f"/api/docs/{d['id']}/jobs", json={"engine": "classical"})
    assert r.status_code == 404 and "gone.png was deleted" in r.json()["error"]


def test_work_folder_under_root_is_neither_listed_nor_opened(root, tmp_path):
    with _client(root, root) as c:  # work_dir = root / "work"
        up = c.post("/api/upload", params={"name": "private.png"},
                    content=(root / "a.png").read_bytes())
        assert up.status_code == 200
        listing = c.get("/api/files", params={"dir": "work"}).json()["entries"]
        assert listing == []  # the run's work folder (every document's uploads and results) is hidden
        run_dir = next((root / "work").iterdir()).name
        stored = next((root / "work" / run_dir).rglob("upload.png")).relative_to(root).as_posix()
        for r in (c.post("/api/open", json={"path": stored}), c.get("/api/files", params={"dir": f"work/{run_dir}"})):
            assert r.status_code == 403 and "work folder" in r.json()["error"]


def _png_declaring(w: int, h: int) -> bytes:
    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def test_decompression_bomb_upload_is_refused_naming_the_users_file(client):
    r = client.post("/api/upload", params={"name": "holiday.png"}, content=_png_declaring(100_000, 100_000))
    err = r.json()["error"]
    assert r.status_code == 400 and "10,000,000,000 pixels" in err
    assert "holiday.png" in err and "upload.png" not in err  # not the server's name for its copy


def test_host_and_origin_variants(client):
    ok = ("LOCALHOST:8765", "[::1]", "127.0.0.1")
    bad = ("localhost.:8765", "127.0.0.1.nip.io", "0.0.0.0:8765", "127.1:8765", "evil.example", "")
    assert [client.get("/api/config", headers={"host": h}).status_code for h in ok] == [200] * len(ok)
    assert [client.get("/api/config", headers={"host": h}).status_code for h in bad] == [400] * len(bad)
    for origin in ("http://localhost:8765", "http://127.0.0.1:9999", "null", "file://", "chrome-extension://x"):
        r = client.post("/api/open", json={"path": "a.png"}, headers={"origin": origin})  # host is 127.0.0.1:8765
        assert r.status_code == 403, origin


def test_exif_rotated_jpeg_mask_lands_where_the_user_painted_and_report_escapes_the_prompt(root, tmp_path):
    from crispedit.io import load_image

    im = Image.fromarray(photo_like(320, 200, seed=9))
    exif = im.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 200 wide, 320 high
    im.save(root / "rotated.jpg", exif=exif.tobytes(), quality=95)
    with _client(root, tmp_path) as c:
        d = _open(c, "rotated.jpg")
        assert (d["width"], d["height"]) == (200, 320)
        c.post(f"/api/docs/{d['id']}/mask", json={"op": "rect", "box": [120, 40, 180, 100]})  # top right, as seen
        prompt = "<script>alert(1)</script>"
        job = c.post(f"/api/docs/{d['id']}/jobs", json={"engine": "classical", "seed": 1, "prompt": prompt}).json()
        j = _wait(c, job["id"], timeout=120)
        assert j["state"] == "done", j
        v = j["result"]["doc"]["versions"][-1]
        out = tmp_path / "out.jpg"
        out.write_bytes(c.get(v["download"]).content)
        rep = c.get(v["report"])
    before = load_image(root / "rotated.jpg").array.astype(int)
    after = load_image(out).array.astype(int)
    assert after.shape == before.shape == (320, 200, 3)
    big = np.abs(after - before).max(axis=2) > 24  # the edit, not the JPEG re-encoding
    ys, xs = np.nonzero(big)
    assert len(xs) > 100 and xs.min() >= 110 and ys.max() <= 110  # inside the painted box (+ blend ring)
    assert prompt not in rep.text and "sandbox" in rep.headers["content-security-policy"]


def test_two_servers_on_one_host_keep_their_own_token_cookies(root, tmp_path):
    # cookies are per host name, not per port: one shared cookie name let the second server's token replace the
    # first's in the browser, and the first tab got 401s
    with _client(root, tmp_path / "a", token="first") as a, _client(root, tmp_path / "b", token="second") as b:
        ra = a.get("/", params={"token": "first"}, headers={"host": "127.0.0.1:8765"}, follow_redirects=False)
        rb = b.get("/", params={"token": "second"}, headers={"host": "127.0.0.1:8766"}, follow_redirects=False)
        assert ra.headers["set-cookie"].startswith("crispedit_token_8765=first")
        assert rb.headers["set-cookie"].startswith("crispedit_token_8766=second")
        jar = {"cookie": "crispedit_token_8765=first; crispedit_token_8766=second"}  # what the browser sends
        assert a.get("/api/config", headers=jar).status_code == 200
        assert b.get("/api/config", headers={**jar, "host": "127.0.0.1:8766"}).status_code == 200
        assert a.get("/api/config", headers={"cookie": "crispedit_token_8766=second"}).status_code == 401


@pytest.mark.parametrize("erase", [False, True])
def test_stroke_in_blocks_equals_one_distance_transform(monkeypatch, erase):
    # a long stroke with a big brush used to hold several float arrays the size of its whole bounding box
    # (about 1 GB for a 2048-px diagonal on 8000 x 6000); now it is rasterised block by block, with the same result
    rng = np.random.default_rng(3)
    pts = np.stack([rng.uniform(-80, 700, 12), rng.uniform(-80, 500, 12)], 1).tolist()
    base = rng.integers(0, 256, (420, 620), dtype=np.uint8)
    out = []
    for block in (10 ** 6, 37):
        monkeypatch.setattr(maskcanvas, "STROKE_BLOCK", block)
        m = MaskCanvas(620, 420)
        m.array[:] = base
        m.stroke(pts, 90, 0.3, erase=erase)
        out.append(m.array.copy())
    diff = np.abs(out[0].astype(int) - out[1].astype(int))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 5  # float rounding of the distances at most
    assert np.count_nonzero(out[0] != base) > 1000


def test_document_closed_while_its_edit_finishes_gets_no_version_nor_pyramid(client, monkeypatch):
    from crispedit.workflow import builtin

    state = client.app.app.state.crispedit
    real = builtin.run_edit

    def edit_then_close(**kw):  # the user closes the photo during an engine call that reports no progress
        info = real(**kw)
        state.close(doc_id)
        return info

    monkeypatch.setattr(builtin, "run_edit", edit_then_close)
    d = _open(client)
    doc_id = d["id"]
    client.post(f"/api/docs/{doc_id}/mask", json={"op": "rect", "box": [10, 10, 60, 60]})
    job = client.post(f"/api/docs/{doc_id}/jobs", json={"engine": "classical"}).json()
    assert _wait(client, job["id"])["state"] == "cancelled"
    assert not [k for k in state.pyramids if k[0] == doc_id]  # no full-resolution copy kept for a closed photo
