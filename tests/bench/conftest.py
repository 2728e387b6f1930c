"""
Fixtures for the load generator's tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support.bench import Conversation, Conversations

from sockplay.bench.load import Load
from sockplay.bench.loads import makeLoad
from sockplay.bench.plan import Plan


@pytest.fixture
def conversations() -> Iterator[Conversations]:
    """
    Make L{Conversation}s (by default with the load the plan describes)
    and close them after the test.
    """
    made: list[Conversation] = []

    def make(plan: Plan, load: Callable[[Plan], Load] = makeLoad) -> Conversation:
        conversation = Conversation(plan, load)
        made.append(conversation)
        return conversation

    yield make
    for conversation in made:
        conversation.close()
