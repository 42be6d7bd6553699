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
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "wsss_lib"


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of module ``dotted`` under ``root`` (a package's ``__init__.py``), or None."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str | None) -> frozenset[str]:
    """Dotted names of the package modules that ``path`` imports (``module`` is its own dotted name).

    Parsed once per file version: planning hashes ~20 scripts that share most of their modules, and
    parsing each module again for each script took most of a no-op ``snakemake -n``."""
    stat = path.stat()
    return _parsed_imports(path, module, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=None)
def _parsed_imports(path: Path, module: str | None, mtime_ns: int, size: int) -> frozenset[str]:
    """:func:`_imported_modules` of one version of ``path`` (its mtime and size are the cache key)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
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


def code_files(script: str | Path, root: str | Path) -> list[Path]:
    """``script`` and every package module it reaches through imports, transitively, sorted.

    ``root`` is the folder that holds the ``wsss_lib`` package (the repository root).
    """
    root, script = Path(root).resolve(), Path(script).resolve()
    if not script.is_file():
        raise FileNotFoundError(f"cannot hash the code of {script}: no such file")
    seen: dict[str, Path] = {}
    pending = sorted(_imported_modules(script, None))
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = _module_file(root, name)
        if path is None:  # an attribute imported by name (`from wsss_lib.x import function`)
            continue
        seen[name] = path
        pending.extend(sorted(_imported_modules(path, name) - seen.keys()))
    return [script, *sorted(seen.values())]


@lru_cache(maxsize=None)
def code_digest(script: str | Path, root: str | Path) -> str:
    """A short SHA-256 over the relative paths and bytes of :func:`code_files` (stable across clones)."""
    root = Path(root).resolve()
    digest = hashlib.sha256()
    for path in code_files(script, root):
        try:
            name = path.relative_to(root).as_posix()
        except ValueError:  # a script outside the repository: its name alone
            name = path.name
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
