"""The import direction of the server's parts, read from the source (every import, those inside
functions and under TYPE_CHECKING too): a request walks one way, api -> services ->
advisor/builder -> models, and the worker sits beside the API, never under it."""

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"

# The parts of ``app`` (a package or a top-level module) each part may import besides itself.
MAY_IMPORT: dict[str, set[str]] = {
    # Pure decision logic and plain data, at the bottom.
    "advisor": set(),
    "settings": set(),
    "models": set(),
    "epochs_cache": set(),
    "db": {"epochs_cache"},
    "migrate": set(),
    # Recipes, dataset specs and remedies as data (the torch parts load on first use).
    "builder": {"advisor"},
    "training": {"advisor", "builder"},
    "schemas": {"advisor", "builder", "models", "settings"},
    "wakeup": {"db"},
    "services": {
        "advisor",
        "builder",
        "db",
        "epochs_cache",
        "models",
        "schemas",
        "settings",
        "wakeup",
    },
    "api": {"advisor", "db", "migrate", "models", "schemas", "services", "settings"},
    "web": {"advisor", "api", "builder", "models", "schemas", "services", "settings"},
    "worker": {"advisor", "builder", "db", "models", "schemas", "services", "training", "wakeup"},
}
# The entry points put the parts together: they may import any.
ENTRY_POINTS = {"main", "cli"}


def module_of(path: Path) -> str:
    """``app/services/runs.py`` -> ``app.services.runs``; ``app/builder/__init__.py`` ->
    ``app.builder``."""
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """``app.services.runs`` -> ``services``; ``app`` itself -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def imported_parts(path: Path) -> set[str]:
    """The parts of ``app`` that the module at ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # A relative import would pass unseen: the app imports absolutely.
            assert node.level == 0, f"{path}:{node.lineno}: a relative import"
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {part_of(name) for name in names if name.split(".")[0] == "app"}
    return found


def test_every_part_imports_only_the_parts_below_it() -> None:
    wrong = []
    for path in sorted(APP.rglob("*.py")):
        part = part_of(module_of(path))
        # app/__init__.py is the package's docstring; the entry points may import any part.
        if part == "" or part in ENTRY_POINTS:
            continue
        assert part in MAY_IMPORT, f"{path}: a new part of app; give it its place in MAY_IMPORT"
        for other in sorted(imported_parts(path) - {part} - MAY_IMPORT[part]):
            wrong.append(f"{path.relative_to(APP.parent)} imports app.{other}")
    assert wrong == []


def test_the_rules_are_a_direction_without_cycles() -> None:
    """Were two parts allowed to import each other, a request could climb back up again."""
    seen: set[str] = set()
    while len(seen) < len(MAY_IMPORT):
        ready = {p for p, below in MAY_IMPORT.items() if p not in seen and below <= seen}
        assert ready, f"a cycle among {sorted(set(MAY_IMPORT) - seen)}"
        seen |= ready


def test_the_request_path_reads_recipes_and_dataset_specs_without_torch() -> None:
    modules = "app.services.runs, app.services.verifications, app.builder.datasets, app.api.runs"
    heavy = "('torch', 'torchvision', 'app.training', 'app.worker')"
    code = f"import sys, {modules}; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
