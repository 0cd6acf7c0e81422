"""Protocol files: YAML with line numbers, the pydantic schema, units, the safe expression language,
which instrument a protocol names and what it accepts, and `validate` (checks against the instrument's
envelope, the constraints' feasibility, the candidate table). Every problem is located at FILE:LINE:COL."""

from closedloop.controller.protocol.model import Protocol, load_protocol, parse_protocol_text
from closedloop.controller.protocol.validate import ValidationReport, validate_protocol
from closedloop.controller.protocol.yaml_source import ProtocolError, ProtocolProblem

__all__ = [
    "Protocol",
    "ProtocolError",
    "ProtocolProblem",
    "ValidationReport",
    "load_protocol",
    "parse_protocol_text",
    "validate_protocol",
]
