"""Sphinx configuration of riemsvd's documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` from the repository root.
"""

import os
import sys

# import riemsvd from the checkout even when it is not installed
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import riemsvd  # noqa: E402

project = "riemsvd"
author = "riemsvd contributors"
copyright = "riemsvd contributors"
release = version = riemsvd.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "*.csv", "*.json", "Thumbs.db", ".DS_Store"]

# numpy-style docstrings
napoleon_numpy_docstring = True
napoleon_google_docstring = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

# links such as algorithm.md#the-dense-path
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "riemsvd"
