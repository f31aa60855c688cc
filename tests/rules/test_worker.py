"""End to end: a real worker process syncing a real mailbox applies the rules, and picks up
a rule changed by another process (this one) while it runs with its matcher cached."""

from __future__ import annotations

import signal

from sqlalchemy import select

from inbox_service.conversations.models import Conversation, Message
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import transaction
from inbox_service.rules import service
from inbox_service.rules.schemas import PriorityRuleIn
from tests.conftest import CommittedDb
from tests.ingest.conftest import Mailbox
from tests.ingest.support import imap_inbox
from tests.rules.support import NOW, mail
from tests.support.worker import Child, wait_for, worker_process


async def conversation_when_stored(db: CommittedDb, child: Child, message_id: str) -> Conversation:
    found: Conversation | None = None

    async def stored() -> bool:
        nonlocal found
        async with transaction(db.sessionmaker) as session:
            found = await session.scalar(
                select(Conversation)
                .join(Message, Message.conversation_id == Conversation.id)
                .where(Message.message_id == message_id)
            )
        return found is not None

    await wait_for(child, stored, f"{message_id} stored", within=60)
    assert found is not None
    return found


async def test_worker_applies_rules_and_follows_a_change_made_elsewhere(
    committed_db: CommittedDb, mailbox: Mailbox
) -> None:
    key = generate_key()
    await imap_inbox(committed_db.sessionmaker, mailbox, CredentialCipher(key))
    async with transaction(committed_db.sessionmaker) as session:
        outage = await service.create_rule(
            session, PriorityRuleIn(name="o", keywords=["outage"], priority="urgent"), now=NOW
        )
    env = {
        "INBOX_SECRET_KEY": key,
        "WORKER_ID": "rules-worker",
        "IMAP_RESCAN_SECONDS": "0.3",
        "IMAP_TIMEOUT_SECONDS": "5",
        "INGEST_PARSE_PROCESSES": "0",
        "LOG_LEVEL": "WARNING",
    }
    async with worker_process(committed_db.url, env) as child:
        raw, first = mail(subject="Big OUTAGE", body="nothing works")
        mailbox.deliver(raw)
        stored = await conversation_when_stored(committed_db, child, first)
        assert stored.priority == "urgent"
        assert stored.priority_source == {
            "type": "rule", "rule_id": outage.id, "keyword": "outage", "user_id": None
        }  # fmt: skip
        # The worker's matcher is cached now; a rule added here must reach it.
        async with transaction(committed_db.sessionmaker) as session:
            refund = await service.create_rule(
                session, PriorityRuleIn(name="r", keywords=["Rückerstattung"], priority="high",
                                        tags=["billing"]), now=NOW,
            )  # fmt: skip
        raw, second = mail(subject="RÜCKERSTATTUNG bitte", body="danke")
        mailbox.deliver(raw)
        stored = await conversation_when_stored(committed_db, child, second)
        assert stored.priority == "high"
        assert stored.priority_source is not None
        assert stored.priority_source["rule_id"] == refund.id
        child.process.send_signal(signal.SIGTERM)
        assert await child.exit_code(within=30) == 0
