"""Demos: complete, self-checking walks through what pktchain does on real hosts."""
