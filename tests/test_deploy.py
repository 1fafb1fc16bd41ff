"""The deploy files (Dockerfile, docker-compose.yml, the README's Deploy commands) checked against
the code they run, without a container engine: every `advisor` command parses as the CLI parses
it, every ADVISOR_* variable is a setting, the targets compose builds exist, the images install
what their processes import, with the torch pins of pyproject.toml."""

import fnmatch
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
import typer.main
import yaml  # type: ignore[import-untyped]
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from sqlalchemy.engine import make_url

import app.cli
from app.settings import Settings, is_loopback

ROOT = Path(__file__).resolve().parent.parent
CLI = typer.main.get_command(app.cli.app)
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash"}
OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}
CPU_INDEX = "download.pytorch.org/whl/cpu"


# --- Dockerfile ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, instruction) with continuations joined; comment lines dropped, also
    inside a continuation, as the Dockerfile parser drops them."""
    start, parts = 0, list[str]()
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        yield start, " ".join(parts)
        parts = []
    assert not parts, f"line {start}: a continuation runs off the end of the file"


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        else:
            assert stages, f"line {number}: {keyword} before any FROM"
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return stages


DOCKERFILE = parse_dockerfile((ROOT / "Dockerfile").read_text())
STAGES = {stage.name: stage for stage in DOCKERFILE}


def chain(target: str) -> list[Stage]:
    """The stages a target is built from, the first one first."""
    stages = [STAGES[target]]
    while stages[0].base in STAGES:
        stages.insert(0, STAGES[stages[0].base])
    return stages


def instructions(target: str, *keywords: str) -> list[Instruction]:
    return [i for stage in chain(target) for i in stage.instructions if i.keyword in keywords]


def env_of(target: str) -> dict[str, str]:
    """The ENV a target's containers start with (later stages override earlier ones)."""
    env: dict[str, str] = {}
    for instruction in instructions(target, "ENV"):
        words = shlex.split(instruction.args)
        if words and "=" not in words[0]:  # the legacy form: ENV NAME value with spaces
            env[words[0]] = " ".join(words[1:])
        else:
            for word in words:
                key, _, value = word.partition("=")
                env[key] = value
    return env


# --- shell commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimpleCommand:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def split_shell(script: str) -> list[SimpleCommand]:
    """The simple commands of a shell script, with their leading NAME=value assignments; the
    script of `sh -c` is split in turn."""
    commands: list[SimpleCommand] = []
    # A line ends a command; quoted text over several lines fails loudly (no closing quotation).
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token not in OPERATORS:
                words.append(token)
                continue
            commands.extend(simple(words))
            words = []
    return commands


def simple(words: Sequence[str]) -> list[SimpleCommand]:
    env = []
    rest = list(words)
    while rest and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", rest[0]):
        name, _, value = rest.pop(0).partition("=")
        env.append((name, value))
    if rest[:1] == ["exec"]:
        rest.pop(0)
    if rest and rest[0] in SHELLS and "-c" in rest:
        return split_shell(rest[rest.index("-c") + 1])
    return [SimpleCommand(tuple(rest), tuple(env))] if rest or env else []


def run_form(args: str) -> list[SimpleCommand]:
    """RUN, CMD and ENTRYPOINT arguments: the exec form (a JSON array) or a shell script."""
    if args.startswith("["):
        argv = json.loads(args)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), args
        return simple(argv)
    return split_shell(args)


def dockerfile_commands(target: str | None = None) -> list[SimpleCommand]:
    """What the Dockerfile runs (RUN, CMD, ENTRYPOINT, HEALTHCHECK), in every stage or a
    target's chain."""
    stages = chain(target) if target else DOCKERFILE
    commands: list[SimpleCommand] = []
    for stage in stages:
        for instruction in stage.instructions:
            args = instruction.args
            if instruction.keyword == "HEALTHCHECK":
                if args.upper() == "NONE":
                    continue
                args = re.sub(r"^(--\S+\s+)*CMD\s+", "", args, flags=re.IGNORECASE)
            elif instruction.keyword not in {"RUN", "CMD", "ENTRYPOINT"}:
                continue
            commands.extend(run_form(args))
    return commands


# --- docker-compose.yml --------------------------------------------------------------------------


COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def interpolate(value: str) -> str:
    """Compose's variable substitution, with every variable unset: defaults apply."""
    value = value.replace("$$", "\0")
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?(?::?\?[^}]*)?\}", r"\1", value)
    value = re.sub(r"\$[A-Za-z_][A-Za-z0-9_]*", "", value)
    return value.replace("\0", "$")


def service_env(name: str) -> dict[str, str]:
    """The environment a service's container starts with: its image's ENV, then compose's."""
    service = SERVICES[name]
    env = env_of(service["build"]["target"]) if "build" in service else {}
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) for item in declared)
    for key, value in declared.items():
        # PyYAML reads on/off/yes/no as booleans: quoted, they mean the same in every parser.
        assert not isinstance(value, bool), f"{name}: quote the value of {key}"
        env[key] = interpolate(str(value)) if value is not None else ""
    return env


def compose_commands(name: str) -> list[SimpleCommand]:
    service = SERVICES[name]
    commands: list[SimpleCommand] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if isinstance(value, str):
            commands.extend(split_shell(interpolate(value)))
        elif value:
            commands.extend(simple([interpolate(v) for v in value]))
    test = service.get("healthcheck", {}).get("test")
    if isinstance(test, str):
        commands.extend(split_shell(test))
    elif test and test[0] == "CMD-SHELL":
        commands.extend(split_shell(test[1]))
    elif test and test[0] == "CMD":
        commands.extend(simple(test[1:]))
    return commands


def image_commands(name: str) -> list[SimpleCommand]:
    """What a service's container runs: compose's command, else its image's CMD."""
    own = [c for c in compose_commands(name) if c.argv[:1] != ("pg_isready",)]
    if own or "build" not in SERVICES[name]:
        return own
    cmds = instructions(SERVICES[name]["build"]["target"], "CMD")
    return run_form(cmds[-1].args) if cmds else []


# --- README --------------------------------------------------------------------------------------


