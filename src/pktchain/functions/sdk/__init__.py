"""The function SDK: the contract a network function follows, its configuration schema,
and the one driver that runs a function (:class:`Driver`).

This is the public import path for writing a function
(``from pktchain.functions.sdk import Function, Packet, forward, drop``); see
docs/functions.md and ``examples/functions/``.
"""

from pktchain.functions.sdk.contract import (
    BUILTIN_FUNCTIONS,
    VNET,
    ZERO_VNET,
    Deadlines,
    Emitted,
    FlowLease,
    FlowLeases,
    Function,
    FunctionLoadError,
    NoConfig,
    Packet,
    Result,
    TableSize,
    Verdict,
    drop,
    forward,
    frames_out,
    function_class,
    make_function,
    observed_flow,
    punt,
    reply,
)
from pktchain.functions.sdk.driver import FUNCTION_ERROR, Driver
from pktchain.functions.sdk.schema import ConfigError, FieldError

__all__ = [
    "BUILTIN_FUNCTIONS",
    "FUNCTION_ERROR",
    "VNET",
    "ZERO_VNET",
    "ConfigError",
    "Deadlines",
    "Driver",
    "Emitted",
    "FieldError",
    "FlowLease",
    "FlowLeases",
    "Function",
    "FunctionLoadError",
    "NoConfig",
    "Packet",
    "Result",
    "TableSize",
    "Verdict",
    "drop",
    "forward",
    "frames_out",
    "function_class",
    "make_function",
    "observed_flow",
    "punt",
    "reply",
]
