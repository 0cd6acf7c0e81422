"""Fault injection for emulated serial instruments.

A spec such as `no_reply:0.1,garbage:0.05,reset:once@5` lists faults, each with a probability per
eligible command or `once@N` (at the first eligible command from the N-th command on, counting from 1).

| kind        | eligible commands  | what the device does                                               |
|-------------|--------------------|--------------------------------------------------------------------|
| no_reply    | those with a reply | stays silent                                                       |
| slow_reply  | those with a reply | answers after `slow_delay_s` (longer than the client's timeout)   |
| garbage     | those with a reply | answers with random bytes that are neither ASCII nor UTF-8        |
| partial     | those with a reply | answers the first half of the reply, without the terminator       |
| late_reply  | those with a reply | holds the reply back; it goes out ahead of the next command's     |
|             |                    | output (late by one reply, never more)                             |
| reset       | any                | resets mid-command: forgets its setpoints, answers nothing         |
| unplug      | any                | the port goes away for `unplug_s` (TCP: connection closed and      |
|             |                    | refused; pty: silence, as a pty cannot come back at the same path) |
| syst_err    | error queries      | `SYST:ERR?` answers `-222,"Data out of range"`                     |
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from difflib import get_close_matches

REPLY_FAULTS = ("no_reply", "slow_reply", "garbage", "partial", "late_reply")
COMMAND_FAULTS = ("reset", "unplug")
FAULT_KINDS = (*REPLY_FAULTS, *COMMAND_FAULTS, "syst_err")
SYST_ERR_REPLY = b'-222,"Data out of range"'

_ONCE = re.compile(r"^once@(\d+)$")


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed; the message shows the offending item and the grammar."""


@dataclass(frozen=True)
class FaultRule:
    kind: str
    probability: float = 0.0
    once_at: int | None = None  # 1-based command number; None for a probabilistic rule


@dataclass(frozen=True)
class Emission:
    """What the device puts on the wire after one command."""

    data: bytes = b""
    delay_s: float = 0.0
    unplug_s: float | None = None  # the port goes away for this long


_GRAMMAR = "write KIND:PROBABILITY or KIND:once@N, comma-separated, e.g. 'no_reply:0.1,reset:once@5'"


def parse_fault_spec(text: str) -> tuple[FaultRule, ...]:
    """Rules from a spec string; "" means no faults."""
    rules = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kind, sep, how = (s.strip() for s in item.partition(":"))
        if kind not in FAULT_KINDS:
            close = get_close_matches(kind, FAULT_KINDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise FaultSpecError(f"unknown fault {kind!r} in {item!r}; {hint}known: {', '.join(FAULT_KINDS)}")
        if not sep:
            raise FaultSpecError(f"fault {item!r} has no rate; {_GRAMMAR}")
        once = _ONCE.match(how)
        if once:
            n = int(once.group(1))
            if n < 1:
                raise FaultSpecError(f"{item!r}: commands are counted from 1, so N must be >= 1")
            rules.append(FaultRule(kind, once_at=n))
            continue
        try:
            p = float(how)
        except ValueError:
            raise FaultSpecError(f"{item!r}: {how!r} is neither a probability nor once@N; {_GRAMMAR}") from None
        if not 0.0 <= p <= 1.0:
            raise FaultSpecError(f"{item!r}: a probability must be between 0 and 1, got {p}")
        rules.append(FaultRule(kind, probability=p))
    return tuple(rules)


def is_error_query(line: str) -> bool:
    head = line.strip().upper()
    return head.startswith(("SYST:ERR", "SYSTEM:ERROR")) and head.endswith("?")


class FaultInjector:
    """Decides, command by command, which fault (if any) strikes, and shapes the bytes accordingly."""

    def __init__(
        self, rules: tuple[FaultRule, ...] | str = (), *, seed: int = 0, slow_delay_s: float = 1.0, unplug_s: float = 1.0
    ) -> None:
        self.rules = parse_fault_spec(rules) if isinstance(rules, str) else tuple(rules)
        self.slow_delay_s = slow_delay_s
        self.unplug_s = unplug_s
        self._rng = random.Random(seed)
        self._fired: set[int] = set()  # once@N rules already used, by index
        self.injected: list[tuple[int, str]] = []  # (command number, kind): what actually happened

    def _draw(self, kinds: tuple[str, ...], number: int) -> str | None:
        chosen = None
        for i, rule in enumerate(self.rules):
            if rule.kind not in kinds:
                continue
            if rule.once_at is not None:
                hit = i not in self._fired and number >= rule.once_at
                if hit:
                    self._fired.add(i)
            else:
                # One draw per probabilistic rule and command keeps a seeded run reproducible.
                hit = self._rng.random() < rule.probability
            if hit and chosen is None:
                chosen = rule.kind
        if chosen is not None:
            self.injected.append((number, chosen))
        return chosen

    def before_command(self, number: int, line: str) -> str | None:
        """'reset' or 'unplug' if the command is lost to one of them, else None."""
        return self._draw(COMMAND_FAULTS, number)

    def on_reply(self, number: int, line: str, reply: bytes, terminator: bytes) -> tuple[Emission, bool]:
        """The emission for a command that has a reply, and whether the reply is held back (late_reply)."""
        kinds = (*REPLY_FAULTS, "syst_err") if is_error_query(line) else REPLY_FAULTS
        kind = self._draw(kinds, number)
        if kind == "syst_err":
            return Emission(SYST_ERR_REPLY + terminator), False
        if kind == "no_reply":
            return Emission(), False
        if kind == "slow_reply":
            return Emission(reply + terminator, delay_s=self.slow_delay_s), False
        if kind == "garbage":
            # 0xFF never occurs in UTF-8 and bytes >= 0x80 are not ASCII: undecodable whatever the encoding.
            noise = bytes([0xFF]) + bytes(self._rng.randrange(0x80, 0x100) for _ in range(self._rng.randrange(6, 16)))
            return Emission(noise + terminator), False
        if kind == "partial":
            return Emission(reply[: max(1, len(reply) // 2)]), False
        if kind == "late_reply":
            return Emission(), True
        return Emission(reply + terminator), False
