"""What the package carries: the web client and configs as package data, one version everywhere.

The wheel itself (built, installed into a fresh venv, served and rendered from) is checked by
``scripts/check_wheel.py``; the JS client's types by ``scripts/check_js.sh``.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import aiohttp
import pytest

import avatar
from avatar.cli import main
from avatar.config import load_config
from avatar.resources import config_dir, default_config, installed_version, web_root
from tests.test_server import running_server

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_JSON = json.loads((web_root() / "package.json").read_text())


def package_data() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(pyproject["tool"]["setuptools"]["package-data"]["avatar"])


def test_web_client_and_configs_are_inside_the_package() -> None:
    package = Path(avatar.__file__).parent
    assert web_root() == package / "web" and config_dir() == package / "configs"
    for name in ("index.html", "embed.html", "avatar-client.js", "avatar-client.d.ts", "demo.js"):
        assert (web_root() / name).is_file(), name
    assert default_config().is_file() and (config_dir() / "turn.example.yaml").is_file()
    assert load_config() == load_config(default_config())
    assert load_config(config_dir() / "turn.example.yaml").server.turn_urls


def test_every_file_the_page_and_the_npm_package_need_is_package_data() -> None:
    """The wheel takes avatar/web by pattern: a new file type there must not be left out."""
    patterns = package_data()
    npm_files = set(PACKAGE_JSON["files"])
    served = {p.name for p in web_root().iterdir() if p.is_file()} - {
        "tsconfig.json",  # the type check's, not the page's
        "package-lock.json",  # pins TypeScript for the type check
    }
    assert npm_files <= served
    for name in sorted(served):
        assert any(fnmatch(f"web/{name}", pattern) for pattern in patterns), name


def test_npm_package_points_at_files_that_exist() -> None:
    exports = PACKAGE_JSON["exports"]
    targets = [PACKAGE_JSON["main"], PACKAGE_JSON["types"]]
    targets += [t for entry in exports.values() if isinstance(entry, dict) for t in entry.values()]
    for target in targets:
        assert (web_root() / target).is_file(), target
        assert target.removeprefix("./") in PACKAGE_JSON["files"], target
    assert PACKAGE_JSON["type"] == "module" and exports["."]["types"] == PACKAGE_JSON["types"]


def test_one_version_for_the_python_and_the_npm_package(capsys: pytest.CaptureFixture[str]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "avatar.__version__"}
    assert PACKAGE_JSON["version"] == avatar.__version__
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"avatar {installed_version()}\n"


def test_server_serves_the_page_and_the_client_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may depend on being started in a checkout

    async def fetch_all() -> dict[str, tuple[int, str, str]]:
        got = {}
        async with running_server() as (url, _), aiohttp.ClientSession() as http:
            for path in ("/", "/avatar-client.js", "/embed.html", "/api/avatars", "/nothing.js"):
                async with http.get(url + path) as r:
                    got[path] = (r.status, r.content_type, await r.text())
        return got

    got = asyncio.run(fetch_all())
    assert got["/"][:2] == (200, "text/html") and 'src="demo.js"' in got["/"][2]
    status, kind, text = got["/avatar-client.js"]
    assert status == 200 and kind in ("text/javascript", "application/javascript")
    assert text == (web_root() / "avatar-client.js").read_text()
    assert got["/embed.html"][0] == 200
    assert got["/api/avatars"][0] == 200 and "default" in json.loads(got["/api/avatars"][2])
    assert got["/nothing.js"][0] == 404


def test_the_clients_development_files_are_not_served(tmp_path: Path) -> None:
    """``npm ci`` puts ``node_modules`` inside the web folder of a checkout: never served, nor
    dot files; the page and its scripts are."""
    for name in ("index.html", "client.js", "node_modules/typescript/lib/tsc.js", ".npmrc"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")

    async def statuses() -> list[int]:
        async with running_server(f"server.web_dir={tmp_path}") as (url, _), \
                aiohttp.ClientSession() as http:  # fmt: skip
            paths = ("/", "/client.js", "/node_modules/typescript/lib/tsc.js", "/.npmrc")
            return [(await http.get(url + p)).status for p in paths]

    assert asyncio.run(statuses()) == [200, 200, 404, 404]
