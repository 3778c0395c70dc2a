"""Service function chaining: networking-sfc's resources, rules and dataplane.

`pktchain.sfc.model` is the model (`SfcModel` and the resources it holds);
`pktchain.sfc.errors` the errors it raises. This package module imports
nothing, so that commands which do not chain start fast.
"""
