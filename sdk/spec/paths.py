"""Paths a recipe names, confined to the recipe's folder (or to the roots its domain allows), regular files only,
with bounded globs. Every kind that reads files checks and lists them through here, so the rule is one rule."""

from __future__ import annotations

import glob as _glob
import stat
from pathlib import Path
from typing import Any, Optional

from sdk.spec.values import FileRef

GLOB_LIMIT = 100_000  # entries a glob may walk before it stops with an error
FILE_REF_ATTRS = ("prompt", "answer_prompt", "chat_template", "rubric")


def shown_path(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` where it lies inside, else as it is: how files are named in messages and pages."""
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def allowed_roots(spec: Any) -> list[Path]:
    base = spec.base_dir.resolve()
    return [base] + [(base / r).resolve() for r in (getattr(spec, "roots", None) or [])]


def within_roots(path: Path, roots: list[Path]) -> bool:
    """Whether a resolved ``path`` is one of ``roots`` or lies under one (the corpus reader asks it of each file
    it opens, symlinks followed, as :func:`confine` asks it of each path a recipe names)."""
    return any(path == r or path.is_relative_to(r) for r in roots)


def _where(spec: Any) -> str:
    roots = getattr(spec, "roots", None) or []
    extra = f" or the domain's roots ({', '.join(roots)})" if roots else ""
    return f"the recipe's folder ({spec.base_dir}){extra}"


def unusable(rel: str) -> Optional[str]:
    """Why ``rel`` can name no file on any system (a NUL character, a name over the OS limits), or None."""
    if "\x00" in rel:
        return f"{rel!r} holds a NUL character, which no file name can"
    if len(rel) > 4096 or any(len(part) > 255 for part in Path(rel).parts):
        return f"{rel[:60]!r}... is longer than a file name or path can be"
    return None


def confine(spec: Any, rel: str) -> tuple[Optional[Path], Optional[str]]:
    """The resolved path (symlinks followed) of ``rel``, or a problem when it lies outside the allowed roots."""
    if why := unusable(rel):
        return None, why
    target = (spec.base_dir / rel).resolve()
    if not within_roots(target, allowed_roots(spec)):
        return None, (f"{rel!r} is outside {_where(spec)}; add its folder to roots = [...] in the domain "
                      "to allow it")
    return target, None


def regular_file_problem(path: Path, shown: str, max_bytes: Optional[int] = None) -> Optional[str]:
    try:
        st = path.stat()
    except OSError:
        return f"{shown!r} does not exist (paths are relative to the recipe's folder)"
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
        return f"{shown!r} is {what}; only regular files are read"
    if max_bytes is not None and st.st_size > max_bytes:
        return (f"{shown!r} is {st.st_size / 2**20:.1f} MiB, over the limit of {max_bytes / 2**20:.0f} MiB "
                "(raise max_file_mb in the domain)")
    return None


def max_bytes(spec: Any) -> int:
    return int((getattr(spec, "max_file_mb", None) or 4096) * 2**20)


def expand(spec: Any, pattern: str) -> tuple[list[Path], Optional[str]]:
    """The regular files a glob matches inside the allowed roots, sorted; or a problem. Stops after GLOB_LIMIT
    entries instead of walking a whole disk."""
    if why := unusable(pattern):
        return [], why
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        prefix = []
        for part in Path(pattern).parts:
            if _glob.has_magic(part):
                break
            prefix.append(part)
        fixed = Path(*prefix) if prefix else Path(".")
        _, problem = confine(spec, str(fixed))
        if problem:
            return [], f"glob {pattern!r} reaches outside {_where(spec)}; add its folder to roots = [...] in the domain"
    roots = allowed_roots(spec)
    files: list[Path] = []
    for n, match in enumerate(_glob.iglob(str(spec.base_dir / pattern), recursive=True)):
        if n >= GLOB_LIMIT:
            return [], f"glob {pattern!r} walks more than {GLOB_LIMIT} entries; narrow it"
        p = Path(match)
        try:
            st = p.lstat() if not p.is_symlink() else p.stat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if not within_roots(p.resolve(), roots):  # a symlink inside the folder pointing out of it
            return [], f"{shown_path(p, spec.base_dir)} (from glob " \
                       f"{pattern!r}) leads outside {_where(spec)}"
        files.append(p)
    return sorted(dict.fromkeys(files)), None


def path_problem(spec: Any, rel: str, *, glob: bool = False, must_be_dir: bool = False,
                 confined: bool = True) -> Optional[str]:
    """What is wrong with a path the recipe names, or None. Data paths are confined; a model folder
    (``confined=False``) may live anywhere, like a hub id names a model anywhere."""
    if why := unusable(rel):
        return why
    if glob:
        files, problem = expand(spec, rel)
        if problem:
            return problem
        if not files:
            return f"glob {rel!r} matches no file (paths are relative to the recipe's folder)"
        limit = max_bytes(spec)
        for f in files:
            p = regular_file_problem(f, str(f), limit)
            if p:
                return p
        return None
    target, problem = confine(spec, rel) if confined else ((spec.base_dir / rel).resolve(), None)
    if problem:
        return problem
    assert target is not None
    if _glob.has_magic(rel) and not target.exists():  # `path = "data/*.jsonl"`: one file is read here
        return f"{rel!r} is a glob, and this attribute names one file (only corpus paths take globs)"
    if must_be_dir:
        if not target.exists():
            return f"{rel!r} does not exist (paths are relative to the recipe's folder)"
        return None if target.is_dir() else f"{rel!r} is not a folder"
    return regular_file_problem(target, rel, max_bytes(spec))


def file_ref_problems(spec: Any, kind: str, label: str, block: Any, check_files: bool) -> list[tuple[tuple, str]]:
    out = []
    for attr in FILE_REF_ATTRS:
        value = getattr(block, attr, None)
        if not isinstance(value, FileRef):
            continue
        if why := unusable(value.path):
            out.append(((kind, label, attr), f"file(): {why}"))
            continue
        target = (spec.base_dir / value.path).resolve()
        if Path(value.path).is_absolute() or not target.is_relative_to(spec.base_dir.resolve()):
            out.append(((kind, label, attr), f"file({value.path!r}) escapes the recipe's folder"))
        elif check_files:
            problem = path_problem(spec, value.path)
            if problem:
                out.append(((kind, label, attr), problem))
    return out


def named_files(spec: Any, block: Any, attrs: tuple[str, ...] = ()) -> list[Path]:
    """Files a block names (``attrs`` holding paths, plus file() values): their hashes enter the fingerprint."""
    base = spec.base_dir
    paths = [base / getattr(block, a) for a in attrs if isinstance(getattr(block, a, None), str)]
    paths += [base / v.path for a in FILE_REF_ATTRS if isinstance(v := getattr(block, a, None), FileRef)]
    paths += [base / v.path for v in _nested_file_refs(block)]  # a sub-block's file() (synth filters { rubric })
    return paths


def _nested_file_refs(block: Any, depth: int = 0) -> list[FileRef]:
    """The file() values held inside a block's sub-blocks (its own top-level ones are FILE_REF_ATTRS')."""
    out: list[FileRef] = []
    for name in getattr(type(block), "model_fields", {}) if depth < 3 else ():
        value = getattr(block, name, None)
        if depth and isinstance(value, FileRef):
            out.append(value)
        elif hasattr(type(value), "model_fields"):
            out += _nested_file_refs(value, depth + 1)
    return out
