"""bench/scale.py runs end to end at a tiny size: dataset copies with distinct bytes, preparation in
a subprocess, training with 1 and 2 processes (torchrun), and the side-by-side tables."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, _env


def test_copies_have_distinct_bytes_and_hold_every_person(face_data, tmp_path):
    from bench.scale import make_dataset
    from core.images import content_hash

    source = face_data / "lfw40"
    people = {p.name for p in source.iterdir() if p.is_dir()}
    n_source = sum(1 for _ in source.rglob("*.jpg"))
    files = make_dataset(tmp_path / "photos", n_source + 30, source)
    assert len(files) == n_source + 30 and all(f.is_file() for f in files)
    assert {f.parent.name for f in files[:len(people)]} == people  # round-robin over people
    copies = files[n_source:]  # second copies of the first photos: same face, new bytes
    assert len({content_hash(f) for f in files[:30] + copies}) == 60


@pytest.mark.slow
def test_bench_scale_runs_at_a_tiny_size(face_data, tmp_path):
    work = tmp_path / "scale"
    done = subprocess.run([sys.executable, "-m", "bench.scale", "--sizes", "40", "60", "--quick",
                           "--workdir", str(work)], cwd=ROOT, env=_env(tmp_path / "cache"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    out = done.stdout
    assert "photos/s" in out and "peak RSS MB" in out and "images/s" in out
    table = out.split("preparation (")[1].split("training,")[0]
    assert [line.split()[0] for line in table.splitlines()[2:] if line.strip()] == ["40", "60"]
    rows = out.split("training,")[1].splitlines()[2:4]
    assert [row.split()[0] for row in rows] == ["1", "2"]
    assert not list(ROOT.glob("facelab-scale-*"))  # nothing written into the repository
