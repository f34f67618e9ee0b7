"""Contact-tracing handoff (SPEC §6): `cases.v1` → the tracing platform's signed webhook."""
