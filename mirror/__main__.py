"""``python -m mirror`` is the ``registry-mirror`` command."""

from mirror.cli import main

raise SystemExit(main())
