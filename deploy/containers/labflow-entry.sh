#!/bin/sh
# `labflow …` in the image: the CLI of services/cli.py from the copied sources (PYTHONPATH=/opt/labflow)
exec /opt/venv/bin/python -m services.cli "$@"
