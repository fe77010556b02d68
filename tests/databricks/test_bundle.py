"""The Databricks Asset Bundle (databricks.yml and its resources), checked offline in CI.

Loads the bundle with pyyaml and checks what needs no workspace: the jobs against the
typed job models of the ``databricks-bundles`` package (when installed: unknown or
missing fields fail), that every notebook and file a task names is in the repository,
that every ``${var.x}`` used is declared (and every declared variable used), that every
job parameter is a notebook widget, that no secret is written in the bundle or the
notebooks (credentials only through ``{{secrets/<scope>/<key>}}`` references and
``dbutils.secrets``), and that the notebooks run real ``fedlake`` commands with real
options. What only a workspace can check (``databricks bundle validate``, runtimes and
node types, cluster policies, Unity Catalog permissions, secret scopes, the network) is
listed in docs/databricks.md.
"""

from __future__ import annotations

import ast
import importlib
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "databricks.yml"
JOBS = {"fedlake_server": "server", "fedlake_silo": "client"}  # job -> the fedlake command
NOTEBOOK_HEADER = "# Databricks notebook source\n"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z0-9_.\[\]]+)\}")
SECRET_REF = re.compile(r"\{\{secrets/(\$\{var\.\w+\}|[\w.-]+)/([\w.-]+)\}\}")
SECRET_LIKE = [  # what a leaked credential looks like
    re.compile(r"dapi[0-9a-f]{32}"),  # Databricks personal access token
    re.compile(r"dose[0-9a-f]{32}"),  # Databricks OAuth secret
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b(?:ghp|gho|github_pat)_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    re.compile(r"^[A-Za-z0-9+/=_-]{32,}$"),  # a long opaque token on its own
]
CREDENTIAL_NAME = re.compile(r"(?i)(token|secret|password|passwd|api_key|private_key)$")


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path}: expected a mapping at the top level"
    return doc


def bundle() -> dict[str, Any]:
    return load(BUNDLE)


def resource_files() -> list[Path]:
    files = [p for pattern in bundle()["include"] for p in sorted(ROOT.glob(pattern))]
    assert files, "databricks.yml includes no resource file"
    return files


def jobs() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every job of the bundle: name -> (the file that defines it, its definition)."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in [BUNDLE, *resource_files()]:
        for name, job in load(path).get("resources", {}).get("jobs", {}).items():
            assert name not in found, f"job {name} defined twice"
            found[name] = (path, job)
    return found


def strings(node: Any) -> Iterator[tuple[str, str]]:
    """Every ``(key, string value)`` in a YAML tree (key: the mapping key above it)."""
    stack: list[tuple[str, Any]] = [("", node)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, dict):
            stack += [(str(k), v) for k, v in item.items()]
            yield from (("", str(k)) for k in item)  # keys can carry ${...} too
        elif isinstance(item, list):
            stack += [(key, v) for v in item]
        elif isinstance(item, str):
            yield key, item


def notebooks() -> dict[str, Path]:
    """job -> the notebook its task runs (paths are relative to the defining file)."""
    out = {}
    for name, (path, job) in jobs().items():
        for task in job["tasks"]:
            out[name] = (path.parent / task["notebook_task"]["notebook_path"]).resolve()
    return out


def notebook_strings(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]  # fmt: skip


# -- structure ---------------------------------------------------------------------------


def test_the_bundle_has_the_server_and_silo_jobs_and_a_default_target() -> None:
    doc = bundle()
    assert doc["bundle"]["name"] == "fedlake"
    assert set(jobs()) == set(JOBS)
    assert [t for t, spec in doc["targets"].items() if spec.get("default")] == ["dev"]
    for name, (_, job) in jobs().items():
        assert job.get("max_concurrent_runs") == 1, f"{name}: one server / client at a time"


def test_the_jobs_fit_the_jobs_api_models() -> None:
    models = importlib.import_module("databricks.bundles.jobs")
    for name, (path, job) in jobs().items():
        parsed = models.Job.from_dict(job)  # unknown or missing fields raise
        assert parsed.tasks, f"{name} in {path}: no task"
        clusters = {c["job_cluster_key"] for c in job.get("job_clusters", [])}
        for task in job["tasks"]:
            assert task.get("job_cluster_key") in clusters, f"{name}: task without a cluster"


