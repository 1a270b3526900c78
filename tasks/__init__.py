"""Prefect tasks: small typed steps. Importing a module here touches no disk, server or API."""
