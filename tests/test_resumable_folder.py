"""ResumableFolder on its own, with hand-made byte strings (milliseconds, no model): the stamp decides whether a
folder is kept, the manifest's exact bytes, and each reason a kept file is removed on resume. Expected hashes come
from hashlib directly, expected manifests are written out by hand."""
import hashlib
import json
import logging
from pathlib import Path

import pytest

from textwsss.pipeline.resumable import FORMAT, ResumableFolder, digest, read_manifest, stamp_of

LOGGER = "textwsss.pipeline.resumable"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _written(folder: Path, items: dict[str, bytes], stamp=None, sources=None) -> ResumableFolder:
    """A finished folder holding `items` ({id: bytes}), each recorded with sources[id] when given."""
    out = ResumableFolder(folder, stamp or {"v": 1}, ".bin")
    out.open()
    for i, data in items.items():
        out.write(i, data, source=(sources or {}).get(i))
    out.finish(items)
    return out


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# ---- stamp, digest, manifest reading -------------------------------------------------------------------------
def test_stamp_of_is_the_config_as_json_with_sorted_keys_and_input_hashes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dataset.json").write_bytes(b"abc")
    (tmp_path / "model.pt").write_bytes(b"")
    stamp = stamp_of({"z": 1, "a": {"y": Path("p/q"), "b": (1, 2)}},
                     [tmp_path / "sub" / "dataset.json", str(tmp_path / "model.pt")])
    # a Path becomes its string, a tuple a list; keys sorted at every level (the stamp file's bytes are fixed)
    assert stamp == {"config": {"a": {"b": [1, 2], "y": "p/q"}, "z": 1},
                     "inputs": {"dataset.json": md5(b"abc"), "model.pt": md5(b"")}}
    assert list(stamp["config"]) == ["a", "z"] and list(stamp["config"]["a"]) == ["b", "y"]
    assert stamp_of({}) == {"config": {}, "inputs": {}}


def test_digest_is_the_first_16_hex_of_the_sha256_of_sorted_json():
    obj = {"b": [1, 2], "a": Path("x")}
    expected = hashlib.sha256(b'{"a": "x", "b": [1, 2]}').hexdigest()[:16]
    assert digest(obj) == expected and len(expected) == 16
    assert digest({"a": "x", "b": [1, 2]}) == expected and digest({"a": "y", "b": [1, 2]}) != expected


@pytest.mark.parametrize("content, reason", [
    (None, "No such file"),
    ("{not json", "Expecting property name"),
    ('{"entries": {}}', "'files'"),
    ('["files"]', "list indices"),
])
def test_an_unreadable_manifest_names_itself(tmp_path, content, reason):
    if content is not None:
        (tmp_path / ".manifest.json").write_text(content)
    with pytest.raises(ValueError, match=rf"\.manifest\.json: no readable manifest of the folder's files \(.*{reason}"):
        read_manifest(tmp_path)


def test_a_manifest_whose_files_are_not_a_mapping_is_rejected(tmp_path):
    (tmp_path / ".manifest.json").write_text('{"files": [["a.bin", 1, "x"]]}')
    with pytest.raises(ValueError, match=r"\.manifest\.json: 'files' must be a mapping of file names, got list"):
        read_manifest(tmp_path)


