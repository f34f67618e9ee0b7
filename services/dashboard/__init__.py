"""Dashboard service: query API and web page for epidemiologists (SPEC §1, §9)."""