def readme_deploy_commands() -> list[SimpleCommand]:
    """`advisor ...` as the README's Deploy section tells a user to run it, directly or through
    `docker compose exec|run SERVICE`."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Deploy\n(.*?)(?=^## |\Z)", readme, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Deploy' section"
    found: list[SimpleCommand] = []
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", match.group(1), re.DOTALL):
        for command in split_shell(block):
            argv = command.argv
            if argv[:2] == ("docker", "compose") and argv[2:3] in (("exec",), ("run",)):
                services = [i for i, word in enumerate(argv) if word in SERVICES]
                argv = argv[services[0] + 1 :] if services else ()
            if argv[:1] == ("advisor",):
                found.append(SimpleCommand(argv, command.env))
    return found


# --- checks --------------------------------------------------------------------------------------


def cli_params(argv: Sequence[str]) -> dict[str, Any]:
    """The parameters `advisor argv[1:]` parses to (options converted, nothing run); raises
    typer.TyperException (a usage error) where the CLI would refuse the command line."""
    command = CLI
    args, path = list(argv[1:]), ["advisor"]
    while isinstance(command, typer.core.TyperGroup):
        if not args or args[0].startswith("-"):
            raise typer.TyperException(f"'{' '.join(path)}' needs a subcommand")
        name = args.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            raise typer.TyperException(f"'{' '.join(path)}' has no command '{name}'")
        command = sub
        path.append(name)
    return dict(command.make_context(" ".join(path), args).params)


def cli_problem(argv: Sequence[str]) -> str | None:
    try:
        cli_params(argv)
    except typer.TyperException as exc:
        return f"{shlex.join(argv)}: {exc.format_message()}"
    return None


def uvicorn_problem(argv: Sequence[str]) -> str | None:
    """A uvicorn command line must name an application factory that imports (settings come from
    ADVISOR_* in each worker process only when the factory builds them)."""
    targets = [a for a in argv[1:] if re.fullmatch(r"[\w.]+:[\w.]+", a)]
    if len(targets) != 1:
        return f"{shlex.join(argv)}: no single module:attribute"
    if "--factory" not in argv:
        return f"{shlex.join(argv)}: without --factory uvicorn would serve the factory itself"
    module, _, attribute = targets[0].partition(":")
    try:
        target: Any = import_module(module)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        return f"{shlex.join(argv)}: {exc}"
    return None if callable(target) else f"{targets[0]} is not callable"


def pip_requirements(target: str | None = None) -> list[tuple[list[str], SimpleCommand]]:
    """(requirement arguments, the command) of every `pip install`."""
    found = []
    for command in dockerfile_commands(target):
        argv = list(command.argv)
        if argv[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
            argv = argv[2:]
        if argv[:2] not in (["pip", "install"], ["pip3", "install"]):
            continue
        values, skip = [], False
        for word in argv[2:]:
            if skip:
                skip = False
            elif word in {"--index-url", "-i", "--extra-index-url", "-c", "-r", "--constraint"}:
                skip = True
            elif not word.startswith("-"):
                values.append(word)
        found.append((values, command))
    return found


def requirement(word: str) -> Requirement | None:
    try:
        return Requirement(word)
    except InvalidRequirement:
        return None  # a path such as '.'


def names(words: Sequence[str]) -> set[str]:
    """The distributions named by pip install arguments."""
    reqs = (requirement(w) for w in words)
    return {canonicalize_name(r.name) for r in reqs if r is not None}


def installs_package(words: Sequence[str]) -> bool:
    return "." in words


def pyproject_dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = (Requirement(r) for r in project["dependencies"])
    return {canonicalize_name(r.name): r for r in reqs}


def every_command() -> list[tuple[str, SimpleCommand]]:
    where = [("Dockerfile", c) for c in dockerfile_commands()]
    where += [
        (f"docker-compose.yml {name}", c) for name in SERVICES for c in compose_commands(name)
    ]
    where += [("README.md Deploy", c) for c in readme_deploy_commands()]
    return where


# --- tests ---------------------------------------------------------------------------------------


def test_dockerfile_builds_an_api_and_a_worker_target_from_one_slim_base() -> None:
    assert {"api", "worker"} <= STAGES.keys()
    assert DOCKERFILE[-1].name == "api", "the default target (the last stage) is the API"
    for target in ("api", "worker"):
        assert chain(target)[0].base == "python:3.11-slim"
        assert len(chain(target)) >= 2, f"{target} shares a base stage"
        users = instructions(target, "USER")
        assert users, f"{target} runs as root"
        assert users[-1].args.split(":")[0] in {"10001", "advisor"}, f"{target}: {users[-1]}"
        runs = " ".join(i.args for i in instructions(target, "RUN"))
        assert "--uid 10001" in runs
    assert any(i.args == '["/data"]' for i in instructions("api", "VOLUME"))


def test_every_advisor_command_the_files_run_is_the_cli_s() -> None:
    found = [(where, c) for where, c in every_command() if c.argv[:1] == ("advisor",)]
    subcommands = {c.argv[1] for _, c in found if len(c.argv) > 1}
    # The parsers found what the files run: an empty list would pass anything.
    assert {"serve", "worker", "migrate", "project"} <= subcommands, subcommands
    problems = [f"{where}: {p}" for where, c in found if (p := cli_problem(c.argv))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["advisor", "worker", "--gpu", "0"], "No such option"),
        (["advisor", "serve", "--workers", "two"], "Invalid value for '--workers'"),
        (["advisor", "sevre"], "has no command 'sevre'"),
        (["advisor", "project", "create"], "Missing argument"),
        (["advisor", "project"], "needs a subcommand"),
    ],
)
def test_cli_check_refuses_what_the_cli_would_refuse(argv: list[str], why: str) -> None:
    problem = cli_problem(argv)
    assert problem is not None
    assert why in problem


def test_shell_commands_are_split_as_a_shell_runs_them() -> None:
    script = 'sh -c "advisor migrate && ADVISOR_WORKER=off exec advisor serve --workers 2"'
    assert split_shell(script) == [
        SimpleCommand(("advisor", "migrate")),
        SimpleCommand(("advisor", "serve", "--workers", "2"), (("ADVISOR_WORKER", "off"),)),
    ]
    assert simple(["/bin/sh", "-c", "pip install . ; echo done"])[0].argv == ("pip", "install", ".")
    assert [c.argv for c in split_shell("advisor migrate  # once\nadvisor \\\n serve")] == [
        ("advisor", "migrate"),
        ("advisor", "serve"),
    ]


def test_every_advisor_variable_set_is_a_setting() -> None:
    fields = {f"ADVISOR_{name.upper()}" for name in Settings.model_fields}
    declared = {key for target in STAGES for key in env_of(target)}
    declared |= {key for service in SERVICES for key in service_env(service)}
    declared |= {key for _, c in every_command() for key, _ in c.env}
    declared |= {i.args.split("=")[0] for stage in DOCKERFILE for i in stage.instructions
                 if i.keyword == "ARG"}  # fmt: skip
    advisor = {name for name in declared if name.startswith("ADVISOR_")}
    assert {"ADVISOR_DATABASE_URL", "ADVISOR_WORKER"} <= advisor, advisor
    assert advisor <= fields, f"not settings: {sorted(advisor - fields)}"


def advisor_services() -> list[str]:
    return [name for name in SERVICES if "build" in SERVICES[name]]


@pytest.mark.parametrize("name", ["migrate", "api", "worker"])
def test_each_service_s_environment_makes_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer's .env
    for key in [k for k in os.environ if k.startswith("ADVISOR_")]:
        monkeypatch.delenv(key)
    for key, value in service_env(name).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    url = make_url(settings.database_url)
    postgres = SERVICES["postgres"]["environment"]
    assert url.drivername == "postgresql+psycopg"
    assert url.host in SERVICES and SERVICES[url.host]["image"].startswith("postgres:")
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == interpolate(postgres["POSTGRES_PASSWORD"])
    assert url.database == postgres["POSTGRES_DB"]
    if name == "api":
        assert settings.auth_required
        assert not is_loopback(settings.host)
        serve = [c for c in image_commands("api") if c.argv[1:2] == ("serve",)]
        assert len(serve) == 1
        params = cli_params(serve[0].argv)
        if params["workers"] > 1:
            # An embedded worker in each API process would train beside the requests.
            assert settings.worker == "off"
            multiproc = service_env("api")["PROMETHEUS_MULTIPROC_DIR"]
            tmpfs = SERVICES["api"].get("tmpfs", [])
            assert multiproc in ([tmpfs] if isinstance(tmpfs, str) else tmpfs)
        if params["no_migrate"]:
            assert SERVICES["api"]["depends_on"]["migrate"]["condition"] == (
                "service_completed_successfully"
            )


def test_compose_builds_targets_that_exist() -> None:
    images: dict[str, str] = {}
    for name in advisor_services():
        build = SERVICES[name]["build"]
        assert build["context"] == "."
        assert build["target"] in STAGES, f"{name}: no stage {build['target']}"
        # One image name built from two targets would be overwritten by whichever builds last.
        image = SERVICES[name].get("image")
        if image:
            assert images.setdefault(image, build["target"]) == build["target"], image
    assert SERVICES["api"]["build"]["target"] == "api"
    assert SERVICES["worker"]["build"]["target"] == "worker"
    migrations = [
        n for n in advisor_services() for c in image_commands(n) if c.argv[1:2] == ("migrate",)
    ]
    assert migrations, "nothing migrates the database"


def test_services_start_in_order_and_the_worker_gets_a_gpu() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for other, spec in depends.items():
            assert other in SERVICES
            if spec["condition"] == "service_healthy":
                target = SERVICES[other].get("build", {}).get("target")
                assert "healthcheck" in SERVICES[other] or (
                    target and instructions(target, "HEALTHCHECK")
                ), f"{name} waits for {other} to be healthy, which has no health check"
            elif spec["condition"] == "service_completed_successfully":
                assert SERVICES[other].get("restart", "no") == "no", f"{other} is not one-shot"
    assert SERVICES["postgres"]["healthcheck"]["test"][-1].startswith("pg_isready")
    for name in ("api", "worker"):
        assert SERVICES[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    worker = [c for c in image_commands("worker") if c.argv[:2] == ("advisor", "worker")]
    assert len(worker) == 1
    # The GPU image asks for CUDA: on `auto` a container without its GPU would train on the CPU.
    params = cli_params(worker[0].argv)
    assert "cuda" in str(params.get("devices") or params["device"])


def test_the_api_image_is_probed_on_readyz() -> None:
    from app.api.health import router as health_router

    checks = instructions("api", "HEALTHCHECK")
    assert checks and "/readyz" in checks[-1].args
    assert "/readyz" in {getattr(route, "path", None) for route in health_router.routes}
    assert env_of("api")["ADVISOR_HOST"] == "0.0.0.0"


def test_uvicorn_invocations_name_an_importable_factory() -> None:
    found = [c for _, c in every_command() if c.argv[:1] == ("uvicorn",)]
    problems = [p for c in found if (p := uvicorn_problem(c.argv))]
    assert not problems, problems
    assert (
        uvicorn_problem(["uvicorn", "--factory", "app.main:create_app", "--workers", "2"]) is None
    )
    assert uvicorn_problem(["uvicorn", "--factory", "app.main:make_app"]) is not None
    assert uvicorn_problem(["uvicorn", "app.main:create_app"]) is not None


def test_both_targets_install_the_package_after_their_torch() -> None:
    for target in ("api", "worker"):
        installs = pip_requirements(target)
        torch = [i for i, (words, _) in enumerate(installs) if "torch" in names(words)]
        package = [i for i, (words, _) in enumerate(installs) if installs_package(words)]
        assert torch and package, f"{target} installs torch and the package"
        # Installed first, the package would pull PyPI's CUDA build, which then satisfies the pin.
        assert max(torch) < min(package), target
        assert not any("--no-deps" in installs[i][1].argv for i in package)
        copied = " ".join(i.args for i in instructions(target, "COPY"))
        assert "pyproject.toml" in copied and "app" in copied and "migrations" in copied
    worker_index = " ".join(" ".join(c.argv) for _, c in pip_requirements("worker"))
    assert CPU_INDEX not in worker_index, "the GPU worker needs CUDA builds"


def test_the_package_brings_what_verifications_import() -> None:
    deps = pyproject_dependencies()
    assert {"scikit-learn", "numpy", "torch", "torchvision"} <= deps.keys()
    # Nothing the worker imports at runtime may hide in an extra the image does not install.
    words = [w for words, _ in pip_requirements("worker") for w in words]
    assert "." in words and not any(w.startswith(".[") for w in words)


def test_torch_pins_match_pyproject() -> None:
    deps = pyproject_dependencies()
    pinned: dict[str, set[str]] = {}
    for words, command in pip_requirements():
        for word in words:
            req = requirement(word)
            if req is None or canonicalize_name(req.name) not in {"torch", "torchvision"}:
                continue
            name = canonicalize_name(req.name)
            assert str(req.specifier) == str(deps[name].specifier), (
                f"{shlex.join(command.argv)}: {word} against pyproject's {deps[name]}"
            )
            pinned.setdefault(name, set()).add(str(req.specifier))
    assert pinned.keys() == {"torch", "torchvision"}, pinned


def ignored(path: str, patterns: Sequence[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (a pattern matches the path
    or a folder above it; a later '!' pattern lets it back in)."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    out = False
    for line in patterns:
        keep = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        tail = pattern.removeprefix("**/")
        hit = any(
            fnmatch.fnmatchcase(p, pattern)
            or (tail != pattern and fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], tail))
            for p in prefixes
        )
        if hit:
            out = not keep
    return out


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_what_the_dockerfile_copies_reaches_the_build() -> None:
    patterns = dockerignore()
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    copied: set[str] = set()
    for stage in DOCKERFILE:
        for instruction in stage.instructions:
            if instruction.keyword not in {"COPY", "ADD"} or "--from" in instruction.args:
                continue
            sources = [w for w in shlex.split(instruction.args) if not w.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"line {instruction.line}: no {source}"
                assert not ignored(source, patterns), f".dockerignore drops {source}"
                copied.add(source)
    assert readme in copied, "setuptools reads the readme to build the package"
    for private in (".venv", "advisor.db", "advisor.db-wal", ".env", ".git", "app/__pycache__"):
        assert ignored(private, patterns), f"{private} would be sent to the builder"


def test_dockerignore_matching() -> None:
    patterns = ["**/__pycache__", "*.db", "tests", "!tests/keep"]
    assert ignored("app/x/__pycache__", patterns)
    assert ignored("advisor.db", patterns)
    assert ignored("tests/data/a.json", patterns)
    assert not ignored("tests/keep", patterns)
    assert not ignored("app", patterns)
