"""Configuration: the settings schema (``keel.config.settings``: every section, its
defaults in ``defaults.toml``, the layers and where each value came from, ``migrate`` for
configs recorded by an older keel). Never: touches a store, a server or the network."""
