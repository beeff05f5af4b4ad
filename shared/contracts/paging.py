"""Paging parameters every list call shares."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT_MAX = 2_147_483_647

Limit = Annotated[int, Field(ge=1, le=100, description="at most this many items (1–100)")]
Offset = Annotated[int, Field(ge=0, le=INT_MAX, description="skip this many items")]
