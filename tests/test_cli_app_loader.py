"""``-A``/``--app`` resolution, the way Celery finds an app, with clear errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac import Celery
from celeriac.app import current as app_current
from celeriac.cli.app_loader import find_app
from celeriac.exceptions import ImproperlyConfigured

Project = Callable[[dict[str, str]], Path]

APP = 'from celeriac import Celery\n{name} = Celery("{main}", broker="memory://loader")\n'


@pytest.fixture(autouse=True)
def _restore_current_app() -> Iterator[None]:
    before = app_current._current_app
    yield
    app_current._current_app = before


def test_module_colon_attribute(project: Project) -> None:
    project({"loader_colon.py": APP.format(name="my_app", main="colon")})
    app = find_app("loader_colon:my_app")
    assert isinstance(app, Celery) and app.main == "colon"


def test_module_dot_attribute(project: Project) -> None:
    project(
        {
            "loader_pkg/__init__.py": APP.format(name="application", main="dotted"),
        }
    )
    assert find_app("loader_pkg.application").main == "dotted"


def test_package_with_an_app_or_celery_attribute(project: Project) -> None:
    project(
        {
            "with_app/__init__.py": APP.format(name="app", main="app-attr"),
            "with_celery/__init__.py": APP.format(name="celery", main="celery-attr"),
        }
    )
    assert find_app("with_app").main == "app-attr"
    assert find_app("with_celery").main == "celery-attr"


def test_app_attribute_wins_over_other_instances(project: Project) -> None:
    project(
        {
            "several.py": """
                from celeriac import Celery
                other = Celery("other", broker="memory://loader")
                app = Celery("chosen", broker="memory://loader")
            """
        }
    )
    assert find_app("several").main == "chosen"


def test_package_with_a_celery_submodule(project: Project) -> None:
    project(
        {
            "proj_sub/__init__.py": "",
            "proj_sub/celery.py": APP.format(name="app", main="from-submodule"),
        }
    )
    assert find_app("proj_sub").main == "from-submodule"
    assert find_app("proj_sub.celery").main == "from-submodule"
    assert find_app("proj_sub.celery:app").main == "from-submodule"


def test_submodule_with_an_instance_under_another_name(project: Project) -> None:
    project(
        {
            "proj_other/__init__.py": "",
            "proj_other/celery.py": APP.format(name="worker_app", main="other-name"),
        }
    )
    assert find_app("proj_other").main == "other-name"


def test_any_instance_in_the_module(project: Project) -> None:
    project({"anyname.py": APP.format(name="whatever_it_is_called", main="any")})
    assert find_app("anyname").main == "any"


def test_factory_function(project: Project) -> None:
    project(
        {
            "factory.py": """
                from celeriac import Celery

                def create_app():
                    return Celery("made", broker="memory://loader")
            """
        }
    )
    assert find_app("factory:create_app").main == "made"


def test_nested_attribute_and_submodule_attribute(project: Project) -> None:
    project(
        {
            "nested/__init__.py": "",
            "nested/apps.py": """
                from celeriac import Celery

                class Holder:
                    app = Celery("nested-holder", broker="memory://loader")
            """,
        }
    )
    assert find_app("nested:apps.Holder.app").main == "nested-holder"
    assert find_app("nested.apps:Holder.app").main == "nested-holder"


def test_missing_module_is_a_clear_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="no_such_project_xyz"):
        find_app("no_such_project_xyz")
    with pytest.raises(ImproperlyConfigured, match="no_such_project_xyz"):
        find_app("no_such_project_xyz.app")


def test_missing_attribute_is_a_clear_error(project: Project) -> None:
    project({"no_attr.py": APP.format(name="app", main="x")})
    with pytest.raises(ImproperlyConfigured, match="'nope'"):
        find_app("no_attr:nope")
    project({"not_app.py": "value = 42\n"})
    with pytest.raises(ImproperlyConfigured, match="not a celeriac app"):
        find_app("not_app:value")


def test_module_without_an_app_is_a_clear_error(project: Project) -> None:
    project({"empty_mod.py": "x = 1\n", "empty_pkg/__init__.py": ""})
    with pytest.raises(ImproperlyConfigured, match="no celeriac app found in module 'empty_mod'"):
        find_app("empty_mod")
    with pytest.raises(ImproperlyConfigured, match="'celery' submodule"):
        find_app("empty_pkg")


def test_import_error_inside_the_app_module_is_reported(project: Project) -> None:
    project(
        {
            "broken_app.py": "import dependency_that_is_missing_xyz\n",
            "broken_pkg_app/__init__.py": "",
            "broken_pkg_app/celery.py": "import dependency_that_is_missing_xyz\n",
        }
    )
    with pytest.raises(ImproperlyConfigured, match="dependency_that_is_missing_xyz"):
        find_app("broken_app")
    with pytest.raises(ModuleNotFoundError, match="dependency_that_is_missing_xyz"):
        find_app("broken_pkg_app")


def test_working_directory_is_importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    (tmp_path / "cwd_app.py").write_text(APP.format(name="app", main="from-cwd"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert find_app("cwd_app").main == "from-cwd"
    finally:
        sys.modules.pop("cwd_app", None)
