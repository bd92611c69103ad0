"""Collects the gradcheck cases that each test module declares in a `CASES` dict (op name -> case),
so one test can check that every registered op has one."""
import importlib


def all_cases() -> dict:
    cases = {}
    for module in ("tests.engine.test_tensor_ops", "tests.engine.test_nn_ops"):
        try:
            cases.update(importlib.import_module(module).CASES)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    return cases
