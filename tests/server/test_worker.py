"""The worker's waits, at the level of greenlets: ending a wait must not outlive it."""

from __future__ import annotations

import time

import gevent
import gevent.event

from webhook.server.worker import Wait, end_wait


def test_a_wait_ended_just_as_its_client_answered_does_not_hit_what_the_connection_does_next() -> (
    None
):
    """A connection woken by its client (the rest of a body arrived) and evicted in the same turn
    of the event loop: the eviction must land in the wait or nowhere, never later in the request
    (there it would escape as an error: a 5xx for a client that did nothing wrong)."""
    arrived = gevent.event.Event()
    outcome: list[str] = []

    def connection(wait: Wait) -> None:
        with wait.timeout:
            arrived.wait()  # the client's bytes
            wait.active = False  # what leaving the wait does
        try:
            gevent.sleep(0.05)  # the request, being answered
            outcome.append("answered")
        except gevent.Timeout:
            outcome.append("hit mid-request")

    wait = Wait(time.monotonic(), gevent.Timeout(10, False), in_request=True)
    greenlet = gevent.spawn(connection, wait)
    gevent.sleep(0)  # the connection is in its wait
    arrived.set()  # wakes it at the next turn of the loop ...
    end_wait(greenlet, wait)  # ... and so does the eviction, just after
    greenlet.join(timeout=2)
    assert outcome == ["answered"]


def test_a_wait_ended_while_it_lasts_ends_as_if_timed_out() -> None:
    outcome: list[str] = []

    def connection(wait: Wait) -> None:
        with wait.timeout:
            gevent.sleep(5)  # a client that sends nothing
            outcome.append("client answered")
        outcome.append("wait ended")

    wait = Wait(time.monotonic(), gevent.Timeout(10, False), in_request=False)
    greenlet = gevent.spawn(connection, wait)
    gevent.sleep(0)
    started = time.monotonic()
    end_wait(greenlet, wait)
    greenlet.join(timeout=2)
    assert outcome == ["wait ended"]
    assert time.monotonic() - started < 1
