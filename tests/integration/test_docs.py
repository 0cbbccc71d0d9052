"""The test plan and the docs name tests that exist, and the plan maps every integration test:
docs/pgwire_test_plan.md cannot drift from the suite without a failing test."""
import ast
import glob
import os
import re

from pgwp import REPO

DOCS = ["pgwire_test_plan.md", "clients.md", "scale-out.md", "deployment.md"]
PLAN = os.path.join(REPO, "docs", "pgwire_test_plan.md")
INTEGRATION = os.path.join(REPO, "tests", "integration")


def integration_tests():
    """{file name: {test function names}} of tests/integration."""
    out = {}
    for path in glob.glob(os.path.join(INTEGRATION, "test_*.py")):
        tree = ast.parse(open(path).read())
        out[os.path.basename(path)] = {n.name for n in tree.body
                                       if isinstance(n, ast.FunctionDef)
                                       and n.name.startswith("test_")}
    return out


def unit_tests(name):
    path = os.path.join(REPO, "tests", "unit", name)
    if not os.path.exists(path):
        return set()
    return set(re.findall(r"cmocka_unit_test\w*\(\s*(\w+)", open(path).read()))


def references(text):
    return re.findall(r"`((?:unit/|fuzz/)?[\w.]+\.(?:py|c)(?:::\w+)?|bench/run\.sh case \w+)`",
                      text)


def test_every_referenced_test_exists():
    tests = integration_tests()
    bench = open(os.path.join(REPO, "bench", "run.sh")).read()
    missing = []
    for doc in DOCS:
        text = open(os.path.join(REPO, "docs", doc)).read()
        for ref in references(text):
            file, _, name = ref.partition("::")
            if ref.startswith("bench/run.sh case "):
                case = ref.rsplit(" ", 1)[1]
                ok = f"has_case {case}" in bench or f"during {case}" in bench or \
                    (case == "f" and "has_case a" in bench)
            elif file.startswith("unit/"):
                ok = name in unit_tests(file[5:])
            elif file.startswith("fuzz/"):
                ok = os.path.exists(os.path.join(REPO, "tests", file))
            elif file in tests:
                ok = not name or name in tests[file]
            else:
                ok = not name and os.path.exists(os.path.join(REPO, file))
            if not ok:
                missing.append(f"{doc}: {ref}")
    assert not missing, "docs name tests that do not exist:\n" + "\n".join(missing)


def test_plan_maps_every_integration_test():
    text = open(PLAN).read()
    mapped = {(f, n) for f, _, n in (r.partition("::") for r in references(text)) if n}
    unmapped = [f"{f}::{n}" for f, names in sorted(integration_tests().items())
                for n in sorted(names) if (f, n) not in mapped]
    assert not unmapped, ("integration tests missing from docs/pgwire_test_plan.md (add each "
                          "to the case it covers):\n" + "\n".join(unmapped))
