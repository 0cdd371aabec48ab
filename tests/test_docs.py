"""The documentation stays true: every `edgekd ...` command shown in README.md and docs/*.md
names a real subcommand and only options it accepts, and every generated results table matches
benchmarks/results/*.json (docs/generate.py)."""
import importlib.util
import inspect
import re
import shlex
import shutil

import click
import pytest
from click.testing import CliRunner

from conftest import REPO
from edgekd.cli import cli

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
# `edgekd` as a command word: at a line's start, after a space, `-m`, `&&`, `;`, `|`, a quote or
# `(`; its arguments run to the end of that shell command.
COMMAND = re.compile(r"(?:^|[\s;&|'\"(])edgekd[ \t]+([^;&|'\"\n)#]*)")


def shown_commands(text: str) -> list[str]:
    """The edgekd commands of a Markdown page: in shell code blocks and in inline code."""
    lines = []
    for lang, body in FENCE.findall(text):
        if lang not in ("python", "py", "json", "yaml"):
            lines += body.replace("\\\n", " ").splitlines()  # a backslash continues the line
    prose = FENCE.sub("", text)
    lines += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose) if span.startswith("edgekd ")]
    found = []
    for line in lines:
        line = re.sub(r"(^|\s)#.*", "", line)  # a shell comment
        found += ["edgekd " + m.group(1).strip() for m in COMMAND.finditer(line)]
    return found


def all_shown() -> list[tuple[str, str]]:
    return [(path.relative_to(REPO).as_posix(), command)
            for path in DOCS for command in shown_commands(path.read_text())]


def help_options(path: list[str]) -> set[str]:
    """The option names `edgekd PATH --help` lists (lines of its Options section that start
    with a dash at two spaces' indent)."""
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    options = result.output.split("\nOptions:\n", 1)[1].split("\nCommands:\n")[0]
    names = set()
    for line in options.splitlines():
        m = re.match(r"  (-\S.*?)(?:\s{2,}|$)", line)
        if m:
            names |= set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", m.group(1)))
    return names


def resolve(tokens: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """(the command, its path of subcommand names, the remaining words) of `edgekd TOKENS`."""
    command, path, rest = cli, [], list(tokens)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"no command 'edgekd {' '.join([*path, name])}'"
        command, path = sub, [*path, name]
    return command, path, rest


def test_the_installed_command_is_this_click_group():
    """The `edgekd` script pyproject.toml installs is main(), which runs the group tested here."""
    pyproject = (REPO / "pyproject.toml").read_text()  # tomllib is 3.11+, edgekd supports 3.10
    assert re.search(r'^edgekd = "edgekd\.cli:main"$', pyproject, re.M)
    import edgekd.cli
    assert "cli.main(" in inspect.getsource(edgekd.cli.main)


def test_the_pages_show_the_commands_a_newcomer_needs():
    readme = [c for page, c in all_shown() if page == "README.md"]
    for needed in ('edgekd run --time-budget 3 --out runs/demo --device nucleo-l4r5zi',
                   "edgekd distill teacher.pt --student mobilenet", "edgekd export --tflite",
                   "edgekd probe model.tflite --device raspberry-pi-5 --host pi@raspberrypi.local"):
        assert needed in readme, (needed, readme)
    text = (REPO / "README.md").read_text()
    ci_command = next(line for line in (REPO / ".ci/run").read_text().splitlines() if line.startswith("python3 -m pytest"))
    assert f"`{ci_command}`" in text  # the test command .ci/run runs
    assert len(text.splitlines()) <= 150, "the README is read in five minutes: move reference to docs/"
    pages = {page for page, _ in all_shown()}
    assert {"docs/distill.md", "docs/export.md", "docs/devices.md", "docs/gpus.md"} <= pages


def test_help_parsing_finds_every_option():
    """The --help parser below sees exactly the options click declares, on every command."""
    def walk(command, path):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        yield command, path

    for command, path in walk(cli, []):
        declared = {name for p in command.params if isinstance(p, click.Option) for name in p.opts + p.secondary_opts}
        assert help_options(path) == declared | {"-h", "--help"}, path


@pytest.mark.parametrize("page, command", all_shown())
def test_every_shown_command_parses(page, command):
    tokens = [t.strip("[]") for t in shlex.split(command)][1:]  # after "edgekd"
    tokens = [t for t in tokens if t and t not in ("...", "…")]  # placeholders for "and so on"
    _, path, rest = resolve(tokens)
    accepted = help_options(path)
    used = {t.split("=", 1)[0] for t in rest if re.match(r"--?[A-Za-z]", t)}
    assert used <= accepted, f"{page}: `{command}`: `edgekd {' '.join(path)}` has no {sorted(used - accepted)}"


def test_an_unknown_option_or_command_is_caught():
    """The check can fail."""
    _, path, rest = resolve(["export", "--tflite", "--tiflite"])
    assert "--tiflite" not in help_options(path)
    with pytest.raises(AssertionError, match="no command 'edgekd exprt'"):
        resolve(["exprt", "--tflite"])
    assert shown_commands("```bash\nedgekd probe m.tflite --device host  # --nope\n```\n") == \
        ["edgekd probe m.tflite --device host"]


# ---------------------------------------------------------------- generated tables


def generator():
    spec = importlib.util.spec_from_file_location("docs_generate", REPO / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_tables_match_the_results_files():
    stale = generator().stale(REPO)
    assert stale == [], f"out of date (run python docs/generate.py): {stale}"


def copy_of_the_docs(tmp_path):
    for page in DOCS:
        (tmp_path / page.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, tmp_path / page.relative_to(REPO))
    shutil.copytree(REPO / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    shutil.copytree(REPO / "edgekd" / "assets", tmp_path / "edgekd" / "assets",
                    ignore=shutil.ignore_patterns("*.pt2"))
    return tmp_path


def test_a_changed_number_or_a_new_results_file_is_caught(tmp_path):
    """The check can fail, and the generator rewrites only what lies between the markers."""
    gen, root = generator(), copy_of_the_docs(tmp_path)
    readme = root / "README.md"
    text = readme.read_text()
    block = re.search(r"<!-- generated: headline -->\n(.*?)<!-- end generated -->", text, re.S)
    changed = text[:block.start(1)] + re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), block.group(1), count=1) \
        + text[block.end(1):] + "\nHand-written 12.34 % after the block.\n"
    readme.write_text(changed)
    assert gen.stale(root) == ["README.md: headline"]
    now, generated = gen.regenerate(root)[readme]
    assert generated == text + "\nHand-written 12.34 % after the block.\n"  # prose kept, table restored

    (root / "benchmarks" / "results" / "large_inputs_cpu.json").write_text(
        '{"date": "2026-12-05", "command": "python benchmarks/large_inputs.py", "rows": []}')
    readme.write_text(text)
    assert gen.stale(root) == ["docs/benchmarks.md: other-results"]
    page = gen.regenerate(root)[root / "docs" / "benchmarks.md"][1]
    assert "`python benchmarks/large_inputs.py`, 2026-12-05" in page


LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", text), re.M)}


def test_every_relative_link_and_anchor_resolves():
    """A link to a file of the repository or to a heading that a rename or a cut left dangling."""
    broken = []
    for page in DOCS:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_link_check_can_fail():
    text = "# Large inputs: 224 x 224, 1,000 classes\n## Why `auto`?\n"
    assert anchors(text) == {"large-inputs-224-x-224-1000-classes", "why-auto"}
    assert LINK.findall("see [a](docs/x.md#y) and [b](https://e.org)") == ["docs/x.md#y", "https://e.org"]
