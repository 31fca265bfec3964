"""`python -m processor` is the same as the `access-eval` console script."""

from processor.cli import main

raise SystemExit(main())
