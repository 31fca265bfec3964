"""`python -m processor` is the same as the `access-eval` console script."""

from processor.launch import main

# Guarded: `report --readers` spawns reader processes, which import the main module again.
if __name__ == "__main__":
    raise SystemExit(main())
