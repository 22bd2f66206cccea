"""`python -m bess_gateway ...` is the `bess-gateway` command."""

from bess_gateway.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