# ---- writing: the manifest's bytes ---------------------------------------------------------------------------
def test_write_and_finish_leave_the_files_a_stamp_and_a_sorted_manifest(tmp_path):
    folder = tmp_path / "out"
    out = ResumableFolder(folder, {"knob": 2}, ".bin")
    assert out.open() == 0
    assert json.loads((folder / ".stamp.json").read_text()) == {"format": FORMAT, "knob": 2}
    assert out.path("b") == folder / "b.bin" and not out.done("b")
    out.write("b", b"bbbb", source="cafe")
    out.write("a", b"aa")
    assert out.done("b") and not out.done("c")
    # each record reaches this process's journal as it is made, before finish
    journals = sorted(folder.glob(".journal.*.jsonl"))
    assert len(journals) == 1
    assert [json.loads(line) for line in journals[0].read_text().splitlines()] == \
        [["b.bin", 4, md5(b"bbbb"), "cafe"], ["a.bin", 2, md5(b"aa")]]
    out.finish(["a", "b"])
    manifest = (folder / ".manifest.json").read_text()
    assert manifest == ('{"files": {\n'
                        f'"a.bin": [2, "{md5(b"aa")}"],\n'
                        f'"b.bin": [4, "{md5(b"bbbb")}", "cafe"]\n'
                        '}}\n')
    assert read_manifest(folder) == {"a.bin": [2, md5(b"aa")], "b.bin": [4, md5(b"bbbb"), "cafe"]}
    assert sorted(_files(folder)) == [".manifest.json", ".stamp.json", "a.bin", "b.bin"]  # journal folded in


def test_finish_removes_files_of_other_ids_and_temporary_files_but_keeps_subfolders(tmp_path):
    folder = tmp_path / "out"
    out = ResumableFolder(folder, {}, ".bin")
    out.open()
    for i in ("a", "sub/x", "gone"):
        out.write(i, i.encode())
    (folder / ".a.bin.k3j.tmp.bin").write_bytes(b"half")
    (folder / "sub" / "notes.txt").write_bytes(b"?")
    out.finish(["a", "sub/x"])
    assert _files(folder).keys() == {".manifest.json", ".stamp.json", "a.bin", "sub/x.bin"}
    assert read_manifest(folder) == {"a.bin": [1, md5(b"a")], "sub/x.bin": [5, md5(b"sub/x")]}


def test_finish_names_the_ids_without_a_file(tmp_path):
    out = ResumableFolder(tmp_path / "out", {}, ".bin")
    out.open()
    out.write("a", b"a")
    out.write("b", b"b")
    (tmp_path / "out" / "b.bin").unlink()  # recorded, but its file is gone
    with pytest.raises(RuntimeError, match=r"out: 2 files were not written or not recorded: b\.bin, c\.bin$"):
        out.finish(["a", "b", "c"])


def test_record_of_a_file_a_worker_wrote(tmp_path):
    out = ResumableFolder(tmp_path / "out", {}, ".bin")
    out.open()
    (tmp_path / "out" / "w.bin").write_bytes(b"worker")
    out.record("w", 6, md5(b"worker"), source="f00d")
    out.record("v", 0, md5(b""))
    (tmp_path / "out" / "v.bin").write_bytes(b"")
    out.finish(["w", "v"])
    assert read_manifest(tmp_path / "out") == {"v.bin": [0, md5(b"")], "w.bin": [6, md5(b"worker"), "f00d"]}


# ---- opening: the stamp --------------------------------------------------------------------------------------
def test_the_same_stamp_keeps_every_file_byte_for_byte(tmp_path, caplog):
    folder = tmp_path / "out"
    _written(folder, {"a": b"1", "b": b"22"})
    whole = _files(folder)
    again = ResumableFolder(folder, {"v": 1}, ".bin")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert again.open() == 2
    assert again.done("a") and again.done("b")
    assert again.entries == {"a.bin": [1, md5(b"1")], "b.bin": [2, md5(b"22")]}
    assert _files(folder) == whole and _warnings(caplog) == []
    assert any("resuming; 2 files" in r.getMessage() for r in caplog.records)


def test_another_stamp_empties_the_folder(tmp_path, caplog):
    folder = tmp_path / "out"
    _written(folder, {"a": b"1"})
    (folder / "stray").mkdir()
    other = ResumableFolder(folder, {"v": 2}, ".bin")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert other.open() == 0
    assert _files(folder) == {".stamp.json": json.dumps({"format": FORMAT, "v": 2}, indent=2).encode() + b"\n"}
    assert not (folder / "stray").exists() and other.entries == {}
    assert any("made with other inputs or params" in r.getMessage() for r in caplog.records)


