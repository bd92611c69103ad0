"""The judge: decides, outside the sandbox, which of the teacher's tests a submission passed.

The sandboxed process (minigen.tools.grade_runner) runs the teacher's tests with the student's code in
it, so anything it reports could be forged by that code (patching pytest, the reporter, or writing
fake lines). A test therefore counts as passed only when BOTH hold:

1. the process reported the test passed, every phase of it (necessary: a real failure is a failure);
2. its witnesses match the reference's: for every function the assignment marked (each
   `# BEGIN SOLUTION` block's enclosing function, minigen.tools.assign.all_solutions), what the student's
   version returned and left in its arguments during that test (first CALLS calls, and how many
   calls) agrees with what the reference solution's did in the same test, run in the same sandbox.

Forging (2) needs the reference's results for the teacher's inputs, that is, computing them: the
work the test asks for. A test with no verdict (no record, a malformed record, a timeout) is 0.
The witnesses work for any topic of minigen.tools.assign.TOPIC_TESTS: they come from the markers.
"""
from __future__ import annotations

import math
import os

from minigen.errors import MinigenError

__all__ = ["CALLS", "SAMPLES", "witness_orders", "reference_witnesses", "mismatch"]

CALLS = 20          # calls per function and test whose results are compared (training loops call thousands)
SAMPLES = 16        # values per array, evenly spaced, besides its mean, mean |x| and root mean square
RTOL = 1e-3         # an honest solution's rounding differs from the reference's; a wrong one differs by far more


def witness_orders(topics: list[str], root: str | None = None) -> dict:
    """The runner's "witness" orders: the marked functions of these topics as [file, qualified name]."""
    from minigen.tools.assign import all_solutions
    functions = sorted({(s.path.replace(os.sep, "/"), s.where) for s in all_solutions(root) if s.topic in topics})
    return {"functions": [list(f) for f in functions], "calls": CALLS, "samples": SAMPLES}


def reference_witnesses(expected: dict, records: list[dict], output: str) -> dict:
    """{test id: witnessed functions} from the reference solution's run, which must pass every test and
    call a marked function in each (else the judge could not tell a forged pass from a real one)."""
    passed = {r["nodeid"] for r in records if r.get("kind") == "test" and r.get("when") == "call"
              and r.get("outcome") == "passed"}
    failed = {r["nodeid"] for r in records if r.get("kind") == "test" and r.get("outcome") == "failed"}
    witnesses = {r["nodeid"]: r["functions"] for r in records if r.get("kind") == "witness"}
    for topic, nodes in expected.items():
        for node in nodes:
            if node not in passed or node in failed:
                raise MinigenError(f"the reference solution fails {node} where it is graded, so grading would be "
                                   f"unfair: fix the reference or the test first (its last output: {output})")
            if not witnesses.get(node):
                raise MinigenError(f"{node} calls none of topic {topic}'s marked functions, so the judge cannot "
                                   f"check its result outside the sandbox; test a marked function there")
    return {node: witnesses[node] for nodes in expected.values() for node in nodes}


def mismatch(reference: dict, student) -> str | None:
    """Why a test's witnesses differ from the reference's (None: they agree). student is untrusted data."""
    if not isinstance(student, dict):
        return "no results of the marked functions came back"
    for function, ref in reference.items():
        got = student.get(function)
        if got is None:
            return f"{function} never returned here (the reference's did, {ref['count']} times)"
        try:
            if got["count"] != ref["count"]:
                return f"{function} was called {got['count']} times, the reference's {ref['count']}"
            for number, (ref_call, call) in enumerate(zip(ref["calls"], got["calls"]), start=1):
                for where, ref_value in ref_call.items():
                    if not _close(ref_value, call.get(where)):
                        return f"{function}: call {number}, {where} differs from the reference's"
            if len(got["calls"]) < len(ref["calls"]):
                return f"{function}: fewer results came back than calls"
        except (TypeError, KeyError, AttributeError, ValueError):
            return f"{function}: its results did not come back in the expected form"
    return None


def _close(reference, value) -> bool:
    """[shape, numbers] against [shape, numbers], or the exception name of a call that raised."""
    if value is None:
        return False
    if isinstance(reference, str) or isinstance(value, str):
        return reference == value
    shape, numbers = value
    ref_shape, ref_numbers = reference
    if list(shape) != ref_shape or len(numbers) != len(ref_numbers):
        return False
    scale = abs(ref_numbers[2]) if len(ref_numbers) > 2 else 0.0        # the reference's root mean square
    for a, b in zip(numbers, ref_numbers):
        a, b = float(a), float(b)
        if math.isnan(b) or math.isinf(b):
            if not (a == b or (math.isnan(a) and math.isnan(b))):
                return False
        elif not abs(a - b) <= RTOL * (abs(b) + scale) + 1e-12:
            return False
    return True
