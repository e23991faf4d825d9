"""Per-identity budgets: statements per rolling minute, rows per rolling hour (no I/O).

The runaway agent loop (a model re-asking the same query hundreds of times) is stopped here,
before a statement is sent. Budgets belong to the identity served, not to an MCP session, so
a client cannot reset them by reconnecting.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import attrs

__all__ = ["Budget", "BudgetSpent"]

ROWS_RULE = "mcp.budget.rows-per-hour"
STATEMENTS_RULE = "mcp.budget.statements-per-minute"


@attrs.frozen(kw_only=True)
class BudgetSpent:
    """Why a call is refused: which budget (its rule id), its size, when to come back."""

    rule_id: str
    limit: int
    window: str
    retry_after_s: int

    def message(self) -> str:
        what = "statements" if self.rule_id == STATEMENTS_RULE else "result rows"
        return (f"denied by budget `{self.rule_id}`: this identity has used its {self.limit}"
                f" {what} per {self.window}. The limit is set by the server's operator and"
                f" cannot be changed from here; retry in about {self.retry_after_s} s, or"
                " ask for fewer rows (LIMIT, aggregates)")


class Budget:
    """Sliding-window counters for one identity."""

    def __init__(self, statements_per_minute: int, rows_per_hour: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.statements_per_minute = statements_per_minute
        self.rows_per_hour = rows_per_hour
        self._clock = clock
        self._statements: deque[float] = deque()
        self._rows: deque[tuple[float, int]] = deque()
        self._rows_total = 0

    def _expire(self, now: float) -> None:
        while self._statements and self._statements[0] <= now - 60.0:
            self._statements.popleft()
        while self._rows and self._rows[0][0] <= now - 3600.0:
            self._rows_total -= self._rows.popleft()[1]

    def check(self, statements: int = 1, *, rows: bool = True) -> BudgetSpent | None:
        """None when ``statements`` more may run now (and, with ``rows``, rows may still be
        returned); otherwise which budget is spent."""
        now = self._clock()
        self._expire(now)
        if len(self._statements) + statements > self.statements_per_minute:
            oldest = self._statements[0] if self._statements else now
            return BudgetSpent(rule_id=STATEMENTS_RULE, limit=self.statements_per_minute,
                               window="minute",
                               retry_after_s=max(1, math.ceil(oldest + 60.0 - now)))
        if rows and self._rows_total >= self.rows_per_hour:
            oldest = self._rows[0][0] if self._rows else now
            return BudgetSpent(rule_id=ROWS_RULE, limit=self.rows_per_hour, window="hour",
                               retry_after_s=max(1, math.ceil(oldest + 3600.0 - now)))
        return None

    def rows_left(self) -> int:
        self._expire(self._clock())
        return max(0, self.rows_per_hour - self._rows_total)

    def charge_statement(self) -> None:
        self._statements.append(self._clock())

    def charge_rows(self, n: int) -> None:
        if n > 0:
            self._rows.append((self._clock(), n))
            self._rows_total += n
