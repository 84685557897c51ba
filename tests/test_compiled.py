"""The engine's core modules are compiled extensions: no silent pure-Python path (style E9)."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

import engine

COMPILED = ("symbols", "patterns", "matching", "metrics", "predict")
ENGINE_DIR = Path(engine.__file__).resolve().parent


@pytest.mark.parametrize("name", COMPILED)
def test_module_is_an_extension(name):
    module = importlib.import_module(f"engine.{name}")
    assert isinstance(module.__spec__.loader, importlib.machinery.ExtensionFileLoader)
    assert module.__file__ is not None
    assert any(module.__file__.endswith(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    assert module.__file__.endswith((".so", ".pyd"))
    assert Path(module.__file__).resolve().parent == ENGINE_DIR


@pytest.mark.parametrize("name", COMPILED)
def test_no_python_module_shadows_the_extension(name):
    for suffix in (".py", ".pyc"):
        assert not (ENGINE_DIR / f"{name}{suffix}").exists(), f"engine/{name}{suffix} would shadow the extension"
    assert not (ENGINE_DIR / name).is_dir(), f"engine/{name}/ would shadow the extension"
    spec = importlib.util.find_spec(f"engine.{name}")
    assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


@pytest.mark.parametrize("name", COMPILED)
def test_extension_has_a_stub(name):
    """Style E7: every compiled module ships a .pyi (tests/test_typing.py checks it with mypy)."""
    assert (ENGINE_DIR / f"{name}.pyi").is_file()


def test_public_api_uses_the_compiled_core():
    from engine.knowledge import KnowledgeBase

    kb = KnowledgeBase("compiled")
    assert type(kb.index).__module__ == "engine.patterns"
    assert type(kb.index.symbols).__module__ == "engine.symbols"
    assert engine.knowledge._predict is importlib.import_module("engine.predict").predict
