"""deploy/Dockerfile read with BuildKit's own parser (the `dockerfile` package wraps it), so the
tests see the stages, arguments and instructions exactly as `docker build` would."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"


@dataclass
class Stage:
    name: str | None
    base: str
    args: dict = field(default_factory=dict)  # ARG NAME -> default (None when it has none)
    commands: list = field(default_factory=list)


def _arg(value: str) -> tuple[str, str | None]:
    name, _, default = value.partition("=")
    return name, (default if "=" in value else None)


def parse(path: Path = DOCKERFILE) -> tuple[dict, list[Stage]]:
    """The global ARG defaults, and every stage in order."""
    global_args: dict = {}
    stages: list[Stage] = []
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "FROM":
            value = list(command.value)
            name = value[2] if len(value) == 3 and value[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=value[0]))
        elif command.cmd == "ARG" and not stages:
            for v in command.value:
                k, d = _arg(v)
                global_args[k] = d
        elif stages:
            if command.cmd == "ARG":
                for v in command.value:
                    k, d = _arg(v)
                    # A stage's bare ARG takes the global default.
                    stages[-1].args[k] = d if d is not None else global_args.get(k)
            stages[-1].commands.append(command)
    return global_args, stages


def stage(name: str | None) -> Stage:
    """A stage by name; None is the final (unnamed) one."""
    _, stages = parse()
    if name is None:
        return stages[-1]
    return next(s for s in stages if s.name == name)


def substitute(text: str, args: dict) -> str:
    """${NAME} and $NAME from the stage's arguments (only those: the rest is left to the shell)."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return args[name] if args.get(name) is not None else match.group(0)

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", value, text)


def chain(name: str | None = None) -> list[Stage]:
    """A stage and the stages it is built FROM, base first (`FROM runtime` inherits runtime's
    ENV, USER and ENTRYPOINT)."""
    _, stages = parse()
    by_name = {s.name: s for s in stages if s.name}
    current = stages[-1] if name is None else by_name[name]
    out = [current]
    while current.base in by_name:
        current = by_name[current.base]
        out.insert(0, current)
    return out


def final_env(name: str | None = None) -> dict:
    """The ENV of an image (the final one by default), its ${ARG}s substituted."""
    env = {}
    for s in chain(name):
        for command in s.commands:
            if command.cmd == "ENV":
                values = list(command.value)
                for k, v in zip(values[::2], values[1::2]):
                    env[k] = substitute(v, s.args)
    return env


def final_instruction(instruction: str, name: str | None = None) -> list:
    """The values of an image's last `instruction` (USER, ENTRYPOINT, WORKDIR…), inherited ones
    included."""
    found = [c for s in chain(name) for c in s.commands if c.cmd == instruction]
    assert found, f"the image has no {instruction}"
    return list(found[-1].value)
