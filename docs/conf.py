"""Sphinx configuration of the gradsurgery documentation.

Build: ``make docs`` (HTML in ``docs/_build/html``, warnings are errors). The pages that
follow the code (one per registered resolver, the "which resolver" table, the API
reference, the flagship and benchmark pages, the guides' table of contents) are written
at build time by ``docs/_ext/pages.py``; see that file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

import gradsurgery  # noqa: E402

project = "gradsurgery"
author = "gradsurgery developers"
copyright = "gradsurgery developers"
version = release = gradsurgery.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "pages",
]

# Math: MathJax 3 from the ``sphinx-mathjax-offline`` package (the ``docs`` extra), copied
# into ``_static/mathjax`` so that the site renders its formulas with no network. Without
# that package, Sphinx's default applies: MathJax from its CDN, which needs the network
# when the page is opened.
if importlib.util.find_spec("sphinx-mathjax-offline") is not None:
    extensions.append("sphinx-mathjax-offline")

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# _generated/ holds fragments the pages include; they are not pages themselves.
exclude_patterns = ["_build", "_generated", "_inventories", "figures/*.py", "README.md"]

myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# base.Resolver documents its class attributes under this heading.
napoleon_custom_sections = [("Class attributes", "Attributes")]

# Only the explicit ``testcode``/``doctest`` blocks of the pages run under the doctest
# builder; the library's docstring examples are run by pytest (--doctest-modules).
doctest_test_doctest_blocks = ""
doctest_global_setup = "import torch\ntorch.manual_seed(0)\n"

# Links into the Python documentation resolve against a local copy of its inventory
# (Debian's python3.11-doc package, /usr/share/doc/python3.11-doc/html/objects.inv), so the
# build needs no network. PyTorch and NumPy publish theirs only on their web sites, which
# this build cannot reach: their names are shown but not linked.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3.11", str(DOCS / "_inventories" / "python.inv")),
}

# Every cross-reference must resolve (with -W, an unresolved one fails the build), except
# names of PyTorch and NumPy (no inventory, see above), of the private modules (their
# names are shown, not documented) and the bare names that type hints leave (``Tensor``,
# ``Path``, ``Figure``).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np)(\..*)?"),
    (r"py:.*", r"gradsurgery(\.\w+)*\._\w+(\..*)?"),
    (r"py:class", r"Tensor|Path|Figure"),
]

html_theme = "furo"
html_title = f"gradsurgery {release}"
html_static_path: list[str] = []
html_theme_options = {
    "source_repository": "https://github.com/gradsurgery/gradsurgery",
    "source_branch": "main",
    "source_directory": "docs/",
}
