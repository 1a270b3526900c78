"""``python -m keel.cli``: the keel command (torchrun launches DDP ranks this way)."""

from keel.cli.app import main

main()
