"""``python -m querygpt`` is the same as the ``querygpt-backend`` script."""

from .cli import main

raise SystemExit(main())
