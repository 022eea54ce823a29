"""Log rotation, tail and follow (unit level; `mlxctl logs -f` end to end is in the e2e tests)."""

from __future__ import annotations

import threading
import time

from mlxctl.logs import RotatingWriter, follow, last_line, tail


def test_rotation_keeps_a_bounded_number_of_backups(tmp_path):
    path = tmp_path / "worker.log"
    writer = RotatingWriter(path, max_bytes=1000, backups=2)
    for index in range(205):
        writer.write_line(f"line {index:04d} " + "x" * 40)
    writer.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["worker.log", "worker.log.1", "worker.log.2"]
    assert all(p.stat().st_size <= 1100 for p in tmp_path.iterdir())
    assert tail(path, 1)[0].startswith("line 0204")
    assert last_line(path).startswith("line 0204")
    # The newest backup holds the lines right before the current file's.
    assert int(tail(tmp_path / "worker.log.1", 1)[0].split()[1]) < 204


def test_tail_of_missing_and_short_files(tmp_path):
    assert tail(tmp_path / "nope.log", 5) == []
    path = tmp_path / "a.log"
    path.write_text("one\ntwo\n")
    assert tail(path, 5) == ["one", "two"]
    assert tail(path, 1) == ["two"]
    assert tail(path, 0) == []


def test_follow_continues_across_a_rotation(tmp_path):
    path = tmp_path / "worker.log"
    writer = RotatingWriter(path, max_bytes=300, backups=1)
    writer.write_line("before follow")
    seen: list[str] = []

    def reader():
        for line in follow(path, poll=0.02):
            seen.append(line)
            if line == "last":
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.2)
    for index in range(30):  # several rotations
        writer.write_line(f"n{index:02d} " + "y" * 30)
        time.sleep(0.01)
    writer.write_line("last")
    thread.join(10)
    assert not thread.is_alive()
    assert "before follow" not in seen  # follow starts at the end
    numbered = [line for line in seen if line.startswith("n")]
    assert numbered == [f"n{i:02d} " + "y" * 30 for i in range(30)]


def test_a_deleted_log_is_recreated_and_rotation_after_it_never_raises(tmp_path):
    path = tmp_path / "supervisor.log"
    writer = RotatingWriter(path, max_bytes=200, backups=2)
    writer.write_line("before")
    path.unlink()
    for i in range(20):  # several rotations after the deletion
        writer.write_line(f"line {i} " + "x" * 30)
    assert path.exists() and "line 19" in path.read_text()
    assert writer.dropped == 0


def test_tail_continues_into_the_rotated_file_when_the_current_one_is_short(tmp_path):
    log = tmp_path / "worker.log"
    (tmp_path / "worker.log.1").write_text("".join(f"old {i}\n" for i in range(10)))
    log.write_text("new 0\nnew 1\n")  # just rotated: two lines so far
    assert tail(log, 5) == ["old 7", "old 8", "old 9", "new 0", "new 1"]
    assert tail(log, 2) == ["new 0", "new 1"]
    assert tail(tmp_path / "missing.log", 3) == []


def test_tail_reads_back_through_every_rotated_file(tmp_path):
    log = tmp_path / "worker.log"
    (tmp_path / "worker.log.2").write_text("oldest 0\noldest 1\n")
    (tmp_path / "worker.log.1").write_text("older 0\n")
    log.write_text("new 0\n")
    assert tail(log, 3) == ["oldest 1", "older 0", "new 0"]
    assert tail(log, 10) == ["oldest 0", "oldest 1", "older 0", "new 0"]
