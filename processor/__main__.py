"""`python -m processor` is the same as the `access-eval` console script."""

from processor.launch import main

raise SystemExit(main())