def test_a_folder_without_a_readable_stamp_starts_empty(tmp_path, caplog):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"1")
    (folder / ".stamp.json").write_text('{"format": ')  # a stamp cut short
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert ResumableFolder(folder, {"v": 1}, ".bin").open() == 0
    assert sorted(_files(folder)) == [".stamp.json"]
    # nothing to say about other inputs: there was no stamp to compare
    assert not any("other inputs" in r.getMessage() for r in caplog.records)


def test_a_stamp_without_the_format_is_another_stamp(tmp_path):
    folder = tmp_path / "out"
    _written(folder, {"a": b"1"})
    (folder / ".stamp.json").write_text(json.dumps({"v": 1}))  # written before manifests existed
    assert ResumableFolder(folder, {"v": 1}, ".bin").open() == 0
    assert not (folder / "a.bin").exists()


def test_only_the_main_process_opens_the_folder(tmp_path):
    folder = tmp_path / "out"
    _written(folder, {"a": b"1"})
    (folder / "extra.bin").write_bytes(b"x")
    whole = _files(folder)
    assert ResumableFolder(folder, {"v": 2}, ".bin").open(main=False) == 0
    assert _files(folder) == whole  # neither emptied (other stamp) nor checked (extra file)
    assert not (tmp_path / "new").exists() and ResumableFolder(tmp_path / "new", {}, ".bin").open(main=False) == 0
    assert not (tmp_path / "new").exists()


# ---- opening: each kept file checked ---------------------------------------------------------------------------
def test_each_reason_a_file_is_not_kept(tmp_path, caplog):
    folder = tmp_path / "out"
    items = {"short": b"12345", "flipped": b"abcde", "gone": b"g", "fine": b"ok"}
    _written(folder, items)
    (folder / "short.bin").write_bytes(b"123")
    (folder / "flipped.bin").write_bytes(b"abcdf")  # same size: only the hash tells
    (folder / "gone.bin").unlink()
    (folder / "extra.bin").write_bytes(b"e")
    (folder / ".fine.bin.x1y2.tmp.bin").write_bytes(b"o")
    (folder / ".hidden").write_bytes(b"h")  # hidden, but no temporary file
    out = ResumableFolder(folder, {"v": 1}, ".bin")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert out.open() == 1
    assert out.entries == {"fine.bin": [2, md5(b"ok")]}
    assert sorted(_files(folder)) == [".manifest.json", ".stamp.json", "fine.bin"]
    assert read_manifest(folder) == {"fine.bin": [2, md5(b"ok")]}  # the manifest lists only what is kept
    # sorted by path, the missing ones last; removed: a file nobody recorded, recomputed: one that was
    assert _warnings(caplog) == [
        f"{folder / '.fine.bin.x1y2.tmp.bin'}: left by an interrupted write; removed",
        f"{folder / '.hidden'}: not written by this stage (not in its manifest); removed",
        f"{folder / 'extra.bin'}: not written by this stage (not in its manifest); removed",
        f"{folder / 'flipped.bin'}: content differs from the manifest's hash; recomputed",
        f"{folder / 'short.bin'}: size 3 bytes, the manifest says 5; recomputed",
        f"{folder / 'gone.bin'}: missing; recomputed",
    ]
    assert not out.done("short") and not out.done("gone") and out.done("fine")


def test_a_file_made_from_another_input_is_recomputed(tmp_path, caplog):
    folder = tmp_path / "out"
    _written(folder, {"a": b"1", "b": b"2", "c": b"3", "d": b"4"}, sources={"a": "s1", "b": "s2", "c": "s3"})
    out = ResumableFolder(folder, {"v": 1}, ".bin")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        # a: the same input; b: its input changed; c: not in sources (kept); d: recorded without a source
        assert out.open(sources={"a": "s1", "b": "s2-new", "d": "s4"}) == 2
    assert sorted(out.entries) == ["a.bin", "c.bin"]
    assert _warnings(caplog) == [f"{folder / 'b.bin'}: made from an input that has changed since; recomputed",
                                 f"{folder / 'd.bin'}: made from an input that has changed since; recomputed"]


