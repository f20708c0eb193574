"""What the ledger says each tenant and key spent before this process began, counted into their
budgets at start: a restart does not hand out a day's budget again."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime

import router_core
from service.config import Config
from service.identity import KeyRing
from service.store import StoreThread


async def seed_budgets(router: router_core.Router, store: StoreThread, config: Config, keys: KeyRing | None) -> int:
    """Seeds every budget the config and the keys define; returns how many."""
    now = datetime.now(UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    rows = await store.call(store.store.spent_by_owner, day_start.timestamp(), month_start.timestamp())
    by_tenant: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    seeded = 0
    for tenant, key_id, *spent in rows:
        by_tenant[tenant] = [a + b for a, b in zip(by_tenant[tenant], spent, strict=True)]
        record = None if keys is None or not key_id else keys.get(key_id)
        if record is not None and any(b is not None for b in (record.daily_usd, record.monthly_usd, record.total_usd)):
            owner = (f"key/{key_id}", record.daily_usd, record.monthly_usd, record.total_usd)
            router.seed_budget(owner, (spent[0], spent[1], spent[2]), now_s=time.time())
            seeded += 1
    for tenant, settings in config.tenants.items():
        if settings.budget is not None and tenant in by_tenant:
            day, month, total = by_tenant[tenant]
            router.seed_budget((f"tenant/{tenant}", *settings.budget.bounds()), (day, month, total))
            seeded += 1
    return seeded
