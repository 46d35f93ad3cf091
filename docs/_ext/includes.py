"""Bring a Markdown document from elsewhere in the repository into the site.

The flagship's and the benchmarks' documents (``examples/asr_se/*.md``,
``benchmarks/results/*.md``) are written to be read on their own, beside the files they
link to. On the site they live at another path, so their relative links and images are
rewritten here:

- an image that exists is pointed at from the page's folder (Sphinx copies it); one that
  is not in the repository yet becomes a short note saying so, instead of a broken build;
- a link to another included document goes to that document's page;
- a link to any other file or folder of the repository goes to its source on GitHub
  (:data:`REPOSITORY`), or, if it does not exist, becomes its path in code font.

Links with a scheme (``https:``), anchors and anything inside code fences are untouched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

REPOSITORY = "https://github.com/gradsurgery/gradsurgery"

_IMAGE = re.compile(r"!\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
_DEFINITION = re.compile(r"^(?P<lead>\s*\[[^\]]+\]:\s*)(?P<target>\S+)(?P<rest>.*)$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_FENCE = re.compile(r"^\s*(```|~~~)")


def adapt_markdown(source: Path, page_dir: Path, root: Path, pages: dict[Path, str]) -> str:
    """The text of ``source`` with its relative links and images rewritten for the site.

    Args:
        source: the Markdown file.
        page_dir: the folder of the page that shows it.
        root: the repository root.
        pages: other included documents (resolved path) -> their page, relative to
            ``page_dir`` (for example ``"corpus.md"``).
    """
    lines = source.read_text(encoding="utf-8").splitlines()
    base = source.resolve().parent
    out: list[str] = []
    in_fence = False
    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append(line)
            continue
        if in_fence:
            out.append(line)
            continue
        line = _IMAGE.sub(_image_rewriter(base, page_dir, root), line)
        line = _LINK.sub(_link_rewriter(base, root, pages), line)
        definition = _DEFINITION.match(line)
        if definition:
            target = _link_target(definition["target"], base, root, pages)
            if target is not None:
                line = definition["lead"] + target + definition["rest"]
        out.append(line)
    return "\n".join(out) + "\n"


def _split(target: str) -> tuple[str, str]:
    path, _, anchor = target.partition("#")
    return path, ("#" + anchor if anchor else "")


def _local(target: str) -> bool:
    return not (_SCHEME.match(target) or target.startswith(("#", "/")))


def _repo_path(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _image_rewriter(base: Path, page_dir: Path, root: Path) -> Callable[[re.Match[str]], str]:
    def rewrite(match: re.Match[str]) -> str:
        target = match["target"]
        if not _local(target):
            return match[0]
        path = (base / target).resolve()
        shown = _repo_path(path, root) or target
        if not path.is_file():
            return f"*(figure `{shown}` is not in the repository yet)*"
        relative = Path(os.path.relpath(path, page_dir.resolve())).as_posix()
        return f"![{match['text']}]({relative}{match['title'] or ''})"

    return rewrite


def _link_target(target: str, base: Path, root: Path, pages: dict[Path, str]) -> str | None:
    """The rewritten target of a relative link, or ``None`` to leave it as it is."""
    if not _local(target):
        return None
    path_text, anchor = _split(target)
    path = (base / path_text).resolve()
    if path in pages:
        return pages[path] + anchor
    repo_path = _repo_path(path, root)
    if repo_path is None or not path.exists():
        return None
    kind = "tree" if path.is_dir() else "blob"
    return f"{REPOSITORY}/{kind}/main/{repo_path}{anchor}"


def _link_rewriter(
    base: Path, root: Path, pages: dict[Path, str]
) -> Callable[[re.Match[str]], str]:
    def rewrite(match: re.Match[str]) -> str:
        target = match["target"]
        rewritten = _link_target(target, base, root, pages)
        if rewritten is not None:
            return f"[{match['text']}]({rewritten})"
        if _local(target):  # a file that is not there: keep the words, show the path
            path_text, _ = _split(target)
            shown = _repo_path((base / path_text).resolve(), root) or path_text
            return f"{match['text']} (`{shown}`)"
        return match[0]

    return rewrite
