"""Mutation testing of the core modules with mutmut, each module against its own test files.

    python scripts/mutation.py [MODULE ...] [--jobs N] [--keep] [--check-equivalents]

`tests/mutation.toml` names the modules, their test files and the mutants judged equivalent (each with a
one-line reason). Every module runs in its own folder under build/mutation/ with a mutmut config written
there, so its mutants meet only its own tests. The report (build/mutation/report.md, also printed) counts
mutants per module as killed, timed out, equivalent and surviving, and lists every survivor with its diff.
The exit status is 1 when any survivor is left unexplained, so the command can fail.

The mutants are generated first and matched against the equivalence entries that name the mutated text itself;
those are not run, since an equivalent mutant survives by definition and costs its whole covering test set.
Entries naming only an original line or a dropped text are applied to survivors after the run.
`--check-equivalents` runs every mutant, and the report then lists every entry whose mutant a test now kills.

mutmut runs its workers from a fork server (process_isolation = "forkserver"): forking straight from a
process that has run torch code hangs the children in torch's thread pool.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "tests" / "mutation.toml"
WORK = ROOT / "build" / "mutation"
PACKAGE = "manifold_robustness"
# What the tests read besides src/ and tests/; linked into each module's folder and copied by mutmut.
ALSO = ["config", "reference", "workflow", "Snakefile", "profiles", "scripts"]
# mutmut's names for its exit codes; a timeout means the mutant made the tests hang: it is detected.
KILLED = {"killed", "timeout", "caught by type check"}


@dataclass
class Equivalent:
    """A mutant judged equivalent: matched by function and by text of the original and mutated lines."""
    module: str
    function: str
    reason: str
    original: str = ""  # in the original line(s)
    mutant: str | list[str] = ""  # in the mutated line(s); a list: any of these texts
    dropped: str = ""  # in the original line(s) and gone from the mutated ones
    matched: int = 0

    @property
    def precise(self) -> bool:
        """Names the mutated text itself: then it can be trusted before the run. An entry naming only the original
        line, or a text dropped from it, also matches a mutant that replaces the whole line (say by None), which a
        test may kill; it is applied to survivors only, so such a mutant is still run."""
        return bool(self.mutant)

    def matches(self, module: str, function: str, removed: str, added: str) -> bool:
        texts = self.mutant if isinstance(self.mutant, list) else [self.mutant]
        return (self.module == module and self.function in (function, "*")
                and self.original in removed and any(t in added for t in texts)
                and (not self.dropped or (self.dropped in removed and self.dropped not in added)))


@dataclass
class Mutant:
    name: str
    module: str
    function: str
    status: str
    removed: str = ""
    added: str = ""
    equivalent: Equivalent | None = None
    diff: str = field(default="", repr=False)

    @property
    def unexplained(self) -> bool:
        return self.status not in KILLED and self.equivalent is None


def read_spec(path: Path = SPEC) -> tuple[dict[str, list[str]], list[Equivalent]]:
    spec = tomllib.loads(path.read_text())
    modules = {name: list(tests) for name, tests in spec["modules"].items()}
    equivalents = []
    for i, entry in enumerate(spec.get("equivalent", [])):
        texts = {"original", "mutant", "dropped"}
        unknown = set(entry) - {"module", "function", "reason"} - texts
        if unknown or not {"module", "function", "reason"} <= set(entry) or not any(entry.get(t) for t in texts):
            raise SystemExit(f"{path}: equivalent entry {i + 1} needs module, function, reason and an original, "
                             f"mutant or dropped text (unknown keys: {sorted(unknown)})")
        if entry["module"] not in modules:
            raise SystemExit(f"{path}: equivalent entry {i + 1} names module {entry['module']!r}, "
                             f"which is not under [modules]")
        equivalents.append(Equivalent(**entry))
    return modules, equivalents


def mutmut_config(module: str, tests: list[str]) -> str:
    """The project's pyproject.toml (pytest settings included) with a [tool.mutmut] table for one module."""
    table = "\n".join([
        "[tool.mutmut]",
        'source_paths = ["src"]',
        f'only_mutate = ["src/{PACKAGE}/{module}.py"]',
        f"also_copy = {json.dumps([p for p in ALSO if (ROOT / p).exists()])}",  # a JSON string list is TOML
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
        'process_isolation = "forkserver"',
        "use_git_change_detection = false",
    ])
    return (ROOT / "pyproject.toml").read_text() + "\n" + table + "\n"


