"""Library conventions: a logger and no prints, PEP 561 markers that ship, an annotated public API."""

import ast
import importlib
import inspect
import logging
from pathlib import Path

import tomllib

import engine

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["engine", "kernels", "dali_plugin", "ray_plugin", "torch_plugin"]
PUBLIC = ["engine", "dali_plugin", "ray_plugin", "torch_plugin"]
#: public names whose module is annotated separately (remove a name once its signatures are annotated)
NOT_YET_ANNOTATED: set = set()
DUNDERS = {"__init__", "__call__", "__iter__", "__next__", "__len__", "__enter__", "__exit__", "__getitem__"}


def _sources():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def test_library_code_prints_nothing():
    calls = [f"{p.relative_to(ROOT)}:{n.lineno}" for p in _sources() for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert not calls, f"use logging.getLogger('uih.<package>.<module>') instead of print: {calls}"


def test_the_package_logger_has_a_null_handler_and_children_under_it():
    root = logging.getLogger("uih")
    assert any(isinstance(h, logging.NullHandler) for h in root.handlers)
    from engine.serving import _publish, _store
    assert _store.logger.name.startswith("uih.engine.") and _publish.logger.name.startswith("uih.engine.")


def test_a_seal_is_logged(tmp_path, caplog):
    store = engine.UIHStore.create(tmp_path / "s", {"item_id": "int64", "action": "int32"})
    store.append({"user_id": [1, 1], "ts": [1, 2], "item_id": [5, 6], "action": [0, 0]})
    with caplog.at_level(logging.INFO, logger="uih"):
        store.seal(10)
    store.close()
    assert [r.name for r in caplog.records] == ["uih.engine.store"]
    assert "sealed 2 events" in caplog.records[0].getMessage()


def test_every_package_ships_a_py_typed_marker():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data.get("*", [])
    assert [p for p in PACKAGES if not (ROOT / p / "py.typed").is_file()] == []


def _functions(obj):
    if inspect.isfunction(obj):
        yield obj.__qualname__, obj
        return
    for name, m in vars(obj).items():
        if name.startswith("_") and name not in DUNDERS:
            continue
        m = m.__func__ if isinstance(m, (staticmethod, classmethod)) else m
        m = m.fget if isinstance(m, property) else m
        if inspect.isfunction(m):
            yield f"{obj.__qualname__}.{name}", m


def test_the_public_api_is_annotated():
    missing = []
    for pkg in PUBLIC:
        mod = importlib.import_module(pkg)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if name in NOT_YET_ANNOTATED or (inspect.isclass(obj) and issubclass(obj, BaseException)):
                continue
            for qual, f in _functions(obj):
                sig = inspect.signature(f)
                params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
                if any(p.annotation is p.empty for p in params) or sig.return_annotation is sig.empty:
                    missing.append(f"{pkg}.{qual}")
    assert not missing, f"annotate every parameter and the return of: {missing}"
