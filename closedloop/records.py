"""The records every layer speaks: one point of a search space, as a planner proposes it and an
instrument receives it. Drivers and planners never import each other; they share these."""

from __future__ import annotations

# A setting: a number in the parameter's unit, or a label (a solvent, a substrate).
Value = float | int | str
# One point of the search space, parameter name -> value. Units are the protocol's (planners) or the
# instrument envelope's (drivers); `controller.protocol` converts between the two.
Conditions = dict[str, Value]
