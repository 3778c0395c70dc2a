"""`python -m pktchain` is the same as the `pktchain` command."""

from pktchain.cli import main

raise SystemExit(main())