def test_every_task_runs_a_notebook_of_the_repository() -> None:
    for name, path in notebooks().items():
        assert path.is_file(), f"{name}: {path} does not exist"
        assert ROOT in path.parents, f"{name}: {path} is outside the repository"
        text = path.read_text()
        assert text.startswith(NOTEBOOK_HEADER), f"{path}: not a Databricks .py notebook"
        compile(text, str(path), "exec")  # plain Python (magics are comments)


def test_files_the_jobs_name_are_synced_from_the_repository() -> None:
    defaults = {k: str(v.get("default")) for k, v in bundle()["variables"].items()}
    excluded = bundle().get("sync", {}).get("exclude", [])
    for name, (_, job) in jobs().items():
        for _, value in strings(job):
            if value.startswith("${workspace.file_path}"):
                rel = value.removeprefix("${workspace.file_path}").lstrip("/")
                rel = VARIABLE.sub(lambda m: defaults[m[2]], rel)
                assert (ROOT / rel).exists(), f"{name}: {value} ({rel}) is not in the repository"
    for part in ("pyproject.toml", "README.md", "src"):  # what the notebooks install from
        assert (ROOT / part).exists()
        assert not any(part == p.split("/")[0] for p in excluded), f"{part} is not synced"


def test_every_variable_used_is_declared_and_every_declared_one_used() -> None:
    declared = set(bundle()["variables"])
    used = set()
    for path in [BUNDLE, *resource_files()]:
        for _, value in strings(load(path)):
            for namespace, name in VARIABLE.findall(value):
                assert namespace in ("var", "bundle", "workspace"), f"{path}: ${{{namespace}...}}"
                if namespace == "var":
                    assert name in declared, f"{path}: ${{var.{name}}} is not declared"
                    used.add(name)
    assert used == declared, f"declared but never used: {sorted(declared - used)}"


def test_every_job_parameter_is_a_widget_of_its_notebook() -> None:
    for name, path in notebooks().items():
        widgets = set(re.findall(r'dbutils\.widgets\.(?:text|dropdown)\("(\w+)"', path.read_text()))
        (_, job) = jobs()[name]
        params = set(job["tasks"][0]["notebook_task"]["base_parameters"])
        assert params == widgets, f"{name}: parameters {params ^ widgets} on one side only"


# -- secrets -----------------------------------------------------------------------------


def leaks(value: str) -> bool:
    return any(p.search(value) for p in SECRET_LIKE)


def test_the_leak_detector_catches_planted_secrets() -> None:
    planted = ["dapi" + "0123456789abcdef" * 2, "-----BEGIN " + "PRIVATE KEY-----",
               "AKIA" + "ABCDEFGHIJKLMNOP", "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA=="]  # fmt: skip
    assert all(leaks(s) for s in planted)
    assert not any(leaks(s) for s in ["{{secrets/${var.secret_scope}/operator-token}}",
                                      "16.4.x-cpu-ml-scala2.12", "client-credential"])  # fmt: skip


def test_no_secret_is_written_in_the_bundle() -> None:
    for path in [BUNDLE, *resource_files()]:
        for key, value in strings(load(path)):
            assert not leaks(value), f"{path}: {key} looks like a secret"
            refs = SECRET_REF.findall(value)
            assert value.count("{{secrets/") == len(refs), f"{path}: malformed {value!r}"
            for scope, _ in refs:
                assert scope == "${var.secret_scope}", f"{path}: {value}: use the variable"
            if CREDENTIAL_NAME.search(key) and value:
                assert SECRET_REF.fullmatch(value), f"{path}: {key} must be a secret reference"


def test_the_server_job_takes_its_operator_token_from_the_secret_scope() -> None:
    (_, job) = jobs()["fedlake_server"]
    env = job["job_clusters"][0]["new_cluster"]["spark_env_vars"]
    assert env == {"FEDLAKE_OPERATOR_TOKEN": "{{secrets/${var.secret_scope}/operator-token}}"}