def prepare(module: str, tests: list[str], keep: bool) -> Path:
    folder = WORK / module
    if folder.exists() and not keep:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ["src", "tests", *ALSO]:
        link = folder / name
        if (ROOT / name).exists() and not link.is_symlink():
            link.symlink_to(ROOT / name)
    (folder / "pyproject.toml").write_text(mutmut_config(module, tests))
    return folder


def run_mutmut(folder: Path, jobs: int, names: list[str] = ()) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MANIFOLD_ROBUSTNESS_TEST_THREADS="1")
    with open(folder / "mutmut.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *names],
                              cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = (folder / "mutmut.log").read_text(errors="replace").replace("\r", "\n").splitlines()[-25:]
        raise SystemExit(f"mutmut failed in {folder} (exit {done.returncode}); its log ends:\n" + "\n".join(tail))


# mutmut's own first step of `mutmut run` (3.8.1), without the test run that follows it: the mutants are
# written under mutants/ so that their diffs can be matched against the equivalence entries before any is run.
GENERATE = """
import os
from mutmut.__main__ import create_mutants, store_lines_covered_by_tests
from mutmut.mutation.trampoline import set_mutant_under_test
from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths
set_mutant_under_test("mutant_generation")
os.makedirs("mutants", exist_ok=True)
copy_src_dir()
copy_also_copy_files()
setup_source_paths()
store_lines_covered_by_tests()
create_mutants({jobs})
"""


def generate_mutants(folder: Path, jobs: int) -> None:
    done = subprocess.run([sys.executable, "-c", GENERATE.format(jobs=jobs)], cwd=folder, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"generating the mutants in {folder} failed:\n{done.stdout}{done.stderr}")


def function_of(name: str) -> str:
    """`pkg.module.x_f__mutmut_3` -> `f`; `pkg.module.xǁCǁm__mutmut_3` -> `C.m`."""
    local = name.rpartition(".")[2].rsplit("__mutmut_", 1)[0]
    if local.startswith("xǁ"):
        return ".".join(local[2:].split("ǁ"))
    return local[2:] if local.startswith("x_") else local


def changed_lines(diff: str) -> tuple[str, str]:
    body = [line for line in diff.splitlines() if not line.startswith(("---", "+++"))]
    removed = "\n".join(line[1:].strip() for line in body if line.startswith("-"))
    added = "\n".join(line[1:].strip() for line in body if line.startswith("+"))
    return removed, added


def collect(folder: Path, module: str) -> list[Mutant]:
    """Every mutant of one module with its status, and the diff of each one not killed (mutmut's own API)."""
    from mutmut import configuration
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    old = Path.cwd()
    os.chdir(folder)
    configuration.reset_config()
    try:
        mutants = []
        for path in walk_mutatable_files():
            data = SourceFileMutationData(path=path)
            data.load()
            for name, code in sorted(data.exit_code_by_key.items(), key=lambda kv: natural_key(kv[0])):
                mutant = Mutant(name, module, function_of(name), status_by_exit_code[code])
                if mutant.status not in KILLED:
                    mutant.diff = get_diff_for_mutant(name, path=path)
                    mutant.removed, mutant.added = changed_lines(mutant.diff)
                mutants.append(mutant)
        return mutants
    finally:
        os.chdir(old)
        configuration.reset_config()


def natural_key(name: str) -> tuple[str, int]:
    head, _, number = name.rpartition("__mutmut_")
    return head, int(number) if number.isdigit() else 0


def classify(mutants: list[Mutant], equivalents: list[Equivalent]) -> None:
    for mutant in mutants:
        if mutant.status in KILLED:
            continue
        for entry in equivalents:
            if entry.matches(mutant.module, mutant.function, mutant.removed, mutant.added):
                mutant.equivalent = entry
                entry.matched += 1
                break


def report(results: dict[str, list[Mutant]], seconds: dict[str, float], equivalents: list[Equivalent]) -> str:
    lines = ["# Mutation testing", "",
             "Each module's mutants run against its own test files (`tests/mutation.toml`). Equivalent mutants "
             "that an entry names by their mutation are matched before the run and not run "
             "(`--check-equivalents` runs them too).", "",
             "| module | mutants | killed | timed out | equivalent | surviving | of which no test reached | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    for module, mutants in results.items():
        survivors = [m for m in mutants if m.unexplained]
        lines.append(
            f"| {module} | {len(mutants)} | {sum(m.status == 'killed' for m in mutants)} "
            f"| {sum(m.status == 'timeout' for m in mutants)} | {sum(m.equivalent is not None for m in mutants)} "
            f"| {len(survivors)} | {sum(m.status == 'no tests' for m in survivors)} "
            f"| {seconds[module] / 60:.1f} |".replace("| nan |", "| not timed |"))
    for module, mutants in results.items():
        survivors = [m for m in mutants if m.unexplained]
        if survivors:
            lines += ["", f"## Surviving in {module}", ""]
            for m in survivors:
                lines += [f"- `{m.name}` ({m.status}) in `{m.function}`:", "", "  ```diff"]
                lines += ["  " + line for line in m.diff.strip().splitlines()
                          if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))]
                lines += ["  ```"]
    stale = [e for e in equivalents if e.module in results and e.matched == 0]
    if stale:
        lines += ["", "## Equivalence entries that matched no surviving mutant", "",
                  "Their mutant is now killed or gone; remove them from `tests/mutation.toml`.", ""]
        lines += [f"- {e.module}.{e.function}: original `{e.original}`, mutant `{e.mutant}`" for e in stale]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    modules, equivalents = read_spec()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"default: all of {', '.join(modules)}")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true",
                        help="reuse build/mutation/<module>: only functions whose code changed are mutated again")
    parser.add_argument("--survivors", action="store_true",
                        help="with --keep: test again only the unexplained survivors of the last run (after new tests)")
    parser.add_argument("--check-equivalents", action="store_true",
                        help="run the mutants the equivalence entries explain too, to find entries a test now kills")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report what build/mutation/<module> holds (after an interrupted run)")
    args = parser.parse_args(argv)
    if args.survivors and not args.keep:
        parser.error("--survivors needs --keep: it retests the survivors of the kept run")
    unknown = [m for m in args.modules if m not in modules]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {list(modules)} (tests/mutation.toml)")
    results, seconds = {}, {}
    for module in args.modules or list(modules):
        if args.report_only:
            if (WORK / module / "mutants").exists():
                results[module], seconds[module] = collect(WORK / module, module), float("nan")
            continue
        start = time.monotonic()
        print(f"mutating {module} against {', '.join(modules[module])} ...", flush=True)
        folder = prepare(module, modules[module], args.keep)
        if args.survivors:  # the unexplained ones: equivalent mutants would only survive again
            if not (folder / "mutants").exists():
                raise SystemExit(f"{folder} holds no earlier run of {module}; run it once without --survivors")
            kept = collect(folder, module)
            classify(kept, equivalents)
            names = [m.name for m in kept if m.unexplained]
            # mutmut maps functions to the tests that call them once, in its stats file, and keeps that map: a
            # new test must be traced again before it can be chosen for the survivors it was written for.
            (folder / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        elif args.check_equivalents:
            names = None  # every mutant without a result, as mutmut chooses
        else:  # every mutant without a result that no equivalence entry explains
            generate_mutants(folder, args.jobs)
            pending = [m for m in collect(folder, module) if m.status == "not checked"]
            classify(pending, [e for e in equivalents if e.precise])
            names = [m.name for m in pending if m.equivalent is None]
        if names is None:
            run_mutmut(folder, args.jobs)
        elif names:
            run_mutmut(folder, args.jobs, names)
        results[module] = collect(folder, module)
        seconds[module] = time.monotonic() - start
    for entry in equivalents:
        entry.matched = 0
    classify([m for ms in results.values() for m in ms], equivalents)
    text = report(results, seconds, equivalents)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "report.md").write_text(text)
    print(text)
    print(f"report: {WORK / 'report.md'}")
    unexplained = sum(m.unexplained for ms in results.values() for m in ms)
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
