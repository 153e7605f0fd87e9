"""A real MONAI Label 0.8.5 server (from ``.venv-label``) serving the kneeseg bundle.

The server runs on a free loopback port with a studies folder of phantom NIfTI volumes and the
phantom model checkpoint: ``/info/`` lists the model, ``/infer`` segments a volume (Dice vs the
phantom truth), a label is submitted like 3D Slicer does, ``/train`` runs one epoch and writes a
new checkpoint, and stopping the server frees the port. Needs ``make label-env``.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from inference_helpers import PHANTOM_MODEL, PHANTOM_SHAPE, dice
from kneeseg.monailabel import MODEL_NAME, find_sample_app, label_venv, port_is_free, prepare_app, start_server

pytestmark = pytest.mark.slow

# unseen by the phantom model (trained on seed 0); 3 cases -> MONAI Label's 0.2 split: 2 train, 1 val
PHANTOM_SEED = 11
SERVER_TIMEOUT = 180.0
TRAIN_TIMEOUT = 420.0

# loopback requests must not go through an http_proxy from the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _require_label_venv() -> Path:
    venv = label_venv()
    problem = None
    if not (venv / "bin" / "python").exists():
        problem = f"MONAI Label environment {venv} not found"
    else:
        try:
            if find_sample_app(venv) is None:
                problem = f"MONAI Label's monaibundle sample app not found in {venv}"
        except RuntimeError as e:
            problem = str(e)
    if problem:
        msg = f"{problem}: run `make label-env`"
        if os.environ.get("KNEESEG_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg + " (KNEESEG_REQUIRE_SHARED_DATA=1)")
        pytest.skip(msg)
    return venv


def _multipart(fields: dict[str, tuple[str | None, bytes, str]]) -> tuple[bytes, str]:
    """Encode ``{name: (filename or None, data, content type)}`` as multipart/form-data."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, (filename, data, ctype) in fields.items():
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n"
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _request(method: str, url: str, body: bytes | None = None, ctype: str | None = None,
             timeout: float = 120.0) -> tuple[int, str, bytes]:  # fmt: skip
    req = urllib.request.Request(url, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def _get_json(url: str) -> Any:
    status, _, data = _request("GET", url, timeout=30.0)
    assert status == 200, f"GET {url}: HTTP {status}: {data[:500]!r}"
    return json.loads(data)


def _parse_multipart(ctype: str, data: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``{field name: (filename, payload)}`` of a multipart response."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + data
    )
    assert msg.is_multipart(), f"not a multipart response: {ctype}"
    out = {}
    for part in msg.iter_parts():
        out[part.get_param("name", header="content-disposition")] = (part.get_filename(), part.get_payload(decode=True))
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def monai_label_venv() -> Path:
    """``.venv-label`` (or ``$KNEESEG_LABEL_VENV``); checked before the phantom model is trained."""
    return _require_label_venv()


@pytest.fixture(scope="module")
def label_server(monai_label_venv: Path, phantom_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """A running server; yields a dict with the server, the studies and the phantom truth."""
    from kneeseg.phantom import generate_phantom

    venv = monai_label_venv
    root = tmp_path_factory.mktemp("monai_label")
    ph = root / "phantom"
    generate_phantom(ph, cases=3, seed=PHANTOM_SEED, shape=PHANTOM_SHAPE, png=False)

    studies = root / "studies"
    final = studies / "labels" / "final"
    final.mkdir(parents=True)
    ids: list[str] = []
    truth: dict[str, np.ndarray] = {}
    ligament: dict[str, bytes] = {}
    for image in sorted((ph / "imagesTr").glob("*.nii.gz")):
        case = image.name[: -len(".nii.gz")]
        ids.append(case)
        shutil.copyfile(image, studies / image.name)
        lab = nib.load(ph / "labelsTr" / image.name)
        truth[case] = np.asarray(lab.dataobj) == 4  # phantom label ids: ligament = 4
        out = root / "ligament" / image.name  # MONAI Label's labels/final hold class ids: ligament = 1
        out.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(truth[case].astype(np.uint8), lab.affine), out)
        ligament[case] = out.read_bytes()
    # all but the last label are in labels/final from the start; the last one is submitted over HTTP
    for case in ids[:-1]:
        (final / f"{case}.nii.gz").write_bytes(ligament[case])

    app = prepare_app(root / "app", ckpt=phantom_model, overrides=PHANTOM_MODEL, venv=venv)
    t0 = time.monotonic()
    server = start_server(app, studies, venv=venv, timeout=SERVER_TIMEOUT)
    startup = time.monotonic() - t0
    try:
        yield {"server": server, "app": app, "studies": studies, "ids": ids, "truth": truth,
               "ligament": ligament, "phantom": ph, "startup": startup}  # fmt: skip
    finally:
        server.stop()


def test_info_lists_the_model_and_its_label(label_server):
    server = label_server["server"]
    print(f"server ready after {label_server['startup']:.1f} s on {server.url}")
    info = _get_json(server.url + "/info/")
    assert MODEL_NAME in info["models"], info["models"].keys()
    model = info["models"][MODEL_NAME]
    assert "ligament" in model["labels"], model
    assert MODEL_NAME in info.get("trainers", {}), info.get("trainers")
    ds = _get_json(server.url + "/datastore/?output=stats")
    assert ds["total"] == len(label_server["ids"]), ds


def test_infer_segments_the_ligament(label_server):
    server, case = label_server["server"], label_server["ids"][0]
    body, ctype = _multipart({"params": (None, json.dumps({"result_dtype": "uint8"}).encode(), "application/json")})
    t0 = time.monotonic()
    status, rtype, data = _request("POST", f"{server.url}/infer/{MODEL_NAME}?image={case}", body, ctype, timeout=300)
    took = time.monotonic() - t0
    assert status == 200, f"HTTP {status}: {data[:1000]!r}\n{server.log_tail()}"
    parts = _parse_multipart(rtype, data)
    params = json.loads(parts["params"][1])
    assert params.get("label_names", {}).get("ligament") == 1, params
    fname, payload = parts["image"]
    assert fname and fname.endswith(".nii.gz"), fname
    out = label_server["studies"].parent / f"infer_{case}.nii.gz"
    out.write_bytes(payload)
    pred = nib.load(out)
    image = nib.load(label_server["studies"] / f"{case}.nii.gz")
    arr = np.asarray(pred.dataobj)
    assert arr.shape == image.shape == PHANTOM_SHAPE, (arr.shape, image.shape)
    assert set(np.unique(arr).tolist()) <= {0, 1}
    np.testing.assert_allclose(pred.affine, image.affine, atol=1e-3)
    d = dice(arr == 1, label_server["truth"][case])
    print(f"/infer {case}: Dice {d:.3f}, {took:.1f} s (server latencies {params.get('latencies', {}).get('total')} s)")
    assert d >= 0.8, f"Dice {d:.3f} < 0.8"


def test_submitted_label_lands_in_labels_final(label_server):
    server, case = label_server["server"], label_server["ids"][-1]
    body, ctype = _multipart({
        "label": (f"{case}.nii.gz", label_server["ligament"][case], "application/octet-stream"),
        "params": (None, b"{}", "application/json"),
    })  # fmt: skip
    status, _, data = _request("PUT", f"{server.url}/datastore/label?image={case}&tag=final", body, ctype)
    assert status == 200, f"HTTP {status}: {data[:1000]!r}"
    saved = label_server["studies"] / "labels" / "final" / f"{case}.nii.gz"
    assert saved.is_file()
    assert np.array_equal(np.asarray(nib.load(saved).dataobj) > 0, label_server["truth"][case])
    ds = _get_json(server.url + "/datastore/?output=stats")
    assert ds["label_tags"].get("final") == len(label_server["ids"]), ds


def test_train_one_epoch_writes_a_new_checkpoint(label_server):
    server, app = label_server["server"], label_server["app"]
    ckpt = app / "model" / MODEL_NAME / "models" / "model.pt"
    before, mtime = _sha256(ckpt), ckpt.stat().st_mtime
    t0 = time.monotonic()
    status, _, data = _request("POST", f"{server.url}/train/{MODEL_NAME}", json.dumps({"max_epochs": 1}).encode(),
                               "application/json")  # fmt: skip
    assert status == 200, f"HTTP {status}: {data[:1000]!r}"
    while True:
        task = _get_json(server.url + "/train/?all=false")
        if task.get("status") not in ("SUBMITTED", "RUNNING", None):
            break
        assert time.monotonic() - t0 < TRAIN_TIMEOUT, f"training still {task.get('status')}\n{server.log_tail()}"
        time.sleep(2.0)
    took = time.monotonic() - t0
    details = "\n".join(task.get("details", []))
    assert task["status"] == "DONE", f"training {task['status']}:\n{details}\n--- server log ---\n{server.log_tail(60)}"
    assert ckpt.is_file() and ckpt.stat().st_mtime > mtime and _sha256(ckpt) != before, "model.pt was not rewritten"
    print(f"/train 1 epoch: DONE in {took:.1f} s; model.pt rewritten")

    # the server serves the new checkpoint (MONAI Label reloads model.pt when it changes)
    case = label_server["ids"][-1]
    body, ctype = _multipart({"params": (None, b"{}", "application/json")})
    status, _, data = _request("POST", f"{server.url}/infer/{MODEL_NAME}?image={case}&output=image", body, ctype,
                               timeout=300)  # fmt: skip
    assert status == 200, f"HTTP {status}: {data[:1000]!r}\n{server.log_tail()}"
    out = label_server["studies"].parent / f"infer_after_train_{case}.nii.gz"
    out.write_bytes(data)
    assert nib.load(out).shape == PHANTOM_SHAPE


def test_stop_frees_the_port(label_server):
    server = label_server["server"]
    code = server.stop()
    assert not server.alive()
    assert code is not None
    assert port_is_free(server.port)
    with pytest.raises(urllib.error.URLError):
        _OPENER.open(server.url + "/info/", timeout=5)
