"""Every option the README shows exists: each `python -m MODULE [COMMAND] --flag` it writes (in a code block or
inline) is an option of that command's own `--help`, and each `make TARGET VAR=...` names a target and a
variable of the Makefile. A renamed flag fails here, not in a newcomer's terminal."""
from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex

import pytest

from tests.helpers import REPO

COMMAND = re.compile(r"python -m ([a-z_.]+)((?: [^`\n#|]*)?)")
SUBCOMMANDS = {"demo": ("caption", "explain", "serve"), "train": ("prepare", "features", "fit", "evaluate")}


def readme_commands() -> list[tuple[str, str | None, list[str]]]:
    """(module, subcommand or None, the flags written after it) for each `python -m` the README writes."""
    found = []
    for module, rest in COMMAND.findall((REPO / "README.md").read_text()):
        words = shlex.split(rest.replace("~", "HOME"), comments=True)
        sub = words[0] if words and words[0] in SUBCOMMANDS.get(module, ()) else None
        found.append((module, sub, [w.split("=")[0] for w in words if w.startswith("--")]))
    return found


def help_text(module: str, sub: str | None) -> str:
    """What `python -m MODULE [SUB] --help` prints, from the module's own `main` in this process."""
    imported = importlib.import_module(module)
    main = (imported if hasattr(imported, "main") else importlib.import_module(f"{module}.__main__")).main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        main([*([sub] if sub else []), "--help"])
    assert exited.value.code == 0, f"python -m {module} {sub or ''} --help failed"
    return out.getvalue()


def test_every_readme_flag_is_in_its_commands_help():
    commands = readme_commands()
    assert {module for module, _, _ in commands} >= {"demo", "train", "export", "export.space"}, commands
    helps: dict[tuple[str, str | None], str] = {}
    missing = []
    for module, sub, flags in commands:
        text = helps.setdefault((module, sub), help_text(module, sub))
        missing += [f"python -m {module} {sub or ''} {flag}" for flag in flags
                    if not re.search(rf"(^|[\s,\[]){re.escape(flag)}([\s,=\]]|$)", text, re.M)]
    assert not missing, f"the README writes options these commands do not have: {missing}"


def test_every_readme_make_call_names_a_target_and_variables_of_the_makefile():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    variables = set(re.findall(r"^([A-Z_]+) \?=", makefile, re.M))
    calls = re.findall(r"(?:^|`)make ([a-z-]+)((?: [A-Z_]+=\S+)*)", (REPO / "README.md").read_text(), re.M)
    assert calls, "the README shows make targets"
    for target, assignments in calls:
        assert target in targets, f"make {target}: no such target"
        for name in re.findall(r"([A-Z_]+)=", assignments):
            assert name in variables, f"make {target} {name}=...: the Makefile has no {name} ?= default"
