"""Prefect flows: bodies only wire named tasks."""
