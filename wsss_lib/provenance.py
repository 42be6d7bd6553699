"""Code provenance: a content hash of the library code a workflow script runs.

Snakemake reruns a job when its script file changes, but not when a module that the script imports
changes (wsss_lib.crf, say), so results on disk could silently keep the old code's output. Each rule
therefore carries, as a param, the hash of its script and of every ``wsss_lib`` module the script
reaches through imports, transitively; Snakemake's ``params`` rerun trigger then reruns the rule, and
what depends on it, after any edit of that code (a comment-only edit counts too: bytes are hashed).

The import graph is read with :mod:`ast` (nothing is imported, so planning the DAG needs no torch).
Every ``import`` statement counts, including those inside functions: a lazily imported module is
still code the rule may run. Modules outside the package (torch, numpy) are pinned by the
environment, not hashed here.

What each module version imports can be kept between runs in a small JSON index (``index_file``),
keyed by the module's name and a hash of its bytes: parsing the ~60 modules was a tenth of a no-op
``snakemake -n``, and every job on a cluster parses the Snakefile again.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

PACKAGE = "wsss_lib"


@lru_cache(maxsize=None)  # a planner asks for the same few dozen modules ~1,300 times
def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of module ``dotted`` under ``root`` (a package's ``__init__.py``), or None."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


class ImportIndex:
    """The package modules each module version imports, by name and content hash, optionally kept in a JSON file.

    A cache only: a file that is missing, unreadable or not of this shape is rebuilt, and a failed save is
    ignored. Writes go to a temporary file renamed into place, so concurrent planners (cluster jobs) each
    leave a whole index behind, and every entry is valid whichever wins. A save keeps the entries this process
    used, so the versions an edit replaced do not pile up.
    """

    def __init__(self, index_file: Path | None = None):
        self.index_file = index_file
        self.entries: dict[str, list[str]] = {}
        self._read: dict[tuple, frozenset[str]] = {}
        self._used: set[str] = set()
        if index_file is not None:
            try:
                loaded = json.loads(index_file.read_text())
            except (OSError, ValueError):
                loaded = None
            if isinstance(loaded, dict) and all(isinstance(v, list) for v in loaded.values()):
                self.entries = loaded
        self._on_disk = set(self.entries)

    def imports(self, path: Path, module: str | None) -> frozenset[str]:
        """Dotted names of the package modules that ``path`` imports (``module`` is its own dotted name)."""
        stat = path.stat()
        version = (path, module, stat.st_mtime_ns, stat.st_size)  # read each file once per process
        if version not in self._read:
            source = path.read_bytes()
            key = f"{module}:{path.name}:{hashlib.sha256(source).hexdigest()[:20]}"
            if key not in self.entries:
                self.entries[key] = sorted(parse_imports(source, path, module))
            self._used.add(key)
            self._read[version] = frozenset(self.entries[key])
        return self._read[version]

    def save(self) -> None:
        if self.index_file is None or self._used <= self._on_disk:
            return
        try:
            self.index_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.index_file.parent, prefix=f".{self.index_file.name}.")
        except OSError:
            return
        try:
            with os.fdopen(fd, "w") as out:
                json.dump({key: self.entries[key] for key in self._used}, out, sort_keys=True)
            os.replace(tmp, self.index_file)
            self._on_disk = set(self._used)
        except OSError:
            Path(tmp).unlink(missing_ok=True)


@lru_cache(maxsize=None)
def import_index(index_file: Path | None) -> ImportIndex:
    """One index per file and process (None: in memory only)."""
    return ImportIndex(index_file)


def parse_imports(source: bytes, path: Path, module: str | None) -> frozenset[str]:
    """The package modules that ``source`` (the bytes of ``path``, module ``module``) imports, read with ast."""
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as error:
        raise ValueError(f"cannot hash the code of {path}: {error}") from error
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the importing module's package
                if module is None:
                    continue
                is_package = path.name == "__init__.py"
                parts = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != PACKAGE:
            continue
        # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(found)


def code_files(script: str | Path, root: str | Path, index_file: Path | None = None) -> list[Path]:
    """``script`` and every package module it reaches through imports, transitively, sorted.

    ``root`` is the folder that holds the ``wsss_lib`` package (the repository root); ``index_file`` keeps what
    each module imports between runs (:class:`ImportIndex`).
    """
    root, script = Path(root).resolve(), Path(script).resolve()
    if not script.is_file():
        raise FileNotFoundError(f"cannot hash the code of {script}: no such file")
    index = import_index(index_file)
    seen: dict[str, Path] = {}
    pending = sorted(index.imports(script, None))
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = _module_file(root, name)
        if path is None:  # an attribute imported by name (`from wsss_lib.x import function`)
            continue
        seen[name] = path
        pending.extend(sorted(index.imports(path, name) - seen.keys()))
    index.save()
    return [script, *sorted(seen.values())]


@lru_cache(maxsize=None)
def code_digest(script: str | Path, root: str | Path, index_file: Path | None = None) -> str:
    """A short SHA-256 over the relative paths and bytes of :func:`code_files` (stable across clones)."""
    root = Path(root).resolve()
    digest = hashlib.sha256()
    for path in code_files(script, root, index_file):
        try:
            name = path.relative_to(root).as_posix()
        except ValueError:  # a script outside the repository: its name alone
            name = path.name
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
