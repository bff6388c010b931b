"""``python -m langchain_seed``: the command line."""

from langchain_seed.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