def test_sources_apply_to_the_folders_own_files_only(tmp_path):
    # the manifest may list a file with another suffix (e.g. the worker's side file): no source is looked up for it
    folder = tmp_path / "out"
    _written(folder, {"a": b"1"}, sources={"a": "s1"})
    (folder / "a.txt").write_bytes(b"note")
    manifest = read_manifest(folder)
    manifest["a.txt"] = [4, md5(b"note")]
    (folder / ".manifest.json").write_text(json.dumps({"files": manifest}))
    out = ResumableFolder(folder, {"v": 1}, ".bin")
    # "a.txt" less the folder's suffix length is "a", whose source differs from a.txt's (none): not compared
    assert out.open(sources={"a": "s1"}) == 2


def test_without_sources_the_recorded_source_is_not_checked(tmp_path):
    folder = tmp_path / "out"
    _written(folder, {"a": b"1"}, sources={"a": "s1"})
    assert ResumableFolder(folder, {"v": 1}, ".bin").open() == 1
    assert ResumableFolder(folder, {"v": 1}, ".bin").open(sources={}) == 1


def test_past_twenty_problems_the_rest_is_a_count(tmp_path, caplog):
    folder = tmp_path / "out"
    _written(folder, {})
    for n in range(23):
        (folder / f"x{n:02d}.bin").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert ResumableFolder(folder, {"v": 1}, ".bin").open() == 0
    warnings = _warnings(caplog)
    assert len(warnings) == 21
    assert warnings[19].startswith(f"{folder / 'x19.bin'}: not written")
    assert warnings[20] == f"{folder}: 3 more files removed or recomputed for the same reasons"


def test_exactly_twenty_problems_are_all_named(tmp_path, caplog):
    folder = tmp_path / "out"
    _written(folder, {})
    for n in range(20):
        (folder / f"x{n:02d}.bin").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ResumableFolder(folder, {"v": 1}, ".bin").open()
    assert len(_warnings(caplog)) == 20 and "more files" not in _warnings(caplog)[-1]


# ---- an interrupted run: journals without a manifest -----------------------------------------------------------
def test_an_interrupted_run_is_resumed_from_its_journals(tmp_path):
    folder = tmp_path / "out"
    first = ResumableFolder(folder, {"v": 1}, ".bin")
    first.open()
    first.write("a", b"1", source="s")
    first.write("b", b"22")
    first._journal.close()  # the process dies: no finish, no manifest
    journal = next(folder.glob(".journal.*.jsonl"))
    with open(journal, "a") as f:
        f.write('["c.bin", 3, "')  # the line it was writing when killed
    (folder / "c.bin").write_bytes(b"333")
    # a second writer's journal of the same run
    (folder / ".journal.99999.jsonl").write_text(json.dumps(["d.bin", 1, md5(b"4")]) + "\n")
    (folder / "d.bin").write_bytes(b"4")
    again = ResumableFolder(folder, {"v": 1}, ".bin")
    assert again.open() == 3
    assert again.entries == {"a.bin": [1, md5(b"1"), "s"], "b.bin": [2, md5(b"22")], "d.bin": [1, md5(b"4")]}
    assert not (folder / "c.bin").exists()  # unlisted: its record was cut short
    # the journals are folded into the manifest at once
    assert not list(folder.glob(".journal.*")) and read_manifest(folder) == again.entries
    again.write("c", b"333")
    again.finish(["a", "b", "c", "d"])
    assert read_manifest(folder)["c.bin"] == [3, md5(b"333")]


def test_a_later_journal_line_overrides_the_manifest(tmp_path):
    folder = tmp_path / "out"
    _written(folder, {"a": b"old"})
    (folder / "a.bin").write_bytes(b"newer")
    (folder / ".journal.1.jsonl").write_text(json.dumps(["a.bin", 3, md5(b"old")]) + "\n" +
                                              json.dumps(["a.bin", 5, md5(b"newer")]) + "\n")
    out = ResumableFolder(folder, {"v": 1}, ".bin")
    assert out.open() == 1 and out.entries == {"a.bin": [5, md5(b"newer")]}


