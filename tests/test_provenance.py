"""Code provenance: the import closure of a script and its content hash."""

import json
from pathlib import Path

import pytest

from conftest import REPO
import wsss_lib.provenance as provenance
from wsss_lib.provenance import code_digest, code_files


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def package(tmp_path):
    """A small wsss_lib: script -> a (top level) -> b (inside a function) -> c (relative import); d unused."""
    lib = tmp_path / "wsss_lib"
    write(lib / "__init__.py", "")
    write(lib / "sub" / "__init__.py", "")
    write(lib / "a.py", "import numpy\nfrom wsss_lib.sub.b import helper\n")
    write(lib / "sub" / "b.py", "def helper():\n    from . import c\n    return c.VALUE\n")
    write(lib / "sub" / "c.py", "VALUE = 1\n")
    write(lib / "d.py", "VALUE = 2\n")
    script = write(tmp_path / "workflow" / "scripts" / "job.py", "import sys\nfrom wsss_lib import a\n")
    return tmp_path, script


def names(files, root):
    return [f.relative_to(root).as_posix() for f in files]


def test_closure_follows_imports_transitively(package):
    root, script = package
    # lazily imported (b imports c inside a function) and relative imports count; parent packages'
    # __init__ run on import, so they count; numpy and the unused d do not
    assert names(code_files(script, root), root) == [
        "workflow/scripts/job.py", "wsss_lib/__init__.py", "wsss_lib/a.py", "wsss_lib/sub/__init__.py",
        "wsss_lib/sub/b.py", "wsss_lib/sub/c.py"]


def test_digest_changes_with_the_code_the_script_reaches_only(package):
    root, script = package
    before = code_digest.__wrapped__(script, root)
    (root / "wsss_lib" / "d.py").write_text("VALUE = 3\n")  # not imported: same digest
    assert code_digest.__wrapped__(script, root) == before
    (root / "wsss_lib" / "sub" / "c.py").write_text("VALUE = 1  # a comment counts too\n")
    assert code_digest.__wrapped__(script, root) != before


def test_digest_is_the_same_in_another_clone(package, tmp_path_factory):
    import shutil

    root, script = package
    clone = tmp_path_factory.mktemp("clone")
    shutil.copytree(root, clone, dirs_exist_ok=True)
    assert code_digest.__wrapped__(clone / "workflow/scripts/job.py", clone) == code_digest.__wrapped__(script, root)


def test_the_real_rules_separate_crf_from_cam_training():
    def reached(script):
        return {f.relative_to(REPO).as_posix() for f in code_files(REPO / "workflow/scripts" / script, REPO)}

    assert "wsss_lib/crf.py" in reached("crf_labels.py") and "wsss_lib/crf.py" in reached("infer_deeplab.py")
    assert "wsss_lib/crf.py" not in reached("train_cam.py") | reached("make_cams.py") | reached("eval_cams.py")
    assert "wsss_lib/training.py" in reached("train_cam.py")


def test_missing_or_broken_script_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.py"):
        code_files(tmp_path / "nothing.py", tmp_path)
    broken = write(tmp_path / "broken.py", "import (\n")
    with pytest.raises(ValueError, match="broken.py"):
        code_files(broken, tmp_path)


def test_the_import_index_spares_the_next_run_parsing_and_follows_edits(package, tmp_path, monkeypatch):
    """A second planner (a fresh process: a fresh index from the same file) parses nothing the first one saw, over
    every script it hashed; an edited module, or an index file that is not an index, is parsed again; the
    closures are the same either way, and the index keeps no replaced version."""
    root, script = package
    other = write(root / "workflow" / "scripts" / "other.py", "import wsss_lib.d\n")
    index_file = tmp_path / "meta" / "imports.json"
    expected = [names(code_files(path, root), root) for path in (script, other)]

    def plan():
        provenance.import_index.cache_clear()
        return [names(code_files(path, root, index_file), root) for path in (script, other)]

    assert plan() == expected and index_file.is_file()
    parsed = []
    real_parse = provenance.parse_imports
    monkeypatch.setattr(provenance, "parse_imports", lambda *args: parsed.append(args[1].name) or real_parse(*args))
    assert plan() == expected and parsed == []

    write(root / "wsss_lib" / "sub" / "c.py", "from wsss_lib import d\n")  # c now reaches d
    assert plan()[0] == [expected[0][0], *sorted([*expected[0][1:], "wsss_lib/d.py"])]
    assert parsed == ["c.py"]  # d.py was known from the other script
    assert len(json.loads(index_file.read_text())) == 8  # 2 scripts + 6 modules: c.py's old version is gone
    parsed.clear()
    assert plan() and parsed == []
    index_file.write_text("[not an index")
    assert "wsss_lib/d.py" in plan()[0] and len(parsed) == 8