def test_notebooks_hold_no_secret_and_read_them_only_from_the_scope() -> None:
    for path in notebooks().values():
        text = path.read_text()
        assert not [s for s in notebook_strings(path) if leaks(s)], path
        reads = re.findall(r"dbutils\.secrets\.\w+\([^)]*\)", text)
        assert reads and all(r.startswith("dbutils.secrets.get(scope=scope, key=") for r in reads)
        for line in text.splitlines():  # a secret is never printed
            if "print(" in line:
                assert not re.search(r"secrets|token|credential\b", line), f"{path}: {line}"
        assert "shutil.rmtree(private" in text, f"{path}: the private folder is not removed"


# -- the fedlake commands ------------------------------------------------------------------


def notebook_argv(path: Path) -> list[str]:
    """The string constants of the notebook's ``argv = [...]`` and what it adds to it."""

    def is_argv(node: ast.expr) -> bool:
        return isinstance(node, ast.Name) and node.id == "argv"

    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        items: list[ast.expr] = []
        if isinstance(node, ast.Assign | ast.AugAssign) and isinstance(node.value, ast.List):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            items = node.value.elts if is_argv(target) else []
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            items = node.args if node.func.attr == "append" and is_argv(node.func.value) else []
        found += [
            e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)
        ]
    return found


def test_the_notebooks_run_real_fedlake_commands_with_real_options() -> None:
    typer = importlib.import_module("typer")
    from fedlake.cli.main import app

    cli = typer.main.get_command(app)
    for job, path in notebooks().items():
        text = path.read_text()
        assert '[sys.executable, "-m", "fedlake.cli.main", *argv]' in text
        argv = notebook_argv(path)
        assert argv and argv[0] == JOBS[job], f"{path}: runs {argv[:1]}, not {JOBS[job]}"
        command = cli.commands[argv[0]]
        options = {o for p in command.params for o in [*p.opts, *p.secondary_opts]}
        given = {a for a in argv if a.startswith("--")}
        assert given <= options, f"{path}: not options of fedlake {argv[0]}: {given - options}"
        required = {p.opts[0] for p in command.params if p.required}
        assert required <= given, f"{path}: fedlake {argv[0]} needs {required - given}"


def test_the_notebooks_install_extras_that_exist() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                 ["optional-dependencies"])  # fmt: skip
    for path in notebooks().values():
        match = re.search(r'^EXTRAS = "([a-z,]+)"$', path.read_text(), re.MULTILINE)
        assert match, f"{path}: no EXTRAS line"
        assert set(match[1].split(",")) <= extras, f"{path}: unknown extras"


def test_the_server_notebooks_config_is_a_valid_served_config_on_unity_catalog() -> None:
    from fedlake.config import parse_config, read_raw

    variables = {k: v["default"] for k, v in bundle()["variables"].items()}
    raw = read_raw(ROOT / variables["server_config"])
    tree = ast.parse(notebooks()["fedlake_server"].read_text())
    lakehouse = next(
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        and isinstance(n.targets[0], ast.Subscript)
        and getattr(n.targets[0].slice, "value", None) == "lakehouse"
    )
    widgets = {"model_name": variables["model_name"], "alias": variables["model_alias"],
               "experiment": variables["experiment"]}  # fmt: skip
    names = {"raw": raw, "catalog": "fl", "schema": "fed", "lake_root": "/local_disk0/lake",
             "arg": widgets.__getitem__, "str": str}  # fmt: skip
    raw["lakehouse"] = eval(compile(ast.Expression(lakehouse), "notebook", "eval"), names)
    cfg = parse_config(raw)
    assert cfg.data.scenario == "remote"  # a served federation: the silos bring the data
    lake = cfg.lakehouse
    assert (lake.catalog, lake.schema_, lake.root) == ("fl", "fed", "/local_disk0/lake")
    assert (lake.tracking_uri, lake.registry_uri) == ("databricks", "databricks-uc")
    assert lake.model_name == "fl.fed.fedlake_model" and lake.alias == "champion"
    assert lake.experiment.startswith("/")  # an absolute workspace path
