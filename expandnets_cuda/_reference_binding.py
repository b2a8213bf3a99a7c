"""Makes ``expandnets_cuda.reference`` the one name the package imports its reference by.

The reference's source folder is ``python_ref/``, beside this package. An installed wheel ships
it as the subpackage ``expandnets_cuda.reference`` (setup.py's package_dir), so site-packages
gets no generic top-level ``python_ref``. In a source checkout the folder is also importable as
``python_ref`` (the tests and the reference's own docs use that name); there both names must be
the *same* module objects, or every class of the reference would exist twice and ``isinstance``
and state-dict checks between the two would fail.
"""
from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys

PACKAGE = __name__.rpartition(".")[0]
NAME = PACKAGE + ".reference"
CHECKOUT_NAME = "python_ref"


def _checkout_reference() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent.parent / CHECKOUT_NAME / "__init__.py"


def _importable_from_checkout() -> bool:
    """Is ``import python_ref`` the ``python_ref/`` beside this package (not some other one)?"""
    init = _checkout_reference()
    if not init.is_file():
        return False
    spec = importlib.util.find_spec(CHECKOUT_NAME)
    return spec is not None and spec.origin is not None and pathlib.Path(spec.origin).resolve() == init


def bind() -> None:
    if NAME in sys.modules:
        return
    if _importable_from_checkout():
        reference = importlib.import_module(CHECKOUT_NAME)
        # python_ref/__init__ imports each of its modules, so this covers them all
        # (tests/test_packaging.py checks that every file of python_ref/ is bound).
        for name, module in list(sys.modules.items()):
            if name == CHECKOUT_NAME or name.startswith(CHECKOUT_NAME + "."):
                sys.modules[NAME + name[len(CHECKOUT_NAME):]] = module
        setattr(sys.modules[PACKAGE], "reference", reference)
    else:  # an installed wheel (or an editable install whose finder maps the folder)
        importlib.import_module(NAME)
