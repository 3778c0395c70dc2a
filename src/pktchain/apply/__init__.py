"""`pktchain apply`: a declarative file of chaining resources (and optionally
the lab they run on) brought to a running node idempotently.

`pktchain.apply.spec` reads and checks the file (every mistake at once, with
its line); `pktchain.apply.plan` compares it with what the API holds and
orders the changes; `pktchain.apply.cli` shows and applies them. The file
format is documented in ``docs/cli.md``.
"""