def test_a_damaged_manifest_recomputes_every_file(tmp_path, caplog):
    folder = tmp_path / "out"
    _written(folder, {"a": b"1", "b": b"2"})
    (folder / ".manifest.json").write_text('{"files": {"a.bin": [1, ')
    out = ResumableFolder(folder, {"v": 1}, ".bin")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert out.open() == 0
    warnings = _warnings(caplog)
    assert "no readable manifest" in warnings[0] and warnings[0].endswith("; every file in the folder is recomputed")
    assert warnings[1:] == [f"{folder / n}: not written by this stage (not in its manifest); removed"
                            for n in ("a.bin", "b.bin")]
    assert sorted(_files(folder)) == [".manifest.json", ".stamp.json"]


def test_finish_folds_in_the_journals_of_worker_processes(tmp_path):
    folder = tmp_path / "out"
    out = ResumableFolder(folder, {"v": 1}, ".bin")
    out.open()
    out.write("a", b"1")
    # a worker process recorded its own file in its own journal
    (folder / "w.bin").write_bytes(b"ww")
    (folder / ".journal.424242.jsonl").write_text(json.dumps(["w.bin", 2, md5(b"ww")]) + "\n")
    out.finish(["a", "w"])
    assert read_manifest(folder) == {"a.bin": [1, md5(b"1")], "w.bin": [2, md5(b"ww")]}
    assert not list(folder.glob(".journal.*"))
    # finishing twice (nothing new) leaves the same manifest
    before = (folder / ".manifest.json").read_bytes()
    out.finish(["a", "w"])
    assert (folder / ".manifest.json").read_bytes() == before


def test_a_broken_journal_line_loses_only_itself(tmp_path):
    # a process that reuses a killed one's pid (small pid namespaces: containers) appends to its journal after the
    # cut-short line: the records after that line still count
    folder = tmp_path / "out"
    _written(folder, {})
    for name, data in (("a", b"1"), ("b", b"22")):
        (folder / f"{name}.bin").write_bytes(data)
    (folder / ".journal.7.jsonl").write_text(json.dumps(["a.bin", 1, md5(b"1")]) + "\n" + '["x.bin", 3, "\n'
                                             + json.dumps(["b.bin", 2, md5(b"22")]) + "\n")
    out = ResumableFolder(folder, {"v": 1}, ".bin")
    assert out.open() == 2 and sorted(out.entries) == ["a.bin", "b.bin"]


def test_a_folder_opened_again_keeps_recording(tmp_path):
    folder = tmp_path / "out"
    out = ResumableFolder(folder, {"v": 1}, ".bin")
    out.open()
    out.write("a", b"1")
    assert out.open() == 1  # e.g. a retry in the same process: the journal is folded into the manifest
    out.write("b", b"22")
    out.finish(["a", "b"])
    assert read_manifest(folder) == {"a.bin": [1, md5(b"1")], "b.bin": [2, md5(b"22")]}


def test_finish_names_the_first_ten_missing_files_and_counts_all(tmp_path):
    out = ResumableFolder(tmp_path / "out", {}, ".bin")
    out.open()
    ids = [f"i{n:02d}" for n in range(12)]
    with pytest.raises(RuntimeError) as err:
        out.finish(ids)
    assert str(err.value) == (f"{tmp_path / 'out'}: 12 files were not written or not recorded: "
                              + ", ".join(f"i{n:02d}.bin" for n in range(10)))


def test_a_folder_without_a_stamp_is_emptied_without_blaming_other_inputs(tmp_path, caplog):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"1")  # e.g. written by hand, or by a version before stamps
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert ResumableFolder(folder, {"v": 1}, ".bin").open() == 0
    assert sorted(_files(folder)) == [".stamp.json"]
    assert not any("other inputs" in r.getMessage() for r in caplog.records)
