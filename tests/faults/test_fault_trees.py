"""Odd input trees: long UIDs, shared and duplicated UIDs, copies, non-ASCII names, symlink loops,
thousands of non-DICOM files, an empty folder, a file that vanishes while the run goes on.

Each case: one manifest row per series (or per problem), no two rows sharing an output folder or
a record, a reason that names the problem, and no lost series.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
from pydicom.uid import generate_uid

from dicom_helpers import SAGITTAL_IOP, synthetic_volume, write_series
from dicom_selection_helpers import set_attributes, write_diffusion_series
from fault_helpers import run
from inference_helpers import untrained_model
from kneeseg.inference import batch

UID64 = "1.2.826.0.1.3680043.8.498." + "1" * 38  # 64 characters, the most DICOM allows


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return untrained_model(tmp_path_factory.mktemp("tree_model") / "model.pt")


def _uid(stem: str) -> str:
    uid = f"1.2.826.0.1.3680043.8.498.{stem}"
    return (uid + "9" * 64)[:64]


def _outputs(res) -> list:
    return [r.get("nifti") for r in res.rows if r["status"] == "ok"]


def test_64_character_uids_13_acquisitions_and_13_diffusion_volumes(tmp_path, model):
    """A series of 13 acquisitions at the same positions gets 13 rows and 13 folders, a diffusion
    series of 13 volumes one skip row: nothing cut to 64 characters collides."""
    vol = synthetic_volume(rows=16, columns=16, slices=3, seed=1)
    study = generate_uid()
    for a in range(1, 14):
        write_series(tmp_path / "in" / "repeat", vol, orientation=SAGITTAL_IOP, series_uid=_uid("1"), study_uid=study,
                     prefix=f"A{a:02d}_", acquisition_number=a, series_description="SAG PD repeat")  # fmt: skip
    scheme = [(0.0, None)] + [(1000.0, tuple(np.round(np.eye(3)[i % 3] * (1 + i // 3), 3))) for i in range(12)]
    write_diffusion_series(tmp_path / "in" / "dwi", scheme=scheme, series_uid=_uid("2"), slices=2)
    res = run(tmp_path / "in", tmp_path / "out", model, formats=["nifti"])
    repeat = [r for r in res.rows if r["series_uid"] == _uid("1")]
    dwi = [r for r in res.rows if r["series_uid"] == _uid("2")]
    assert len(repeat) == 13 and all(r["status"] == "ok" for r in repeat), res.rows
    assert len({r["nifti"] for r in repeat}) == 13, "two acquisitions share an output folder"
    assert len(dwi) == 1 and dwi[0]["status"] == "skipped" and "13 volumes" in dwi[0]["reason"]
    records = list((tmp_path / "out" / ".kneeseg" / "records").glob("*.json"))
    assert len(records) == len(res.rows) == 14
    assert all(len(part) <= 64 for r in repeat for part in r["nifti"].split("/"))
    suffixes = {r["nifti"].split("/")[1].rsplit("_e0", 1)[1] for r in repeat}
    assert suffixes == {f"_a{a}" for a in range(1, 14)}, "an acquisition suffix was cut off"


def test_one_uid_for_two_series_in_two_folders_copies_and_duplicates(tmp_path, model):
    """Two different series that share a SeriesInstanceUID (folders a, b) stay two series; a
    folder copied twice and a file duplicated under another name are read once, with a note."""
    vol_a = synthetic_volume(rows=16, columns=16, slices=3, seed=2)
    vol_b = synthetic_volume(rows=16, columns=16, slices=3, seed=3)
    write_series(tmp_path / "in" / "a", vol_a, orientation=SAGITTAL_IOP, series_uid=_uid("3"), series_description="A")
    write_series(tmp_path / "in" / "b", vol_b, orientation=SAGITTAL_IOP, series_uid=_uid("3"), series_description="B")
    write_series(tmp_path / "in" / "c", vol_a, orientation=SAGITTAL_IOP, series_uid=_uid("4"), series_description="C")
    shutil.copytree(tmp_path / "in" / "c", tmp_path / "in" / "c_copy")
    first = sorted((tmp_path / "in" / "c").iterdir())[0]
    shutil.copy(first, first.with_name("duplicate of " + first.name))
    res = run(tmp_path / "in", tmp_path / "out", model, formats=["nifti"])
    shared = [r for r in res.rows if r["series_uid"] == _uid("3")]
    assert sorted(r["series_description"] for r in shared) == ["A", "B"]
    assert all(r["status"] == "ok" and "shared by different series in 2 folders" in r["notes"] for r in shared)
    assert len({r["nifti"] for r in shared}) == 2
    (copied,) = [r for r in res.rows if r["series_uid"] == _uid("4")]
    assert copied["status"] == "ok" and copied["slices"] == 3
    assert "4 duplicate file(s) of instances already read ignored" in copied["notes"]


def test_non_ascii_names_keep_distinct_folders(tmp_path, model):
    vol = synthetic_volume(rows=16, columns=16, slices=3, seed=4)
    for name, who in (("m1", "Müller^Jürgen"), ("m2", "Möller^Jörg")):
        paths = write_series(tmp_path / "in" / name, vol, orientation=SAGITTAL_IOP)
        # the character set first, so the values below are stored as UTF-8
        set_attributes(paths, SpecificCharacterSet="ISO_IR 192", PatientID=who, PatientName=who,
                       SeriesDescription="Knie sagittal PD – Übersicht")  # fmt: skip
    res = run(tmp_path / "in", tmp_path / "out", model)
    ok = [r for r in res.rows if r["status"] == "ok"]
    assert sorted(r["patient_id"] for r in ok) == ["Möller^Jörg", "Müller^Jürgen"]
    assert len({r["nifti"].split("/")[0] for r in ok}) == 2, "two patients share a folder"
    text = (tmp_path / "out" / "manifest.csv").read_text(encoding="utf-8")
    assert "Müller^Jürgen" in text and "Übersicht" in text
    assert all((tmp_path / "out" / r["preview"]).is_file() for r in ok)


def test_symlink_loops_thousands_of_other_files_and_an_empty_folder(tmp_path, model):
    root = tmp_path / "in"
    vol = synthetic_volume(rows=16, columns=16, slices=3, seed=5)
    write_series(root / "knee", vol, orientation=SAGITTAL_IOP)
    os.symlink(root, root / "knee" / "loop")  # a folder loop
    os.symlink(root / "x", root / "y")  # a file loop
    os.symlink(root / "y", root / "x")
    junk = root / "attachments"
    junk.mkdir()
    for i in range(10_000):
        (junk / f"note_{i:05d}.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    t0 = time.perf_counter()
    res = run(root, tmp_path / "out", model, formats=["nifti"])
    seconds = time.perf_counter() - t0
    print(f"10,000 non-DICOM files + one series: run (discovery included) {seconds:.1f} s")
    by = {}
    for r in res.rows:
        by.setdefault(r["source"].split("/")[0], []).append(r)
    assert [r["status"] for r in by["knee"]] == ["ok"]
    (notes,) = by["attachments"]  # one row for the folder, not 10,000
    assert notes["status"] == "skipped" and notes["reason"].startswith("10000 files that are not DICOM images")
    loops = by["x"] + by["y"]
    assert len(loops) == 2 and all("Too many levels of symbolic links" in r["reason"] for r in loops)
    assert seconds < 120
    empty = run(tmp_path / "empty", tmp_path / "out_empty", model)
    assert empty.rows == [] and empty.exit_code == 0
    assert (tmp_path / "out_empty" / "manifest.csv").read_text().startswith("status,reason,")


def test_a_file_that_vanishes_between_discovery_and_reading(tmp_path, model, monkeypatch):
    vol = synthetic_volume(rows=16, columns=16, slices=3, seed=6)
    paths = write_series(tmp_path / "in" / "knee", vol, orientation=SAGITTAL_IOP)
    write_series(tmp_path / "in" / "other", vol, orientation=SAGITTAL_IOP)
    real = batch.plan_work

    def plan_then_delete(*args, **kwargs):
        items = real(*args, **kwargs)
        paths[1].unlink()  # e.g. a PACS export still being cleaned up
        return items

    monkeypatch.setattr(batch, "plan_work", plan_then_delete)
    res = run(tmp_path / "in", tmp_path / "out", model, formats=["nifti"])
    by = {r["source"]: r for r in res.rows}
    assert by["other"]["status"] == "ok"
    assert by["knee"]["status"] == "failed" and paths[1].name in by["knee"]["reason"]
    assert "No such file or directory" in by["knee"]["reason"] and res.exit_code == 1


def test_a_folder_of_symlinks_to_series_is_followed_once(tmp_path, model):
    """A folder holding only a link to a series (and a second link to it) segments that series once."""
    vol = synthetic_volume(rows=16, columns=16, slices=3, seed=6)
    write_series(tmp_path / "store" / "knee", vol, orientation=SAGITTAL_IOP)
    root = tmp_path / "in"
    root.mkdir()
    os.symlink(tmp_path / "store" / "knee", root / "study")
    os.symlink(tmp_path / "store" / "knee", root / "study_again")
    res = run(root, tmp_path / "out", model, formats=["nifti"])
    assert [r["status"] for r in res.rows] == ["ok"], res.rows
    assert res.rows[0]["source"].split("/")[0] == "study"
