"""The test kit: what the tests (`tests/`) and the load tests (`load_tests/`) both need.

A fresh database and topic set on the real servers (`infrastructure`), LabFlow services as real
processes and the waits around them (`processes`), canonical results and the checks made on what
the worker stored (`results`).

Why a package of its own, at the top level: the load tests and the chaos suite are tools, not tests,
and must not reach into the test suite (`tests/` is pytest's tree: conftest, fixtures, test files);
nor is any of this a LabFlow service, so it does not belong in `services/` either — no service may
import it (it creates and drops databases and roles with the owner's rights), and a deployment has
no use for it. It is listed in pyproject.toml's packages so the editable install (`make install`)
makes it importable from anywhere, like `services`; `make lint` holds it to the same ruff and strict
mypy rules. Processes start through the project's one launcher, `services.stack.process.launch`.
"""
