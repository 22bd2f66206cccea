"""The 2.0.1 device model: components and variables, each a view of the shared domain.

A variable is backed by a domain setting (``setting``: the same value 1.6 shows as a
configuration key), a fixed value, or a live reading (``read``: battery SoC, temperatures).
Feature blocks contribute their controller's variables as ``VARIABLES`` lists; this module
collects them into one table (GetVariables, SetVariables and GetBaseReport only consult it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bess_gateway.link import Context

Mutability = Literal["ReadOnly", "ReadWrite", "WriteOnly"]
DataType = Literal["string", "decimal", "integer", "dateTime", "boolean", "OptionList",
                   "SequenceList", "MemberList"]


@dataclass(frozen=True, slots=True)
class Variable:
    component: str
    name: str
    setting: str | None = None  # the domain setting it translates
    fixed: str | None = None  # a constant value
    read: Callable[[Context], str | None] | None = None  # a live value (None: not available)
    evse: int | None = None
    connector: int | None = None
    component_instance: str | None = None
    instance: str | None = None
    mutability: Mutability = "ReadWrite"
    data_type: DataType = "string"
    unit: str | None = None
    values_list: str | None = None  # OptionList/MemberList/SequenceList: allowed values
    max_limit: float | None = None
    min_limit: float | None = None
    reboot_required: bool = False

    @property
    def key(self) -> tuple[str, str | None, int | None, int | None, str, str | None]:
        return (self.component, self.component_instance, self.evse, self.connector, self.name,
                self.instance)
