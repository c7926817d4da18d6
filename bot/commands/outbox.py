"""`outbox`: list pending signals and dead letters, retry dead letters now, purge."""

from __future__ import annotations

import argparse
import os
import uuid
from datetime import UTC, datetime
from functools import partial
from time import monotonic, time
from typing import Any

from sqlalchemy.engine import make_url

from bot.commands.holds import database_exists
from bot.commands.send import cut_note, deliver_once
from bot.core.brixo import Answer, BrixoClient
from bot.core.db import Database
from bot.core.delivery import RetryPolicy
from bot.core.logs import one_line
from bot.core.outbox import AWAITING_COMMENT, DEAD, DELIVERED, PENDING, Claimed, Outbox
from bot.core.settings import Settings


def run_outbox(args: argparse.Namespace, settings: Settings) -> int:
    """Run `outbox list`, `retry` or `purge` as `args` say (none creates a SQLite file)."""
    url = make_url(settings.database_url)
    if not database_exists(settings):
        return no_outbox(args, f"no database at {os.path.abspath(url.database or '')}")
    database = Database(settings.database_url, pool_size=1)
    if not database.migrate(time(), create=False):  # a database no relay has used: untouched
        database.dispose()
        where = os.path.abspath(url.database or "") if url.get_backend_name() == "sqlite" else url
        return no_outbox(args, f"no relay tables in the database at {where}")
    outbox = Outbox(database)
    action = args.action or "list"
    if action == "retry":
        return retry(outbox, settings, sorted(set(args.ids)))
    if action == "purge":
        count = outbox.purge(dead=args.dead)
        print(f"{count} signal(s) deleted")
        return 0
    dead_only = getattr(args, "dead", False)
    states = (DEAD,) if dead_only else (PENDING, AWAITING_COMMENT, DEAD)
    limit = getattr(args, "limit", 100)
    entries = outbox.entries(states, limit=limit)
    if not entries:
        print("no dead letters" if dead_only else "outbox empty: nothing pending, no dead letters")
        return 0
    counts = outbox.counts(time())
    left = sum(counts[state] for state in states) - len(entries)
    print("ID\tSTATE\tWORKSPACE\tTARGET\tVALUE\tATTEMPTS\tCREATED\tLAST ERROR")
    for entry in entries:
        created = datetime.fromtimestamp(entry.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = (entry.workspace, f"{entry.target.kind}:{entry.target.id}", entry.value)
        workspace, target, value = (one_line(f, column=True) for f in fields)
        print(
            f"{entry.id}\t{entry.state}\t{workspace}\t{target}\t{value}\t{entry.attempts}"
            f"\t{created}\t{one_line(entry.last_error or '-', column=True)}"
        )
    if left > 0:
        more = "" if getattr(args, "dead", False) else " (dead letters alone: --dead)"
        print(f"… and {left} more not shown: --limit {limit + left} shows them{more}")
    return 0


def no_outbox(args: argparse.Namespace, where: str) -> int:
    """Where there's no outbox: one line saying so, one per ID asked for (then exit 1)."""
    print(f"{where} (DATABASE_URL): nothing pending, no dead letters")
    act_ids = sorted(set(getattr(args, "ids", None) or ()))
    for act_id in act_ids:
        print(f"no dead letter with ID {act_id}")
    return 1 if act_ids else 0


def retry(outbox: Outbox, settings: Settings, act_ids: list[int]) -> int:
    """Put dead letters back in line and send each once now, under this process's lease.

    With no dead letter at all, there is nothing to send: no key needed to say so.
    """
    if not outbox.counts(time())[DEAD]:
        ok = report_not_dead(outbox, act_ids)
        if not act_ids:
            print("no dead letters to retry")
        return 0 if ok else 1
    settings.require("brixo_api_key")
    assert settings.brixo_api_key
    client = BrixoClient(settings.brixo_api_key, settings.brixo_api_url, pool_size=1)
    lease = 3 * sum(client.timeout)  # room for an act's two sends (a 413), and to spare
    owner = f"cli-{uuid.uuid4().hex[:12]}"
    taken = outbox.take_dead(owner, lease, time(), act_ids)
    renewed = monotonic()
    ok = report_not_dead(outbox, [i for i in act_ids if i not in {act.id for act in taken}])
    if not taken and not act_ids:
        print("no dead letters to retry")
    policy = RetryPolicy.from_settings(settings)
    held = 0.0
    try:
        while taken:
            held = outbox.held_until()
            if held > time():
                print(
                    f"sends held {held - time():.0f} s more (Brixo answered 429 with Retry-After):"
                    f" {len(taken)} act(s) back in line for the relay",
                    flush=True,
                )
                ok = False
                break
            act = taken.pop(0)  # not released if this fails: its lease lapses, as a relay's would
            if monotonic() - renewed > lease / 4:  # a renewal rewrites every act still taken
                outbox.renew(owner, lease, time())
                renewed = monotonic()
            answer, row = deliver_once(client, policy, act, partial(outbox.settle_one, owner))
            if answer.retry_after:  # every deliverer holds, this command too
                outbox.hold(time() + answer.retry_after)
            ok = ok and row is not None and row["state"] == DELIVERED
            print(f"act {act.id}: {retried(act, answer, row)}", flush=True)
    finally:
        outbox.release(owner, [act.id for act in taken], held if held > time() else None)
        client.close()
    return 0 if ok else 1


def report_not_dead(outbox: Outbox, act_ids: list[int]) -> bool:
    """One line for each of these IDs, which name no dead letter; True when there are none."""
    if not act_ids:
        return True
    states = outbox.states_of(act_ids, time())
    for act_id in act_ids:
        state, leased = states.get(act_id, ("", False))
        why = "a running relay is delivering it" if leased else f"it is {state}" if state else ""
        print(f"no dead letter with ID {act_id}" + (f": {why}" if why else ""))
    return False


def retried(act: Claimed, answer: Answer, row: dict[str, Any] | None) -> str:
    """What became of a retried act, after its `answer` and outcome `row`."""
    if row is None:
        return f"taken by a running relay meanwhile (the lease here lapsed): {answer.describe()}"
    if row["state"] == DELIVERED:
        return f"delivered: {answer.describe()}{cut_note(act, row)}"
    if row["state"] == DEAD:
        return f"dead: {row['last_error']}{cut_note(act, row)}"
    return f"pending, for the relay to retry: {row['last_error']}{cut_note(act, row)}"
