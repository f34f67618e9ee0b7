"""Open-data exporter (SPEC §7): SI-DEP files, daily publication, served over HTTP."""
